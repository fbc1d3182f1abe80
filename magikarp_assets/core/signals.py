"""Daily recommendations: turn the policy's target weights into BUY / SELL / HOLD calls per ticker that the
portfolio can actually execute."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING

BUY, SELL, HOLD = "BUY", "SELL", "HOLD"
# A recommendation is a trade only if the weight moves by more than half a percent of the portfolio.
DEFAULT_THRESHOLD = 0.005
# The daily service scales the threshold with the universe instead: half an equal-weight position.
DEFAULT_EQUAL_WEIGHT_FRACTION = 0.5
WEIGHT_SUM_TOLERANCE = 1e-9
RECOMMENDATION_COLUMNS = [
    "ticker",
    "slot",
    "action",
    "current_weight",
    "target_weight",
    "delta",
    "confidence",
    "rank",
    "price",
    "model_version",
    "slot_map_version",
    "date",
]


def _check_weights(name: str, weights: np.ndarray, n_slots: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_slots + 1,):
        raise ValueError(
            f"{name} has shape {weights.shape}; the rule is ({n_slots + 1},): {n_slots} slots then cash"
        )
    checks = (
        ("must not be NaN or inf", ~np.isfinite(weights)),
        (f"must be >= 0 (within {WEIGHT_SUM_TOLERANCE:g})", weights < -WEIGHT_SUM_TOLERANCE),
    )
    for rule, broken in checks:
        if broken.any():
            first = int(np.flatnonzero(broken)[0])
            where = "cash" if first == n_slots else f"slot {first}"
            raise ValueError(f"{name} breaks the rule 'weights {rule}' at {where} (value {weights[first]!r})")
    total = float(weights.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"{name} sums to {total!r} with cash; the rule is 1 within {WEIGHT_SUM_TOLERANCE:g}")
    return weights


def _check_slot_arrays(
    tradable: np.ndarray, slot_state: np.ndarray, tickers: np.ndarray, close: np.ndarray
) -> int:
    if np.ndim(tickers) != 1:
        raise ValueError(f"tickers has shape {np.shape(tickers)}; the rule is (S,), one entry per slot")
    n_slots = int(np.shape(tickers)[0])
    for name, array in (
        ("tickers", tickers),
        ("tradable", tradable),
        ("slot_state", slot_state),
        ("close", close),
    ):
        if np.ndim(array) != 1 or np.shape(array)[0] != n_slots:
            raise ValueError(
                f"{name} has shape {np.shape(array)}; the rule is ({n_slots},), one entry per slot"
            )
    if tradable.dtype != np.bool_:
        raise ValueError(f"tradable has dtype {tradable.dtype}; the rule is bool")
    bad_state = ~np.isin(slot_state, (SLOT_PADDING, SLOT_ACTIVE, SLOT_ARCHIVE))
    if bad_state.any():
        raise ValueError(
            f"slot_state breaks the rule 'state in (0, 1, 2)' at slot {int(np.argmax(bad_state))}"
        )
    priced = np.isfinite(close) & (close > 0)
    bad_trade = tradable & ((slot_state != SLOT_ACTIVE) | ~priced)
    if bad_trade.any():
        raise ValueError(
            "tradable breaks the rule 'only active slots with a price > 0' at slot "
            f"{int(np.argmax(bad_trade))}"
        )
    return n_slots


def call_threshold(tradable: np.ndarray, fraction_of_equal_weight: float, absolute: float = 0.0) -> float:
    """The session's BUY/SELL threshold: ``absolute`` when > 0, else ``fraction_of_equal_weight`` of an
    equal-weight position over the session's tradable names (``fraction / n_tradable``), so a call means the
    same move relative to a typical position whether 500 or 3,000 names are tradable.

    :param tradable: bool [S] the session's tradable slots.
    :param fraction_of_equal_weight: share of ``1 / n_tradable``, in (0, 1].
    :param absolute: a fixed threshold overriding the scaled one when > 0.
    """
    if absolute > 0:
        return absolute
    if not 0.0 < fraction_of_equal_weight <= 1.0:
        raise ValueError(f"fraction_of_equal_weight={fraction_of_equal_weight!r} breaks the rule 0 < f <= 1")
    n_tradable = int(np.count_nonzero(tradable))
    if n_tradable == 0:
        raise ValueError("no tradable slot on the session: a call threshold needs at least one")
    return fraction_of_equal_weight / n_tradable


def recommend(
    target_weights: np.ndarray,
    current_weights: np.ndarray,
    tradable: np.ndarray,
    slot_state: np.ndarray,
    tickers: np.ndarray,
    close: np.ndarray,
    model_version: str,
    slot_map_version: str,
    as_of: dt.date | str | pd.Timestamp,
    threshold: float = DEFAULT_THRESHOLD,
) -> pd.DataFrame:
    """One recommendation per ticker that is active, held or targeted on ``as_of`` (padding never appears).

    ``delta = target - current``. The action is BUY if ``delta > threshold``, SELL if ``-delta > threshold``,
    else HOLD, then restricted to what can be executed: only ``tradable`` slots can be BUY; a SELL needs a
    price > 0 today (so archived names are SELL or HOLD, and names without a price are HOLD).

    Confidence, in [0, 1], is read from the policy's output, whose target weights are its softmax
    probabilities: BUY ``target / max slot target`` (1 for the top pick, ``exp(score - top score)`` for
    softmax weights, so increasing in the score and in ``delta`` for a given current weight); SELL
    ``(current - target) / current``, the share of the position sold (1 for a full exit, increasing in
    ``|delta|``); HOLD ``max(0, 1 - |delta| / threshold)``, the margin left before a trade would be called
    (0 for a name held only because it cannot trade). Rank orders rows by target weight, largest first
    (ties by ticker), starting at 1.

    :param target_weights: float [S + 1] the policy's target weights, slots then cash, summing to 1.
    :param current_weights: float [S + 1] the portfolio's weights at today's prices, slots then cash.
    :param tradable: bool [S] slots that may be bought today (active and priced).
    :param slot_state: int [S] 0 padding, 1 active, 2 archive.
    :param tickers: object [S] ticker of each slot ("" for padding).
    :param close: float [S] today's close, NaN where there is none.
    :param model_version: version of the policy that produced the targets.
    :param slot_map_version: version of the slot map the arrays are aligned on.
    :param as_of: the session the recommendation is for (trades at its close).
    :param threshold: minimum weight change that makes a trade, 0 < threshold < 1 (default 0.005).
    :return: frame with RECOMMENDATION_COLUMNS, sorted by rank.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold!r} breaks the rule 0 < threshold < 1")
    for name, version in (("model_version", model_version), ("slot_map_version", slot_map_version)):
        if not isinstance(version, str) or not version:
            raise ValueError(f"{name}={version!r} breaks the rule: a non-empty string")
    tickers = np.asarray(tickers, dtype=object)
    tradable = np.asarray(tradable)
    slot_state = np.asarray(slot_state)
    close = np.asarray(close, dtype=np.float64)
    n_slots = _check_slot_arrays(tradable, slot_state, tickers, close)
    target = _check_weights("target_weights", target_weights, n_slots)[:-1]
    current = _check_weights("current_weights", current_weights, n_slots)[:-1]
    padding = slot_state == SLOT_PADDING
    for name, weights in (("target_weights", target), ("current_weights", current)):
        if (padding & (weights > 0)).any():
            slot = int(np.argmax(padding & (weights > 0)))
            raise ValueError(f"{name} breaks the rule 'padding slots weigh 0' at slot {slot}")
    rows = np.flatnonzero(~padding & ((slot_state == SLOT_ACTIVE) | (current > 0) | (target > 0)))
    names = tickers[rows]
    bad_name = [
        int(slot) for slot, name in zip(rows, names, strict=True) if not isinstance(name, str) or not name
    ]
    if bad_name:
        raise ValueError(f"tickers breaks the rule 'non-padding slots have a ticker' at slot {bad_name[0]}")
    duplicated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(duplicated):
        raise ValueError(f"tickers breaks the rule 'one slot per ticker': {sorted(set(duplicated))[:5]}")

    cur, tgt, price = current[rows], target[rows], close[rows]
    delta = tgt - cur
    can_buy = tradable[rows]
    can_sell = np.isfinite(price) & (price > 0)
    buy = (delta > threshold) & can_buy
    sell = (-delta > threshold) & can_sell
    action = np.where(buy, BUY, np.where(sell, SELL, HOLD))
    top = float(target.max(initial=0.0))
    confidence = np.where(
        buy,
        np.divide(tgt, top, out=np.zeros_like(tgt), where=top > 0),
        np.where(
            sell,
            np.divide(-delta, cur, out=np.zeros_like(cur), where=sell & (cur > 0)),
            np.maximum(0.0, 1.0 - np.abs(delta) / threshold),
        ),
    )
    frame = pd.DataFrame(
        {
            "ticker": names,
            "slot": rows.astype(np.int64),
            "action": action.astype(object),
            "current_weight": cur,
            "target_weight": tgt,
            "delta": delta,
            "confidence": np.clip(confidence, 0.0, 1.0),
            "price": price,
        }
    )
    frame = frame.sort_values(["target_weight", "ticker"], ascending=[False, True], kind="stable")
    frame["rank"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["model_version"] = model_version
    frame["slot_map_version"] = slot_map_version
    frame["date"] = pd.Timestamp(as_of).tz_localize(None).normalize()
    return frame[RECOMMENDATION_COLUMNS].reset_index(drop=True)
