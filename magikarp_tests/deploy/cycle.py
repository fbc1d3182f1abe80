"""A day's pipeline on the bundled real sample, run through a deployment's own definitions: ingestion, slot
maps and features for a few sessions, a tiny policy trained on the stored tensors and promoted, then
recommendations, the paper portfolio, performance and the email, one session per run."""

import dagster as dg
import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.defs.features.tensor_asset import load_tensor_window
from magikarp_tests.support.world import FEATURES, materialize_defs, register_tiny_ppo

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SESSIONS = trading_days("2016-06-01", "2016-06-08")  # 6 sessions of the real sample
KEYS = [d.strftime("%Y-%m-%d") for d in SESSIONS]
TRAIN = SESSIONS[:-2]  # the policy is trained before the two sessions it serves
REFERENCE = ["universe_constituents", "raw_fundamentals"]
INGEST = ["raw_ohlcv", "ohlcv_quarantine", "benchmark_prices", "slot_map"]
SIGNALS = ["daily_recommendations", "portfolio_state", "performance_metrics", "daily_report"]
MODEL_VERSION = "ppo-deploy-test"


def run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: list[str],
    partition: str | None = None,
    days: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` for one partition or a range of sessions; fail with the step errors."""
    start, end = (days[0], days[-1]) if days else (None, None)
    return materialize_defs(defs, instance, selection, start, end, partition=partition, run_config=QUIET)


def prepare(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Reference data, ingestion and features for every session, then a promoted tiny production policy."""
    run(defs, instance, REFERENCE)
    run(defs, instance, INGEST, days=KEYS)
    run(defs, instance, FEATURES, days=KEYS)
    window = load_tensor_window(defs.resources["io_manager"], TRAIN)
    episode = MarketEpisode(
        **{k: window[k] for k in ("features", "close", "tradable", "slot_state")}, dates=TRAIN
    )
    registry = defs.resources["model_registry"].registry()
    register_tiny_ppo(
        registry, episode, MODEL_VERSION, seed=0, slot_map_version=str(window["slot_map_version"])
    )
    promote(registry, MODEL_VERSION, "deploy test", "deploy test", force_reason="tiny test policy")


def serve(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    """One session's recommendations, paper portfolio, performance and email."""
    return run(defs, instance, SIGNALS, partition=key)


def load(defs: dg.Definitions, asset: str, key: str) -> pd.DataFrame | dict[str, np.ndarray]:
    """A stored partition, read back through the deployment's IO manager."""
    return defs.resources["io_manager"].load_partition(dg.AssetKey(asset), key)
