"""A small real world for the reporting tests: the sample's real closes for a few sessions, real slot maps,
feature tensors per the contract and one tiny trained PPO model promoted to production (a few seconds)."""

from pathlib import Path

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import previous_trading_day, trading_day_window
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.storage import LocalBlobStore
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.partitions import range_tags, trading_day_partitions
from magikarp_assets.defs.reporting import assets as reporting_assets
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.defs.signals import reporting
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support.world import register_tiny_ppo, store_world, tensor_episode

TEMPERATURE = 300.0  # sharp softmax so a barely trained policy makes BUY calls
VERSION = "ppo-report-v1"
UPSTREAM = [
    dg.AssetSpec(key, partitions_def=trading_day_partitions)
    for key in (FEATURE_TENSOR, SLOT_MAP, BENCHMARK_PRICES)
]
ASSETS = [
    *UPSTREAM,
    signals.paper_trading,
    reporting.performance_metrics,
    reporting.daily_report,
    reporting_assets.recommendation_history_table,
    reporting_assets.monthly_report,
]
CYCLE = [signals.DAILY_RECOMMENDATIONS, signals.PORTFOLIO_STATE, reporting.PERFORMANCE_METRICS]


def build_world(root: Path, run_days: pd.DatetimeIndex) -> None:
    """Store the run sessions' tensors, slot maps and benchmark prices under ``root`` and promote a tiny
    PPO model trained on the 12 sessions before them.

    :param root: an empty folder (the local blob store).
    :param run_days: the sessions the tests will run.
    """
    store = LocalBlobStore(root)
    train_days = trading_day_window(previous_trading_day(run_days[0]), 12)
    tensors = store_world(
        store, train_days.append(run_days), run_days, horizons=(1, 5, 20), mean_distance=False
    )
    registry = ModelRegistry(store)
    episode = tensor_episode(tensors[: len(train_days)], train_days)
    register_tiny_ppo(registry, episode, VERSION, seed=1, temperature=TEMPERATURE)
    promote(registry, VERSION, "tester", "report tests", force_reason="tiny test model")


def resources(root: Path, outbox: Path) -> dict[str, object]:
    """The resources of a world stored at ``root``, mail to the ``outbox`` folder."""
    return {
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(root)),
        "model_registry": ModelRegistryResource(root=str(root)),
        "notifier": NotifierResource(outbox_dir=str(outbox)),
    }


def run(
    res: dict,
    instance: dg.DagsterInstance,
    selection: list,
    start: str | None = None,
    end: str | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` for one partition (or a session range, or unpartitioned)."""
    return dg.materialize(
        ASSETS,
        resources=res,
        instance=instance,
        selection=selection,
        partition_key=None if end else start,
        tags=range_tags(start, end) if end and start else None,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def session_keys(days: pd.DatetimeIndex) -> list[str]:
    """Partition keys of ``days``."""
    return [d.strftime("%Y-%m-%d") for d in days]
