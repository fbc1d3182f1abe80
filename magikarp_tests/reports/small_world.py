"""A small real world for the reporting tests: the sample's real closes for a few sessions, real slot maps,
feature tensors per the contract and one tiny trained PPO model promoted to production (a few seconds)."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import previous_trading_day, trading_day_window
from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.market_data.sample import SampleSource, sample_universe
from magikarp_assets.core.membership import members_on
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.core.rl.training import train_policy
from magikarp_assets.core.slots import SlotMap, update_slot_map
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE
from magikarp_assets.core.storage import LocalBlobStore, arrays_to_npz_bytes, frame_to_parquet_bytes
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.reporting import assets as reporting_assets
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.defs.signals import reporting
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource

TEMPERATURE = 300.0  # sharp softmax so a barely trained policy makes BUY calls
VERSION = "ppo-report-v1"
RANGE = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
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


def _features(close: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Trailing-only indicators (vol-scaled returns over 1/5/20 sessions, 20-session volatility)."""
    log_close = np.log(close.ffill())
    vol = log_close.diff().rolling(20, min_periods=2).std().fillna(0.02).clip(lower=1e-3)
    out = {f"ret_{h}": (log_close - log_close.shift(h)) / (vol * np.sqrt(h)) for h in (1, 5, 20)}
    out["vol_20"] = vol
    return {name: frame.fillna(0.0) for name, frame in out.items()}


def _tensor(slot_map: SlotMap, day: pd.Timestamp, close: pd.DataFrame, features: dict) -> dict:
    tickers, state = slot_map.ticker_vector(), slot_map.state_vector()
    column = close.columns.get_indexer(tickers)
    known = (tickers != "") & (column >= 0)
    prices = np.full(len(tickers), np.nan)
    prices[known] = close.loc[day].to_numpy()[column[known]]
    values = np.zeros((len(tickers), N_FEATURES), np.float32)
    for j, frame in enumerate(features.values()):
        values[known, j] = frame.loc[day].to_numpy()[column[known]]
    return {
        "features": values,
        "tradable": np.isfinite(prices) & (state == SLOT_ACTIVE),
        "close": prices,
        "slot_state": state,
        "slot_map_version": np.array(slot_map.version),
        "feature_spec_hash": np.array(FEATURE_SPEC_HASH),
    }


def build_world(root: Path, run_days: pd.DatetimeIndex) -> None:
    """Store the run sessions' tensors, slot maps and benchmark prices under ``root`` and promote a tiny
    PPO model trained on the 12 sessions before them.

    :param root: an empty folder (the local blob store).
    :param run_days: the sessions the tests will run.
    """
    store = LocalBlobStore(root)
    universe = sample_universe()
    train_days = trading_day_window(previous_trading_day(run_days[0]), 12)
    days = train_days.append(run_days)
    bars = SampleSource("iex").fetch_ohlcv(
        universe["ticker"].tolist(), (days[0] - pd.Timedelta(days=60)).date(), run_days[-1].date()
    )
    close = bars.pivot(index="date", columns="ticker", values="close").sort_index()
    features = _features(close)
    slot_map, tensors = None, []
    for day in days:
        slot_map = update_slot_map(slot_map, members_on(universe, day), day)
        tensors.append(_tensor(slot_map, day, close, features))
        if day in run_days:
            key = day.strftime("%Y-%m-%d")
            store.put_bytes(f"feature_tensor/{key}.npz", arrays_to_npz_bytes(tensors[-1]))
            store.put_bytes(
                f"slot_map/{key}.parquet", frame_to_parquet_bytes(slot_map.to_frame().assign(date=day))
            )
    bench = SampleSource("benchmarks").fetch_ohlcv(["QQQ", "SPY"], run_days[0].date(), run_days[-1].date())
    bench = bench.assign(adj_close=bench["adj_close"].fillna(bench["close"]))
    for day, rows in bench.groupby("date"):
        frame = rows[["date", "ticker", "close", "adj_close", "source"]].reset_index(drop=True)
        store.put_bytes(f"benchmark_prices/{day:%Y-%m-%d}.parquet", frame_to_parquet_bytes(frame))
    train = tensors[: len(train_days)]
    episode = MarketEpisode(
        **{key: np.stack([t[key] for t in train]) for key in ("features", "close", "tradable", "slot_state")},
        dates=train_days,
    )
    hyper = {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "env_kwargs": {"temperature": TEMPERATURE}}
    registry = ModelRegistry(store)
    registry.register(
        train_policy(episode, "ppo", 16, 1, hyper).model_bytes,
        {
            "version": VERSION,
            "algorithm": "ppo",
            "hyper_parameters": hyper,
            "training_window": (train_days[0].date(), train_days[-1].date()),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": "sm-train",
            "metrics": {},
        },
    )
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
        tags={RANGE[0]: start, RANGE[1]: end} if end and start else None,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def session_keys(days: pd.DatetimeIndex) -> list[str]:
    """Partition keys of ``days``."""
    return [d.strftime("%Y-%m-%d") for d in days]
