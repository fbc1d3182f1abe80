"""A small storage world on the real bundled sample for the model-safety tests: per-session feature tensors
(3,600 slots, trailing-only indicators from the sample's closes), slot maps and QQQ/SPY benchmark prices,
written where the IO manager reads them."""

from pathlib import Path

import numpy as np
import pandas as pd

from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.market_data.sample import SampleSource, sample_universe
from magikarp_assets.core.membership import members_on
from magikarp_assets.core.slots import SlotMap, update_slot_map
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE
from magikarp_assets.core.storage import (
    LocalBlobStore,
    arrays_to_npz_bytes,
    frame_to_parquet_bytes,
    npz_bytes_to_arrays,
)


def _features(close: pd.DataFrame) -> list[pd.DataFrame]:
    """Vol-scaled log returns over 1/5/10/20 sessions, distance to the 20-session mean, 20-session vol."""
    log_close = np.log(close.ffill())
    vol = log_close.diff().rolling(20, min_periods=2).std().fillna(0.02).clip(lower=1e-3)
    out = [(log_close - log_close.shift(h)) / (vol * np.sqrt(h)) for h in (1, 5, 10, 20)]
    out += [log_close - log_close.rolling(20, min_periods=1).mean(), vol]
    return [frame.fillna(0.0) for frame in out]


def _tensor(slot_map: SlotMap, day: pd.Timestamp, close: pd.DataFrame, features: list) -> dict:
    tickers, state = slot_map.ticker_vector(), slot_map.state_vector()
    column = close.columns.get_indexer(tickers)
    known = (tickers != "") & (column >= 0)
    prices = np.full(len(tickers), np.nan)
    prices[known] = close.loc[day].to_numpy()[column[known]]
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


def build_world(root: Path, days: pd.DatetimeIndex) -> None:
    """Store feature_tensor, slot_map and benchmark_prices partitions for ``days`` under ``root``."""
    store = LocalBlobStore(root)
    universe = sample_universe()
    bars = SampleSource("iex").fetch_ohlcv(
        universe["ticker"].tolist(), (days[0] - pd.Timedelta(days=60)).date(), days[-1].date()
    )
    close = bars.pivot(index="date", columns="ticker", values="close").sort_index()
    features = _features(close)
    slot_map = None
    for day in days:
        key = day.strftime("%Y-%m-%d")
        slot_map = update_slot_map(slot_map, members_on(universe, day), day)
        tensor = _tensor(slot_map, day, close, features)
        store.put_bytes(f"feature_tensor/{key}.npz", arrays_to_npz_bytes(tensor))
        store.put_bytes(
            f"slot_map/{key}.parquet", frame_to_parquet_bytes(slot_map.to_frame().assign(date=day))
        )
    bench = SampleSource("benchmarks").fetch_ohlcv(["QQQ", "SPY"], days[0].date(), days[-1].date())
    bench = bench.assign(adj_close=bench["adj_close"].fillna(bench["close"]))
    for day, rows in bench.groupby("date"):
        frame = rows[["date", "ticker", "close", "adj_close", "source"]].reset_index(drop=True)
        store.put_bytes(f"benchmark_prices/{day:%Y-%m-%d}.parquet", frame_to_parquet_bytes(frame))


def crash_closes(root: Path, day: str, factor: float) -> None:
    """Inject a market crash into a stored session: every close times ``factor`` (features unchanged)."""
    store = LocalBlobStore(root)
    key = f"feature_tensor/{day}.npz"
    arrays = dict(npz_bytes_to_arrays(store.get_bytes(key)))
    arrays["close"] = arrays["close"] * factor
    store.put_bytes(key, arrays_to_npz_bytes(arrays))
