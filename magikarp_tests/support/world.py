"""Small real worlds for the Dagster tests: the bundled sample's real closes turned into per-session feature
tensors (per the feature_tensor contract), slot maps and QQQ/SPY benchmark prices stored where the IO
manager reads them, tiny PPO models trained on those tensors, and the run helpers the tests share
(materialising a deployment's assets, evaluating the run-failure alert)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import dagster as dg
import numpy as np
import pandas as pd

from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.market_data.sample import SampleSource, sample_universe
from magikarp_assets.core.membership import members_on
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.core.rl.training import train_policy
from magikarp_assets.core.slots import SlotMap, update_slot_map
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE
from magikarp_assets.core.storage import LocalBlobStore, arrays_to_npz_bytes, frame_to_parquet_bytes
from magikarp_assets.defs.features.sql_assets import SQL_FEATURE_ASSETS
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.defs.signals.sensors import run_failure_alert
from magikarp_assets.resources.notifier import NotifierResource

HISTORY = pd.Timedelta(days=60)  # closes loaded before the first session, so 20-session indicators are warm
TINY_PPO = {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
FEATURES = [*SQL_FEATURE_ASSETS, "feature_tensor"]  # the feature stage: raw prices to the tensor


def trailing_features(
    close: pd.DataFrame, horizons: Sequence[int] = (1, 5, 10, 20), mean_distance: bool = True
) -> list[pd.DataFrame]:
    """Trailing-only indicators (no look-ahead): vol-scaled log returns over ``horizons`` sessions, the
    distance to the 20-session mean (optional) and the 20-session volatility, in that order.

    :param close: close per date (rows, ascending) and ticker (columns).
    :param horizons: return horizons in sessions.
    :param mean_distance: include the log distance to the 20-session mean.
    :return: one date x ticker frame per feature, NaN filled with 0.
    """
    log_close = np.log(close.ffill())
    vol = log_close.diff().rolling(20, min_periods=2).std().fillna(0.02).clip(lower=1e-3)
    out = [(log_close - log_close.shift(h)) / (vol * np.sqrt(h)) for h in horizons]
    if mean_distance:
        out.append(log_close - log_close.rolling(20, min_periods=1).mean())
    out.append(vol)
    return [frame.fillna(0.0) for frame in out]


def session_tensor(
    slot_map: SlotMap,
    day: pd.Timestamp,
    close: pd.DataFrame,
    features: Sequence[pd.DataFrame],
    missing: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """A session's arrays per the feature_tensor contract: the features in the first columns (the rest of
    the N_FEATURES stay 0), the real closes, and tradable = priced and active.

    :param slot_map: the session's slot map.
    :param day: the session.
    :param close: close per date and ticker.
    :param features: date x ticker frames, from :func:`trailing_features`.
    :param missing: tickers without a bar that session (their close is NaN, so they are not tradable).
    """
    tickers, state = slot_map.ticker_vector(), slot_map.state_vector()
    column = close.columns.get_indexer(tickers)
    known = (tickers != "") & (column >= 0)
    prices = np.full(len(tickers), np.nan)
    prices[known] = close.loc[day].to_numpy()[column[known]]
    prices[np.isin(tickers, list(missing))] = np.nan
    values = np.zeros((len(tickers), N_FEATURES), np.float32)
    for j, frame in enumerate(features):
        values[known, j] = frame.loc[day].to_numpy()[column[known]]
    return {
        "features": values,
        "tradable": np.isfinite(prices) & (state == SLOT_ACTIVE),
        "close": prices,
        "slot_state": state,
        "slot_map_version": np.array(slot_map.version),
        "feature_spec_hash": np.array(FEATURE_SPEC_HASH),
    }


def store_world(
    store: LocalBlobStore,
    days: pd.DatetimeIndex,
    stored: pd.DatetimeIndex | None = None,
    *,
    horizons: Sequence[int] = (1, 5, 10, 20),
    mean_distance: bool = True,
    leaver: tuple[str, pd.Timestamp] | None = None,
    gap: tuple[str, pd.Timestamp] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Build the tensors of ``days`` on the sample's real closes and index membership, and store the
    feature_tensor and slot_map partitions of the ``stored`` sessions and their QQQ/SPY benchmark_prices.
    Closes are loaded from 60 days before the first session so the 20-session indicators are warm.

    :param store: where the partitions go (the local IO manager's root).
    :param days: consecutive sessions, ascending.
    :param stored: the sessions to store (default: all of ``days``).
    :param horizons: return horizons of the features (see :func:`trailing_features`).
    :param mean_distance: include the distance-to-mean feature.
    :param leaver: (ticker, day): the ticker leaves the index from that session on (archived slot).
    :param gap: (ticker, day): the ticker has no bar that session.
    :return: the tensor of every session of ``days``, in order (e.g. to train on).
    """
    stored = days if stored is None else stored
    universe = sample_universe()
    start, end = (days[0] - HISTORY).date(), days[-1].date()
    bars = SampleSource("iex").fetch_ohlcv(universe["ticker"].tolist(), start, end)
    close = bars.pivot(index="date", columns="ticker", values="close").sort_index()
    features = trailing_features(close, horizons, mean_distance)
    slot_map, tensors = None, []
    for day in days:
        members = members_on(universe, day)
        if leaver and day >= leaver[1]:
            members = [t for t in members if t != leaver[0]]
        slot_map = update_slot_map(slot_map, members, day)
        missing = [gap[0]] if gap and day == gap[1] else []
        tensors.append(session_tensor(slot_map, day, close, features, missing))
        if day in stored:
            key = day.strftime("%Y-%m-%d")
            store.put_bytes(f"feature_tensor/{key}.npz", arrays_to_npz_bytes(tensors[-1]))
            store.put_bytes(
                f"slot_map/{key}.parquet", frame_to_parquet_bytes(slot_map.to_frame().assign(date=day))
            )
    bench = SampleSource("benchmarks").fetch_ohlcv(["QQQ", "SPY"], stored[0].date(), stored[-1].date())
    bench = bench.assign(adj_close=bench["adj_close"].fillna(bench["close"]))
    for day, rows in bench.groupby("date"):
        frame = rows[["date", "ticker", "close", "adj_close", "source"]].reset_index(drop=True)
        store.put_bytes(f"benchmark_prices/{day:%Y-%m-%d}.parquet", frame_to_parquet_bytes(frame))
    return tensors


def tensor_episode(tensors: Sequence[dict[str, np.ndarray]], dates: pd.DatetimeIndex) -> MarketEpisode:
    """The training episode of consecutive session tensors.

    :param tensors: one feature_tensor dict per session of ``dates``.
    :param dates: the sessions, ascending.
    """
    keys = ("features", "close", "tradable", "slot_state")
    return MarketEpisode(**{key: np.stack([t[key] for t in tensors]) for key in keys}, dates=dates)


def register_tiny_ppo(
    registry: ModelRegistry,
    episode: MarketEpisode,
    version: str,
    seed: int,
    temperature: float | None = None,
    slot_map_version: str = "sm-train",
) -> None:
    """Train a tiny PPO (16 steps, a few seconds) on ``episode`` and register it (not promoted).

    :param registry: the model registry.
    :param episode: the training sessions (also the recorded training window).
    :param version: the model version to register.
    :param seed: training seed.
    :param temperature: the environment's softmax temperature (``None``: its default).
    :param slot_map_version: the slot map version recorded in the manifest.
    """
    hyper = dict(TINY_PPO, env_kwargs={"temperature": temperature}) if temperature else dict(TINY_PPO)
    registry.register(
        train_policy(episode, "ppo", 16, seed, hyper).model_bytes,
        {
            "version": version,
            "algorithm": "ppo",
            "hyper_parameters": hyper,
            "training_window": (episode.dates[0].date(), episode.dates[-1].date()),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": slot_map_version,
            "metrics": {},
        },
    )


def alert_run_failure(
    failed: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, notifier: NotifierResource
) -> None:
    """Evaluate the ``run_failure_alert`` sensor on a failed in-process run (raises what the sensor raises).

    :param failed: the failed run's result.
    :param instance: the instance it ran on.
    :param notifier: the notifier the sensor mails with.
    """
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"notifier": notifier},
    )
    run_failure_alert(context)


def materialize_defs(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: list[str],
    start: str | None = None,
    end: str | None = None,
    *,
    partition: str | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` of a deployment's definitions for the session range ``start``..``end``, one
    ``partition`` or unpartitioned, and fail with the steps' errors.

    :param defs: the deployment's definitions (assets and resources).
    :param instance: the Dagster instance to run on.
    :param selection: asset names to materialise.
    :param start: first session of a range run.
    :param end: last session of a range run.
    :param partition: the partition key of a single-partition run.
    :param run_config: run config (op config, loggers).
    :raises AssertionError: when the run fails, listing every failure event.
    """
    result = dg.materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        selection=selection,
        partition_key=partition,
        tags=range_tags(start, end) if start else None,
        run_config=run_config,
        raise_on_error=False,
    )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise AssertionError(f"run {selection} failed:\n" + "\n".join(str(f) for f in failures))
    return result
