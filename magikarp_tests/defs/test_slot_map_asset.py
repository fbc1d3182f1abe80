"""slot_map runs per session in order, from the stored previous map; a range equals day-by-day runs."""

import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.defs.universe import assets as universe
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource


def _resources(root):
    return {
        "market_data": MarketDataResource(provider="sample"),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(root)),
    }


def _materialize(root, instance, start, end=None):
    tags = range_tags(start, end) if end else None
    return dg.materialize(
        [ingestion.universe_constituents, universe.slot_map],
        resources=_resources(root),
        instance=instance,
        selection=[universe.SLOT_MAP],
        partition_key=None if end else start,
        tags=tags,
        raise_on_error=False,
    )


@pytest.fixture
def instance():
    return dg.DagsterInstance.ephemeral()


def test_range_run_equals_daily_runs_and_slots_are_stable(tmp_path, instance):
    for root in (tmp_path / "a", tmp_path / "b"):
        dg.materialize([ingestion.universe_constituents], resources=_resources(root), instance=instance)
    assert _materialize(tmp_path / "a", instance, "2013-02-08", "2013-03-08").success
    days = pd.read_parquet(tmp_path / "a" / "slot_map" / "2013-03-08.parquet")
    assert _materialize(tmp_path / "b", instance, "2013-02-08").success
    for day in pd.bdate_range("2013-02-11", "2013-03-08"):
        key = day.strftime("%Y-%m-%d")
        if (tmp_path / "a" / "slot_map" / f"{key}.parquet").exists():
            assert _materialize(tmp_path / "b", instance, key).success
    for f in (tmp_path / "a" / "slot_map").glob("*.parquet"):
        assert f.read_bytes() == (tmp_path / "b" / "slot_map" / f.name).read_bytes(), f.name
    first = pd.read_parquet(tmp_path / "a" / "slot_map" / "2013-02-08.parquet").set_index("ticker")
    last = days.set_index("ticker")
    assert (first.loc["AAPL", "slot"], first.loc["AAPL", "state"]) == (last.loc["AAPL", "slot"], 1)


def test_out_of_order_run_is_refused_with_a_clear_message(tmp_path, instance):
    dg.materialize([ingestion.universe_constituents], resources=_resources(tmp_path), instance=instance)
    assert _materialize(tmp_path, instance, "2016-06-10").success  # the slot history may start any day
    assert _materialize(tmp_path, instance, "2016-06-13").success
    result = _materialize(tmp_path, instance, "2016-06-15")  # 2016-06-14 skipped
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.cause.message
    assert "previous session 2016-06-14" in message and "backfill" in message and "2016-06-13" in message
    assert not (tmp_path / "slot_map" / "2016-06-15.parquet").exists()
