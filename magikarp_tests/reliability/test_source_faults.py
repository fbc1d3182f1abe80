"""Source faults on the real raw_ohlcv asset, against local fakes of Yahoo (primary) and Polygon (backup):
retries, fallback for the missing tickers, the coverage check's verdict, a total outage that fails the
day with a critical alert while earlier partitions stay byte-identical, and recovery."""

import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.core.notify import read_eml
from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support.fake_market_api import (
    FakeMarketAPI,
    FakeResponse,
    polygon_grouped_json,
    yahoo_chart_json,
    yahoo_chart_not_found,
)
from magikarp_tests.support.world import alert_run_failure

POLYGON_KEY = "pk-test-Q7zR2m9XvL4t"
TICKERS = ["AAPL", "MSFT", "XOM", "JNJ", "BRK-B", "KO"]
DAY, PREVIOUS, NEXT = "2016-06-15", "2016-06-14", "2016-06-16"
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"
ASSETS = [ingestion.universe_constituents, ingestion.raw_ohlcv]


def chart(ticker: str) -> str:
    return f"/v8/finance/chart/{ticker}"


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """Real bars of the sample (IEX file) served by the fake vendors."""
    from magikarp_assets.core.market_data.sample import SampleSource

    start, end = pd.Timestamp("2016-06-13").date(), pd.Timestamp("2016-06-17").date()
    return SampleSource("iex").fetch_ohlcv(TICKERS, start, end)


@pytest.fixture
def world(tmp_path, bars):
    """A small universe stored on disk, the fakes running, and the live resource pointed at them."""
    with FakeMarketAPI() as api:
        io_manager = PartitionedParquetIOManager(backend="local", root=str(tmp_path / "store"))
        instance = dg.DagsterInstance.ephemeral()
        dg.materialize(
            ASSETS,
            resources={"market_data": MarketDataResource(), "io_manager": io_manager},
            instance=instance,
            selection=[ingestion.UNIVERSE],
        )
        path = tmp_path / "store" / "universe_constituents.parquet"
        universe = pd.read_parquet(path)
        universe[universe["ticker"].isin(TICKERS)].reset_index(drop=True).to_parquet(path)
        live = MarketDataResource(
            provider="live",
            yahoo_base_url=api.url,
            polygon_api_key=POLYGON_KEY,
            polygon_base_url=api.url,
            max_retries=2,
        )
        resources = {
            "market_data": live,
            "io_manager": io_manager,
            "notifier": NotifierResource(outbox_dir=str(tmp_path / "outbox")),
        }
        yield api, resources, instance, tmp_path


def serve_healthy(api: FakeMarketAPI, bars: pd.DataFrame) -> None:
    for ticker, rows in bars.groupby("ticker"):
        api.script(chart(ticker), FakeResponse(json=yahoo_chart_json(ticker, rows)))
    for day, rows in bars.groupby("date"):
        api.script(GROUPED.format(f"{day:%Y-%m-%d}"), FakeResponse(json=polygon_grouped_json(rows)))


def vendors_down(api: FakeMarketAPI, bars: pd.DataFrame, yahoo: bool = True, polygon: bool = True) -> None:
    """Every route of a vendor answers 5xx (routes scripted earlier are replaced, not shadowed)."""
    if yahoo:
        for ticker in TICKERS:
            api.script(chart(ticker), FakeResponse(503))
    if polygon:
        for day in bars["date"].unique():
            api.script(GROUPED.format(f"{pd.Timestamp(day):%Y-%m-%d}"), FakeResponse(500))


def ingest(world, day: str):
    _, resources, instance, _ = world
    return dg.materialize(
        ASSETS,
        resources=resources,
        instance=instance,
        partition_key=day,
        selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE],
        raise_on_error=False,
    )


def stored(world, day: str) -> pd.DataFrame:
    return pd.read_parquet(world[3] / "store" / "raw_ohlcv" / f"{day}.parquet").set_index("ticker")


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_throttling_5xx_drops_and_partial_answers_are_retried_then_filled_from_the_backup(world, bars):
    api = world[0]
    serve_healthy(api, bars)
    healthy = {t: FakeResponse(json=yahoo_chart_json(t, bars[bars.ticker == t])) for t in TICKERS}
    api.script(chart("AAPL"), FakeResponse(429, headers={"Retry-After": "0"}), healthy["AAPL"])
    api.script(chart("MSFT"), FakeResponse(503), FakeResponse(502), healthy["MSFT"])
    api.script(chart("XOM"), FakeResponse(drop=True), healthy["XOM"])
    api.script(chart("JNJ"), FakeResponse(500))  # down for good: the backup delivers it
    api.script(chart("BRK-B"), yahoo_chart_not_found())  # Yahoo has no such symbol today
    partial = bars[(bars.ticker == "KO") & (bars.date < DAY)]  # today's bar missing from the answer
    api.script(chart("KO"), FakeResponse(json=yahoo_chart_json("KO", partial)))

    result = ingest(world, DAY)
    assert result.success
    day = stored(world, DAY)
    assert sorted(day.index) == sorted(TICKERS)
    assert day["source"].to_dict() == {
        "AAPL": "yfinance", "MSFT": "yfinance", "XOM": "yfinance",
        "JNJ": "polygon", "BRK-B": "polygon", "KO": "polygon",
    }  # fmt: skip
    expected = bars[bars.date == DAY].set_index("ticker")
    pd.testing.assert_series_equal(day["close"].sort_index(), expected["close"].sort_index())
    assert len(api.requests_to(chart("AAPL"))) == 2 and len(api.requests_to(chart("MSFT"))) == 3
    assert len(api.requests_to(chart("XOM"))) == 2 and len(api.requests_to(chart("JNJ"))) == 3
    # The backup is asked only for the pairs still missing, i.e. only the sessions it must fill.
    assert {r.path for r in api.requests if r.path.startswith("/v2/")} == {
        GROUPED.format(PREVIOUS),
        GROUPED.format(DAY),
    }
    found = checks(result)
    assert found[ingestion.CHECK_COVERAGE].passed and found[ingestion.CHECK_FRESHNESS].passed
    meta = result.asset_materializations_for_node("raw_ohlcv")[0].metadata
    assert meta["rows_from_yfinance"].value == 3 and meta["rows_from_polygon"].value == 3
    primary_errors = meta["source_errors"].value["yfinance"]  # what the primary failed to deliver, and why
    assert primary_errors.startswith("2 item(s) not delivered")
    assert "JNJ: yfinance: GET /v8/finance/chart/JNJ (ticker JNJ) failed after 3 attempts" in primary_errors
    assert "BRK-B: Yahoo chart error: No data found" in primary_errors


def test_when_the_backup_cannot_fill_the_gap_the_coverage_check_blocks_and_names_it(world, bars):
    api = world[0]
    serve_healthy(api, bars)
    api.script(chart("JNJ"), FakeResponse(503))
    vendors_down(api, bars, yahoo=False)
    result = ingest(world, DAY)
    coverage = checks(result)[ingestion.CHECK_COVERAGE]
    assert not coverage.passed
    assert coverage.metadata["missing_on_worst_day"].value == "JNJ"
    assert coverage.metadata["coverage_min_day"].value == pytest.approx(5 / 6)
    assert "JNJ" not in set(stored(world, DAY).index)


@pytest.mark.slow
def test_total_outage_fails_the_day_alerts_keeps_earlier_days_and_recovers(world, bars):
    api, resources, instance, root = world
    serve_healthy(api, bars)
    assert ingest(world, DAY).success
    before = {p.relative_to(root): p.read_bytes() for p in (root / "store").rglob("*.parquet")}

    vendors_down(api, bars)
    failed = ingest(world, NEXT)
    assert not failed.success
    after = {p.relative_to(root): p.read_bytes() for p in (root / "store").rglob("*.parquet")}
    assert after == before  # the earlier partition is byte-identical; nothing of the failed day exists
    assert not (root / "store" / "raw_ohlcv" / f"{NEXT}.parquet").exists()

    alert_run_failure(failed, instance, resources["notifier"])
    (mail_path,) = (root / "outbox").glob("*.eml")
    mail = read_eml(mail_path)
    assert mail["Subject"].strip() == f"[TMagikarp CRITICAL] Run failed: __ephemeral_asset_job__ for {NEXT}"
    body = mail.get_body(("plain",)).get_content()
    assert "step raw_ohlcv" in body and "no market data for" in body and "from any source" in body
    assert "yfinance" in body and "polygon" in body and POLYGON_KEY not in body

    serve_healthy(api, bars)  # the vendors are back: the same partition now succeeds
    recovered = ingest(world, NEXT)
    assert recovered.success and checks(recovered)[ingestion.CHECK_COVERAGE].passed
    assert sorted(stored(world, NEXT).index) == sorted(TICKERS)
    assert (root / "store" / "raw_ohlcv" / f"{DAY}.parquet").read_bytes() == before[
        (root / "store" / "raw_ohlcv" / f"{DAY}.parquet").relative_to(root)
    ]


def test_malformed_json_from_the_primary_is_named_and_the_backup_delivers(world, bars):
    api = world[0]
    serve_healthy(api, bars)
    api.script(
        chart("MSFT"),
        FakeResponse(body="<html>Too many requests</html>", headers={"Content-Type": "text/html"}),
    )
    result = ingest(world, DAY)
    assert result.success and checks(result)[ingestion.CHECK_COVERAGE].passed
    assert set(stored(world, DAY)["source"]) == {"polygon"}  # a malformed answer voids the primary's batch
    meta = result.asset_materializations_for_node("raw_ohlcv")[0].metadata
    assert meta["source_errors"].value["yfinance"] == (
        "yfinance: GET /v8/finance/chart/MSFT (ticker MSFT) answered status 200 with a body that is not JSON"
    )
