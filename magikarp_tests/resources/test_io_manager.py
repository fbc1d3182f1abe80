"""The partitioned IO manager writes one file per partition, splits single-run backfills by date, and
loads lookback windows in partition order, locally and on a real (moto) S3 endpoint."""

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.resources.io_manager import (
    CorruptPartitionError,
    MissingPartitionError,
    PartitionedParquetIOManager,
    PartitionSplitError,
    default_data_root,
)

SAMPLE = (
    Path(__file__).resolve().parents[2] / "magikarp_assets" / "data" / "sample" / "sp500_prices_5yr.parquet"
)
TICKERS = ["AAPL", "JPM", "MSFT"]
# Weekdays of January 2017: 2017-01-02 and 2017-01-16 are NYSE holidays, so those partitions hold no rows.
WEEKDAYS = dg.TimeWindowPartitionsDefinition(
    start="2017-01-02", end="2017-02-01", fmt="%Y-%m-%d", cron_schedule="0 0 * * 1-5", timezone="UTC"
)
RANGE_START, RANGE_END = "2017-01-09", "2017-01-20"


def sample_prices(start: str, end: str) -> pd.DataFrame:
    """Real bars of three tickers with start <= date < end, sorted by date and ticker."""
    frame = pd.read_parquet(
        SAMPLE,
        filters=[
            ("ticker", "in", TICKERS),
            ("date", ">=", pd.Timestamp(start)),
            ("date", "<", pd.Timestamp(end)),
        ],
    )
    return frame.sort_values(["date", "ticker"]).reset_index(drop=True)


class PriceConfig(dg.Config):
    scale: float = 1.0
    extra_day: str = ""  # a date outside the run, to provoke a split error


@dg.asset(partitions_def=WEEKDAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily_prices(context: dg.AssetExecutionContext, config: PriceConfig) -> pd.DataFrame:
    window = context.partition_time_window
    frame = sample_prices(window.start.strftime("%Y-%m-%d"), window.end.strftime("%Y-%m-%d"))
    frame["close"] *= config.scale
    if config.extra_day:
        frame.loc[0, "date"] = pd.Timestamp(config.extra_day)
    return frame


@dg.asset(
    partitions_def=WEEKDAYS,
    ins={"daily_prices": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-4))},
)
def price_window(daily_prices: pd.DataFrame) -> pd.DataFrame:
    return daily_prices


@dg.asset(partitions_def=WEEKDAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily_tensor(context: dg.AssetExecutionContext) -> dict[str, dict[str, np.ndarray]]:
    return {
        key: {"features": np.full((4, 2), i, dtype=np.float32), "mask": np.array([True, False, True, True])}
        for i, key in enumerate(context.partition_keys)
    }


@dg.asset(
    partitions_def=WEEKDAYS,
    ins={"daily_tensor": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))},
)
def tensor_window(daily_tensor: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {"stacked": np.stack([arrays["features"] for arrays in daily_tensor.values()])}


@dg.asset(key_prefix=["universe"])
def constituents() -> pd.DataFrame:
    return pd.DataFrame({"ticker": TICKERS, "weight": [0.5, 0.25, 0.25]})


ASSETS = [daily_prices, price_window, daily_tensor, tensor_window, constituents]
RANGE_TAGS = range_tags(RANGE_START, RANGE_END)


def run(
    io_manager: PartitionedParquetIOManager, selection: list[str], **kwargs: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, selection=selection, resources={"io_manager": io_manager}, **kwargs)


def caused_by(error: BaseException, kind: type[BaseException]) -> BaseException:
    """The first exception of type ``kind`` in the chain dagster wrapped around the IO manager's error."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, kind):
            return current
        current = current.__cause__
    raise AssertionError(f"{kind.__name__} not in the cause chain of {error!r}")


@pytest.fixture
def local(tmp_path: Path) -> PartitionedParquetIOManager:
    return PartitionedParquetIOManager(root=str(tmp_path))


def test_single_partition_file_content_and_metadata(
    local: PartitionedParquetIOManager, tmp_path: Path
) -> None:
    result = run(local, ["daily_prices"], partition_key="2017-01-05")
    path = tmp_path / "daily_prices" / "2017-01-05.parquet"
    assert [p.name for p in (tmp_path / "daily_prices").iterdir()] == ["2017-01-05.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(path), sample_prices("2017-01-05", "2017-01-06"))
    [materialization] = result.asset_materializations_for_node("daily_prices")
    assert materialization.partition == "2017-01-05"
    metadata = materialization.metadata
    assert metadata["uri"].value == path.as_uri()
    assert metadata["rows"].value == 3
    assert metadata["bytes"].value == path.stat().st_size


def test_single_run_backfill_splits_by_date_and_writes_empty_holidays(
    local: PartitionedParquetIOManager, tmp_path: Path
) -> None:
    result = run(local, ["daily_prices"], tags=RANGE_TAGS)
    expected_keys = WEEKDAYS.get_partition_keys_in_range(dg.PartitionKeyRange(RANGE_START, RANGE_END))
    assert len(expected_keys) == 10
    assert sorted(p.stem for p in (tmp_path / "daily_prices").iterdir()) == expected_keys
    assert {m.partition for m in result.asset_materializations_for_node("daily_prices")} == set(expected_keys)
    full = sample_prices(RANGE_START, "2017-01-21")
    for key in expected_keys:
        stored = pd.read_parquet(tmp_path / "daily_prices" / f"{key}.parquet")
        expected = full[full["date"] == key].reset_index(drop=True)
        pd.testing.assert_frame_equal(stored, expected)
    holiday = pd.read_parquet(tmp_path / "daily_prices" / "2017-01-16.parquet")
    assert holiday.empty and holiday.dtypes.to_dict() == full.dtypes.to_dict()


def test_lookback_window_concatenates_partitions_in_order(local: PartitionedParquetIOManager) -> None:
    run(local, ["daily_prices"], tags=RANGE_TAGS)
    result = run(local, ["price_window"], partition_key="2017-01-20")
    window = result.output_for_node("price_window")
    # start_offset=-4 over weekdays: 13, 16 (holiday, empty), 17, 18, 19, 20 -> five partitions from the 16th.
    pd.testing.assert_frame_equal(window, sample_prices("2017-01-16", "2017-01-21"))
    assert window["date"].is_monotonic_increasing


def test_rematerialising_one_partition_replaces_only_that_file(
    local: PartitionedParquetIOManager, tmp_path: Path
) -> None:
    run(local, ["daily_prices"], tags=RANGE_TAGS)
    folder = tmp_path / "daily_prices"
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in folder.iterdir()}
    run(
        local,
        ["daily_prices"],
        partition_key="2017-01-10",
        run_config={"ops": {"daily_prices": {"config": {"scale": 2.0}}}},
    )
    after = {p.name: (p.stat().st_ino, p.read_bytes()) for p in folder.iterdir()}
    assert after.keys() == before.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"2017-01-10.parquet"}
    rewritten = pd.read_parquet(folder / "2017-01-10.parquet")
    original = sample_prices("2017-01-10", "2017-01-11")
    np.testing.assert_allclose(rewritten["close"], original["close"] * 2.0)


def test_missing_upstream_partition_names_asset_and_partition(local: PartitionedParquetIOManager) -> None:
    run(local, ["daily_prices"], tags=RANGE_TAGS)
    with pytest.raises(Exception) as info:
        run(local, ["price_window"], partition_key="2017-01-24")
    error = caused_by(info.value, MissingPartitionError)
    assert "asset daily_prices partition 2017-01-23 has not been materialised" in str(error)


def test_corrupt_partition_names_asset_partition_and_uri(
    local: PartitionedParquetIOManager, tmp_path: Path
) -> None:
    run(local, ["daily_prices"], tags=RANGE_TAGS)
    corrupt = tmp_path / "daily_prices" / "2017-01-18.parquet"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    with pytest.raises(Exception) as info:
        run(local, ["price_window"], partition_key="2017-01-20")
    message = str(caused_by(info.value, CorruptPartitionError))
    assert "asset daily_prices partition 2017-01-18" in message
    assert corrupt.as_uri() in message


def test_rows_outside_the_run_are_refused(local: PartitionedParquetIOManager, tmp_path: Path) -> None:
    config = {"ops": {"daily_prices": {"config": {"extra_day": "2017-01-23"}}}}
    with pytest.raises(Exception) as info:
        run(local, ["daily_prices"], tags=RANGE_TAGS, run_config=config)
    assert "rows dated ['2017-01-23'] do not match any partition" in str(
        caused_by(info.value, PartitionSplitError)
    )
    assert not (tmp_path / "daily_prices").exists()


def test_npz_partitions_and_window_dict(local: PartitionedParquetIOManager, tmp_path: Path) -> None:
    run(local, ["daily_tensor"], tags=RANGE_TAGS)
    assert len(list((tmp_path / "daily_tensor").glob("*.npz"))) == 10
    result = run(local, ["tensor_window"], partition_key="2017-01-12")
    stacked = result.output_for_node("tensor_window")["stacked"]
    # 10th, 11th and 12th are the 2nd, 3rd and 4th partitions of the backfill (values 1, 2, 3).
    np.testing.assert_array_equal(stacked[:, 0, 0], [1.0, 2.0, 3.0])
    with np.load(tmp_path / "tensor_window" / "2017-01-12.npz") as npz:
        assert npz["stacked"].shape == (3, 4, 2)


def test_unpartitioned_asset_with_key_prefix(local: PartitionedParquetIOManager, tmp_path: Path) -> None:
    result = run(local, ["universe/constituents"])
    stored = pd.read_parquet(tmp_path / "universe" / "constituents.parquet")
    pd.testing.assert_frame_equal(stored, constituents())
    [materialization] = result.asset_materializations_for_node("universe__constituents")
    assert materialization.metadata["rows"].value == 3


def test_default_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAGIKARP_DATA_ROOT", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert default_data_root() == str(tmp_path / "home" / "storage")
    monkeypatch.setenv("MAGIKARP_DATA_ROOT", str(tmp_path / "data"))
    assert default_data_root() == str(tmp_path / "data")
    with pytest.raises(ValueError, match="needs s3_bucket"):
        PartitionedParquetIOManager(backend="s3").blob_store()
    with pytest.raises(ValueError, match="backend must be one of"):
        PartitionedParquetIOManager(backend="gcs").blob_store()


def test_s3_backend_end_to_end(s3_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    io_manager = PartitionedParquetIOManager(
        backend="s3",
        s3_bucket=s3_bucket,
        s3_prefix="magikarp",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
    )
    run(io_manager, ["daily_prices"], tags=RANGE_TAGS)
    result = run(io_manager, ["price_window"], partition_key="2017-01-20")
    pd.testing.assert_frame_equal(
        result.output_for_node("price_window"), sample_prices("2017-01-16", "2017-01-21")
    )
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(keys) == sorted(
        [
            f"magikarp/daily_prices/{k}.parquet"
            for k in WEEKDAYS.get_partition_keys_in_range(dg.PartitionKeyRange(RANGE_START, RANGE_END))
        ]
        + ["magikarp/price_window/2017-01-20.parquet"]
    )
    for key in keys:
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    [materialization] = result.asset_materializations_for_node("price_window")
    assert (
        materialization.metadata["uri"].value == f"s3://{s3_bucket}/magikarp/price_window/2017-01-20.parquet"
    )
