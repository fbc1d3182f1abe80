"""Packs a day's stock features into the fixed 3,600-slot tensor the policy reads; stacks days to train."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from magikarp_assets.core.features.spec import FEATURE_NAMES, FEATURE_SPEC_HASH
from magikarp_assets.core.market_data.base import describe_tickers
from magikarp_assets.core.spec import N_FEATURES, N_SLOTS, SLOT_ACTIVE, SLOT_PADDING

STACKED_KEYS = ("features", "tradable", "close", "slot_state")
SLOT_MAP_COLUMNS = ["slot", "ticker", "state", "version"]


class TensorPackError(ValueError):
    """The day's features and slot map cannot be packed; the message names the slots or tickers at fault."""


def pack_day(stock_features: pd.DataFrame, slot_map: pd.DataFrame) -> dict[str, np.ndarray]:
    """One session's tensor, slot-aligned.

    Returns ``features`` float32 [3600, 32] (finite; zero on slots without a row and on padding),
    ``tradable`` bool [3600] (active slot with a bar dated that day), ``close`` float64 [3600] (NaN without a
    bar that day), ``slot_state`` int8 [3600] (0 padding, 1 active, 2 archive), and 0-d string arrays
    ``slot_map_version`` and ``feature_spec_hash``.

    :param stock_features: the day's rows of the stock_features model (ticker, slot, close, valid and the 32
        feature columns).
    :param slot_map: the day's slot map, all 3,600 rows (slot, ticker, state, version).
    :raises TensorPackError: a malformed slot map, a feature row whose slot or ticker disagrees with it, or a
        non-finite feature.
    """
    state, tickers, version = _slot_arrays(slot_map)
    slots = stock_features["slot"].to_numpy(np.int64)
    _check_rows(stock_features, slots, state, tickers)
    features = np.zeros((N_SLOTS, N_FEATURES), dtype=np.float32)
    features[slots] = stock_features[list(FEATURE_NAMES)].to_numpy(np.float32)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise TensorPackError(
            f"non-finite features for {describe_tickers(list(tickers[bad]))}: stock_features must encode "
            "missing values as 0"
        )
    close = np.full(N_SLOTS, np.nan)
    valid = np.zeros(N_SLOTS, dtype=bool)
    close[slots] = stock_features["close"].to_numpy(np.float64)
    valid[slots] = stock_features["valid"].to_numpy(bool)
    priced = valid & np.isfinite(close) & (close > 0)
    close[~priced] = np.nan
    return {
        "features": features,
        "tradable": priced & (state == SLOT_ACTIVE),
        "close": close,
        "slot_state": state,
        "slot_map_version": np.array(version),
        "feature_spec_hash": np.array(FEATURE_SPEC_HASH),
    }


def _slot_arrays(slot_map: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    missing = [c for c in SLOT_MAP_COLUMNS if c not in slot_map.columns]
    if missing:
        raise TensorPackError(f"slot map lacks column(s) {', '.join(missing)}")
    slots = slot_map["slot"].to_numpy(np.int64)
    if len(slots) != N_SLOTS or not np.array_equal(np.sort(slots), np.arange(N_SLOTS)):
        raise TensorPackError(f"slot map must hold each slot 0..{N_SLOTS - 1} once, has {len(slots)} rows")
    versions = slot_map["version"].unique()
    if len(versions) != 1:
        raise TensorPackError(f"slot map mixes {len(versions)} versions; pack one day's map at a time")
    order = np.argsort(slots)
    state = slot_map["state"].to_numpy(np.int8)[order]
    tickers = slot_map["ticker"].to_numpy(object)[order]
    return state, tickers, str(versions[0])


def _check_rows(rows: pd.DataFrame, slots: np.ndarray, state: np.ndarray, tickers: np.ndarray) -> None:
    if ((slots < 0) | (slots >= N_SLOTS)).any():
        raise TensorPackError(f"stock_features slots outside 0..{N_SLOTS - 1}: {sorted(set(slots))[:10]}")
    dup = pd.Series(slots).duplicated()
    if dup.any():
        raise TensorPackError(f"stock_features fill slot(s) {sorted(set(slots[dup.to_numpy()]))[:10]} twice")
    names = rows["ticker"].to_numpy(object)
    wrong = (tickers[slots] != names) | (state[slots] == SLOT_PADDING)
    if wrong.any():
        raise TensorPackError(
            f"stock_features rows disagree with the slot map (ticker not in that slot, or padding slot) for "
            f"{describe_tickers(list(names[wrong]))}"
        )


def stack_tensors(days: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[T, 3600, ...] arrays from day tensors, in the order given, for training.

    Returns the STACKED_KEYS arrays, ``slot_map_versions`` (str [T]), ``slot_map_version`` (the last day's)
    and ``feature_spec_hash``.

    :param days: day tensors from :func:`pack_day`.
    :raises TensorPackError: no days, or days packed under different feature specs.
    """
    if not days:
        raise TensorPackError("no day tensors to stack")
    hashes = {str(d["feature_spec_hash"]) for d in days}
    if len(hashes) != 1:
        raise TensorPackError(
            f"day tensors were packed under {len(hashes)} feature specs; rebuild them with one"
        )
    out = {key: np.stack([d[key] for d in days]) for key in STACKED_KEYS}
    out["slot_map_versions"] = np.array([str(d["slot_map_version"]) for d in days])
    out["slot_map_version"] = np.array(str(days[-1]["slot_map_version"]))
    out["feature_spec_hash"] = np.array(hashes.pop())
    return out
