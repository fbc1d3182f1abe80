"""Packs a day's stock features into the fixed 3,600-slot tensor, and stacks days for training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from magikarp_assets.core.features.spec import FEATURE_NAMES, FEATURE_SPEC_HASH
from magikarp_assets.core.spec import N_FEATURES, N_SLOTS, SLOT_ACTIVE, SLOT_PADDING

STACKED_KEYS = ("features", "tradable", "close", "slot_state")


def pack_day(stock_features: pd.DataFrame, slot_map: pd.DataFrame) -> dict[str, np.ndarray]:
    """One session's tensor: features float32 [3600, 32], tradable bool, close float64 (NaN: no price),
    slot_state int8, plus the slot-map version and feature-spec hash as 0-d strings.

    :param stock_features: rows of the stock_features model for the day (ticker, slot, close, valid, ...).
    :param slot_map: the day's 3,600-row slot map (slot, ticker, state, version).
    :raises ValueError: a feature row whose slot or ticker disagrees with the slot map, or NaN/inf values.
    """
    if len(slot_map) != N_SLOTS:
        raise ValueError(f"slot map has {len(slot_map)} rows, expected {N_SLOTS}")
    slot_map = slot_map.sort_values("slot")
    state = slot_map["state"].to_numpy(np.int8)
    tickers = slot_map["ticker"].to_numpy(object)
    slots = stock_features["slot"].to_numpy(np.int64)
    if len(slots) and (tickers[slots] != stock_features["ticker"].to_numpy(object)).any():
        wrong = stock_features.loc[tickers[slots] != stock_features["ticker"].to_numpy(object), "ticker"]
        raise ValueError(f"stock_features rows disagree with the slot map for {', '.join(wrong[:10])}")
    features = np.zeros((N_SLOTS, N_FEATURES), dtype=np.float32)
    features[slots] = stock_features[list(FEATURE_NAMES)].to_numpy(np.float32)
    if not np.isfinite(features).all():
        raise ValueError("stock_features contain NaN or inf: the SQL must encode missing values as 0")
    close = np.full(N_SLOTS, np.nan)
    close[slots] = stock_features["close"].to_numpy(np.float64)
    priced = np.isfinite(close) & (close > 0)
    valid = np.zeros(N_SLOTS, dtype=bool)
    valid[slots] = stock_features["valid"].to_numpy(bool)
    features[state == SLOT_PADDING] = 0.0
    return {
        "features": features,
        "tradable": (state == SLOT_ACTIVE) & priced & valid,
        "close": close,
        "slot_state": state,
        "slot_map_version": np.array(str(slot_map["version"].iloc[0])),
        "feature_spec_hash": np.array(FEATURE_SPEC_HASH),
    }


def stack_tensors(days: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[T, 3600, ...] arrays from day tensors; refuses days packed under different feature specs."""
    if not days:
        raise ValueError("no tensors to stack")
    hashes = {str(d["feature_spec_hash"]) for d in days}
    if len(hashes) != 1:
        raise ValueError(f"tensors were packed under {len(hashes)} feature specs; rebuild them with one spec")
    out = {key: np.stack([d[key] for d in days]) for key in STACKED_KEYS}
    out["slot_map_version"] = np.array(str(days[-1]["slot_map_version"]))
    out["feature_spec_hash"] = np.array(hashes.pop())
    return out
