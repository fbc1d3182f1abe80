"""Idempotence and determinism on the real sample: re-materialising partitions gives the same bytes, a
60-session backfill equals 60 daily runs (ingestion through Dagster, features through the same SQL models
and packing), and two concurrent runs of one partition leave one complete version."""

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_day_window
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.features.tensor import pack_day
from magikarp_assets.core.sql_models import run_model
from magikarp_assets.core.storage import arrays_to_npz_bytes, frame_to_parquet_bytes
from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.defs.universe import assets as universe_assets
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_tests.reliability.helpers import ingest_partition_in_process

SESSIONS = trading_day_window("2016-09-30", 60)
KEYS = [d.strftime("%Y-%m-%d") for d in SESSIONS]
NAMES = ["AAPL", "BAX", "DISCA", "EBAY", "JNJ", "KO", "LNT", "MSFT", "NI", "XOM"]  # with gaps and actions
ASSETS = [ingestion.universe_constituents, ingestion.raw_ohlcv, universe_assets.slot_map]
DAILY = [ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE, universe_assets.SLOT_MAP]


def _store(root: Path) -> tuple[dict, dg.DagsterInstance]:
    """A local store holding a small universe of the sample (the first ten names above)."""
    resources = {
        "market_data": MarketDataResource(),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(root)),
    }
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(ASSETS, resources=resources, instance=instance, selection=[ingestion.UNIVERSE])
    path = root / "universe_constituents.parquet"
    universe = pd.read_parquet(path)
    universe[universe["ticker"].isin(NAMES)].reset_index(drop=True).to_parquet(path)
    return resources, instance


def _bytes(root: Path, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / folder).glob("*.parquet"))}


@pytest.mark.slow
def test_a_60_session_backfill_equals_60_daily_runs_and_reruns_are_byte_identical(tmp_path):
    backfill, daily = tmp_path / "backfill", tmp_path / "daily"
    resources, instance = _store(backfill)
    tags = range_tags(KEYS[0], KEYS[-1])
    assert dg.materialize(
        ASSETS, resources=resources, instance=instance, selection=DAILY[:2], tags=tags
    ).success
    resources_d, instance_d = _store(daily)
    for key in KEYS:
        result = dg.materialize(
            ASSETS, resources=resources_d, instance=instance_d, selection=DAILY, partition_key=key
        )
        assert result.success
    for folder in ("raw_ohlcv", "ohlcv_quarantine"):
        assert _bytes(backfill, folder) == _bytes(daily, folder), folder
        assert len(_bytes(backfill, folder)) == 60

    # Re-materialising any partition (one in the middle, here) gives the same bytes.
    before = _bytes(daily, "raw_ohlcv")
    dg.materialize(
        ASSETS, resources=resources_d, instance=instance_d, selection=DAILY, partition_key=KEYS[30]
    )
    assert _bytes(daily, "raw_ohlcv") == before


@pytest.mark.slow
def test_features_for_60_sessions_in_one_pass_equal_60_daily_passes():
    inputs = sample_feature_inputs(SESSIONS, tickers=NAMES)
    whole = run_model("stock_features", inputs, SESSIONS)
    for day in SESSIONS:
        one = run_model("stock_features", inputs, [day])
        part = whole[whole["date"] == day].reset_index(drop=True)
        assert frame_to_parquet_bytes(one) == frame_to_parquet_bytes(part), day
        maps = inputs["slot_map"]
        slot_map = maps[maps["date"] == day].drop(columns="date")
        assert arrays_to_npz_bytes(pack_day(one, slot_map)) == arrays_to_npz_bytes(pack_day(part, slot_map))


@pytest.mark.slow
def test_two_concurrent_runs_of_one_partition_leave_one_complete_version(tmp_path):
    reference_root = tmp_path / "reference"
    _store(reference_root)
    assert ingest_partition_in_process(str(reference_root), KEYS[0])
    reference = (reference_root / "raw_ohlcv" / f"{KEYS[0]}.parquet").read_bytes()

    root = tmp_path / "shared"
    _store(root)
    target = root / "raw_ohlcv" / f"{KEYS[0]}.parquet"
    seen, stop = [], threading.Event()

    def watch() -> None:  # every read during the runs sees nothing or a whole version
        while not stop.is_set():
            try:
                seen.append(target.read_bytes())
            except FileNotFoundError:
                continue

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(ingest_partition_in_process, [str(root)] * 2, [KEYS[0]] * 2))
    finally:
        stop.set()
        watcher.join()
    assert outcomes == [True, True]
    assert target.read_bytes() == reference
    assert seen and all(content == reference for content in seen)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind
