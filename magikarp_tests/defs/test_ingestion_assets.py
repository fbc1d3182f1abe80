"""The ingestion assets run in-process on the real sample, through the real local IO manager."""

import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource

ASSETS = [ingestion.universe_constituents, ingestion.raw_ohlcv, ingestion.benchmark_prices]


@pytest.fixture
def env(tmp_path):
    resources = {
        "market_data": MarketDataResource(provider="sample"),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(tmp_path / "store")),
    }
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([ingestion.universe_constituents], resources=resources, instance=instance)
    return resources, instance, tmp_path / "store"


def _run(env, partition=None, start=None, end=None, raise_on_error=True):
    resources, instance, _ = env
    tags = range_tags(start, end) if start else None
    return dg.materialize(
        ASSETS,
        resources=resources,
        instance=instance,
        partition_key=partition,
        tags=tags,
        selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE, ingestion.BENCHMARK_PRICES],
        raise_on_error=raise_on_error,
    )


def _checks(result):
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_one_session_is_ingested_with_checks_and_numeric_metadata(env):
    result = _run(env, partition="2016-06-15")
    assert result.success
    store = env[2]
    bars = pd.read_parquet(store / "raw_ohlcv" / "2016-06-15.parquet")
    assert bars["date"].unique().tolist() == [pd.Timestamp("2016-06-15")]
    assert bars["ticker"].nunique() == len(bars) > 480
    checks = _checks(result)
    assert checks[ingestion.CHECK_COVERAGE].passed and checks[ingestion.CHECK_FRESHNESS].passed
    meta = result.asset_materializations_for_node("raw_ohlcv")[0].metadata
    assert isinstance(meta["coverage"].value, float) and meta["coverage"].value >= 0.995
    from_sources = {k: v.value for k, v in meta.items() if k.startswith("rows_from_")}
    assert sum(from_sources.values()) == len(bars) and from_sources["rows_from_sample_iex"] > 480
    qqq = pd.read_parquet(store / "benchmark_prices" / "2016-06-15.parquet").set_index("ticker")
    assert set(qqq.index) == {"QQQ", "SPY"} and qqq.loc["QQQ", "close"] > 100


def test_rematerialising_a_partition_is_byte_identical_and_leaves_no_temp_files(env):
    store = env[2]
    _run(env, partition="2016-05-19")
    first = (store / "raw_ohlcv" / "2016-05-19.parquet").read_bytes()
    _run(env, partition="2016-05-19")
    assert (store / "raw_ohlcv" / "2016-05-19.parquet").read_bytes() == first
    leftovers = [p for p in store.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []


def test_month_backfill_in_one_run_uses_backup_and_quarantines(env):
    # March 2015: DHR, O and ES have no primary rows from the 9th to the 20th; the Yahoo backup fills them.
    result = _run(env, start="2015-03-02", end="2015-03-31")
    assert result.success
    store = env[2]
    files = sorted(p.stem for p in (store / "raw_ohlcv").glob("*.parquet"))
    assert len(files) == 22 and files[0] == "2015-03-02" and files[-1] == "2015-03-31"
    day = pd.read_parquet(store / "raw_ohlcv" / "2015-03-12.parquet").set_index("ticker")
    assert day.loc[["DHR", "O", "ES"], "source"].tolist() == ["sample:yahoo"] * 3
    assert _checks(result)[ingestion.CHECK_COVERAGE].passed


def test_quarantined_rows_are_named_in_the_check(env):
    result = _run(env, partition="2016-05-19")  # LNT's close of 17.87 is below that day's low
    check = _checks(result)[ingestion.CHECK_QUARANTINE]
    assert not check.passed
    assert "LNT" in check.metadata["rows"].value and "low_above_open_or_close" in check.metadata["rows"].value
    q = pd.read_parquet(env[2] / "ohlcv_quarantine" / "2016-05-19.parquet")
    assert q[["ticker", "rule", "source"]].values.tolist() == [
        ["LNT", "low_above_open_or_close", "sample:iex"]
    ]
    # the backup delivered a sane LNT bar for the day instead
    bars = pd.read_parquet(env[2] / "raw_ohlcv" / "2016-05-19.parquet").set_index("ticker")
    assert bars.loc["LNT", "source"] == "sample:yahoo"


def test_low_coverage_fails_the_blocking_check_and_names_the_missing(env):
    # The universe expects three tickers that no source has: 3/503 missing is below 99.5%.
    path = env[2] / "universe_constituents.parquet"
    universe = pd.read_parquet(path)
    extra = pd.DataFrame(
        {
            "ticker": ["ZZA", "ZZB", "ZZC"],
            "name": "x",
            "sector": "x",
            "weight": 0.0,
            "listed_from": pd.Timestamp("2013-02-08"),
        }
    )
    pd.concat([universe, extra]).to_parquet(path)
    result = _run(env, partition="2016-06-15", raise_on_error=False)
    check = _checks(result)[ingestion.CHECK_COVERAGE]
    assert not check.passed and check.metadata["worst_day"].value == "2016-06-15"
    assert "ZZA, ZZB, ZZC" in check.metadata["missing_on_worst_day"].value


def test_weekend_and_holiday_partitions_do_not_exist():
    from magikarp_assets.defs.partitions import trading_day_partitions

    keys = set(trading_day_partitions.get_partition_keys())
    assert "2016-06-15" in keys
    assert "2016-06-18" not in keys and "2016-07-04" not in keys


def test_a_name_that_left_the_universe_is_still_priced_while_in_the_slot_map(env):
    from magikarp_assets.defs.universe import assets as universe_assets

    resources, instance, store = env
    dg.materialize(
        [ingestion.universe_constituents, universe_assets.slot_map],
        resources=resources,
        instance=instance,
        partition_key="2016-06-14",
        selection=[universe_assets.SLOT_MAP],
    )
    path = store / "universe_constituents.parquet"
    universe = pd.read_parquet(path)
    universe[universe["ticker"] != "AAPL"].to_parquet(path)  # AAPL leaves the index before 2016-06-15

    result = _run(env, partition="2016-06-15")
    bars = pd.read_parquet(store / "raw_ohlcv" / "2016-06-15.parquet")
    assert "AAPL" in set(bars["ticker"]), "a name the portfolio may hold must stay priced"
    coverage = _checks(result)[ingestion.CHECK_COVERAGE]
    assert coverage.passed and "AAPL" not in coverage.metadata["missing_on_worst_day"].value
