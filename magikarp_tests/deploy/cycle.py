"""A day's pipeline on the bundled real sample, run through a deployment's own definitions: ingestion, slot
maps and features for a few sessions, a tiny policy trained on the stored tensors and promoted, then
recommendations, the paper portfolio, performance and the email, one session per run."""

import dagster as dg
import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.core.rl.training import train_policy
from magikarp_assets.defs.features.tensor_asset import load_tensor_window

RANGE = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SESSIONS = trading_days("2016-06-01", "2016-06-08")  # 6 sessions of the real sample
KEYS = [d.strftime("%Y-%m-%d") for d in SESSIONS]
TRAIN = SESSIONS[:-2]  # the policy is trained before the two sessions it serves
REFERENCE = ["universe_constituents", "raw_fundamentals"]
INGEST = ["raw_ohlcv", "ohlcv_quarantine", "benchmark_prices", "slot_map"]
FEATURES = [
    "stg_prices",
    "technical_features",
    "fundamental_features",
    "slot_membership",
    "stock_features",
    "feature_tensor",
]
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
    tags = {RANGE[0]: days[0], RANGE[1]: days[-1]} if days else None
    result = dg.materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        selection=selection,
        partition_key=partition,
        tags=tags,
        run_config=QUIET,
        raise_on_error=False,
    )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise AssertionError(f"run {selection} failed:\n" + "\n".join(str(f) for f in failures))
    return result


def prepare(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Reference data, ingestion and features for every session, then a promoted tiny production policy."""
    run(defs, instance, REFERENCE)
    run(defs, instance, INGEST, days=KEYS)
    run(defs, instance, FEATURES, days=KEYS)
    window = load_tensor_window(defs.resources["io_manager"], TRAIN)
    episode = MarketEpisode(
        **{k: window[k] for k in ("features", "close", "tradable", "slot_state")}, dates=TRAIN
    )
    hyper = {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
    trained = train_policy(episode, "ppo", 16, 0, hyper)
    registry = defs.resources["model_registry"].registry()
    registry.register(
        trained.model_bytes,
        {
            "version": MODEL_VERSION,
            "algorithm": "ppo",
            "hyper_parameters": hyper,
            "training_window": (TRAIN[0].date(), TRAIN[-1].date()),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": str(window["slot_map_version"]),
            "metrics": {},
        },
    )
    promote(registry, MODEL_VERSION, "deploy test", "deploy test", force_reason="tiny test policy")


def serve(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    """One session's recommendations, paper portfolio, performance and email."""
    return run(defs, instance, SIGNALS, partition=key)


def load(defs: dg.Definitions, asset: str, key: str) -> pd.DataFrame | dict[str, np.ndarray]:
    """A stored partition, read back through the deployment's IO manager."""
    return defs.resources["io_manager"].load_partition(dg.AssetKey(asset), key)
