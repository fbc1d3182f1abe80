"""Recommendations follow the threshold rule, never call an unexecutable BUY and refuse malformed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.rl.accounting import target_weights
from magikarp_assets.core.signals import DEFAULT_THRESHOLD, RECOMMENDATION_COLUMNS, recommend
from magikarp_assets.core.spec import N_SLOTS, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING

# slot: ticker, state, close (NaN = no price today)
SLOTS = [
    ("AAA", SLOT_ACTIVE, 10.0),
    ("BBB", SLOT_ACTIVE, 20.0),
    ("CCC", SLOT_ACTIVE, 30.0),
    ("", SLOT_PADDING, np.nan),
    ("DDD", SLOT_ARCHIVE, 40.0),  # archived, priced: may only be sold
    ("EEE", SLOT_ACTIVE, np.nan),  # active, no price today: cannot trade
    ("FFF", SLOT_ARCHIVE, 50.0),  # archived and not held: no row
    ("GGG", SLOT_ACTIVE, 60.0),
]
TICKERS = np.array([s[0] for s in SLOTS], dtype=object)
STATE = np.array([s[1] for s in SLOTS], dtype=np.int8)
CLOSE = np.array([s[2] for s in SLOTS])
TRADABLE = (STATE == SLOT_ACTIVE) & np.isfinite(CLOSE)


def _weights(by_slot: dict[int, float]) -> np.ndarray:
    weights = np.zeros(len(SLOTS) + 1)
    for slot, weight in by_slot.items():
        weights[slot] = weight
    weights[-1] = 1.0 - weights[:-1].sum()
    return weights


def _recommend(target: dict[int, float], current: dict[int, float], **kwargs: object) -> pd.DataFrame:
    args: dict = {
        "target_weights": _weights(target),
        "current_weights": _weights(current),
        "tradable": TRADABLE,
        "slot_state": STATE,
        "tickers": TICKERS,
        "close": CLOSE,
        "model_version": "m-1",
        "slot_map_version": "sm-1",
        "as_of": "2016-03-01",
    }
    args.update(kwargs)
    return recommend(**args).set_index("ticker")


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        (0.0, 0.005, "HOLD"),  # exactly at the threshold: not a trade
        (0.0, 0.0051, "BUY"),
        (0.0, 0.0049, "HOLD"),
        (0.005, 0.0, "HOLD"),
        (0.0051, 0.0, "SELL"),
        (0.0049, 0.0, "HOLD"),
        (0.25, 0.30, "BUY"),
        (0.30, 0.25, "SELL"),
    ],
)
def test_threshold_rule(current: float, target: float, expected: str) -> None:
    assert DEFAULT_THRESHOLD == 0.005
    out = _recommend({1: target}, {1: current})
    assert out.loc["BBB", "action"] == expected
    assert out.loc["BBB", "delta"] == pytest.approx(target - current, abs=1e-15)


def test_custom_threshold_is_used() -> None:
    out = _recommend({1: 0.02}, {1: 0.0}, threshold=0.05)
    assert out.loc["BBB", "action"] == "HOLD"
    assert _recommend({1: 0.06}, {1: 0.0}, threshold=0.05).loc["BBB", "action"] == "BUY"


def test_archived_is_never_bought_but_can_be_sold() -> None:
    wants_more = _recommend({4: 0.30}, {4: 0.10})
    assert wants_more.loc["DDD", "action"] == "HOLD"
    assert wants_more.loc["DDD", "confidence"] == 0.0  # held only because it cannot be bought
    assert _recommend({4: 0.0}, {4: 0.10}).loc["DDD", "action"] == "SELL"


def test_untradable_names_are_never_bought_and_unpriced_names_hold() -> None:
    # EEE is active but has no price today: no BUY, and no SELL either (nothing to sell at).
    assert _recommend({5: 0.30}, {}).loc["EEE", "action"] == "HOLD"
    assert _recommend({5: 0.0}, {5: 0.30}).loc["EEE", "action"] == "HOLD"
    # AAA is priced but not tradable today (e.g. a halted name): it can be sold, not bought.
    halted = TRADABLE.copy()
    halted[0] = False
    assert _recommend({0: 0.30}, {}, tradable=halted).loc["AAA", "action"] == "HOLD"
    assert _recommend({0: 0.0}, {0: 0.30}, tradable=halted).loc["AAA", "action"] == "SELL"


def test_rows_cover_active_and_held_names_only() -> None:
    out = _recommend({0: 0.2}, {4: 0.1})
    assert sorted(out.index) == ["AAA", "BBB", "CCC", "DDD", "EEE", "GGG"]  # no padding, no FFF
    assert (
        list(
            recommend(
                _weights({}), _weights({}), TRADABLE, STATE, TICKERS, CLOSE, "m", "s", "2016-03-01"
            ).columns
        )
        == RECOMMENDATION_COLUMNS
    )


def test_confidence_rank_and_metadata() -> None:
    target = {0: 0.40, 1: 0.20, 2: 0.0, 7: 0.20, 4: 0.02}
    current = {0: 0.10, 1: 0.0, 2: 0.30, 4: 0.08, 7: 0.196}
    out = _recommend(target, current)
    assert out.loc["AAA", "action"] == "BUY" and out.loc["AAA", "confidence"] == 1.0  # top target
    assert out.loc["BBB", "confidence"] == pytest.approx(0.20 / 0.40)
    assert out.loc["CCC", "action"] == "SELL" and out.loc["CCC", "confidence"] == 1.0  # full exit
    assert out.loc["DDD", "action"] == "SELL" and out.loc["DDD", "confidence"] == pytest.approx(0.06 / 0.08)
    # GGG: |delta| = 0.004 < 0.005 -> HOLD with 1 - 0.004 / 0.005 = 0.2
    assert out.loc["GGG", "action"] == "HOLD" and out.loc["GGG", "confidence"] == pytest.approx(0.2)
    assert out.loc["EEE", "confidence"] == 1.0  # no change wanted at all
    assert out["confidence"].between(0, 1).all()
    # rank: target desc, ties (BBB, GGG at 0.20; CCC, EEE at 0) by ticker
    assert out.sort_values("rank").index.tolist() == ["AAA", "BBB", "GGG", "DDD", "CCC", "EEE"]
    assert out.loc["GGG", "price"] == 60.0 and np.isnan(out.loc["EEE", "price"])
    assert (out["model_version"] == "m-1").all() and (out["slot_map_version"] == "sm-1").all()
    assert (out["date"] == pd.Timestamp("2016-03-01")).all()
    assert out.loc["DDD", "slot"] == 4


def test_confidence_grows_with_the_size_of_the_trade() -> None:
    buys = [_recommend({0: 0.5, 1: w}, {}).loc["BBB", "confidence"] for w in (0.01, 0.1, 0.3, 0.5)]
    sells = [_recommend({1: 0.5 - d}, {1: 0.5}).loc["BBB", "confidence"] for d in (0.01, 0.1, 0.3, 0.5)]
    assert buys == sorted(buys) and buys[0] < buys[-1]
    assert sells == sorted(sells) and sells[0] < sells[-1]


def test_policy_output_at_full_width_gives_consistent_calls() -> None:
    rng = np.random.default_rng(3)
    state = np.full(N_SLOTS, SLOT_PADDING, dtype=np.int8)
    state[:3000], state[3000:3300] = SLOT_ACTIVE, SLOT_ARCHIVE
    close = np.where(state != SLOT_PADDING, rng.uniform(5, 500, N_SLOTS), np.nan)
    close[rng.choice(3300, 50, replace=False)] = np.nan
    tradable = (state == SLOT_ACTIVE) & np.isfinite(close)
    tickers = np.array([f"T{i}" if s else "" for i, s in enumerate(state)], dtype=object)
    current = np.zeros(N_SLOTS + 1)
    held = rng.choice(3300, 40, replace=False)
    current[held] = 0.9 / 40
    current[-1] = 0.1
    sell_only = np.where(~tradable & np.isfinite(close), current[:-1], 0.0)
    frozen = np.where(~np.isfinite(close), current[:-1], 0.0)
    target = target_weights(rng.normal(0, 3, N_SLOTS), 0.5, tradable, sell_only, frozen, temperature=2.0)
    out = recommend(target, current, tradable, state, tickers, close, "m", "s", "2016-03-01")
    assert len(out) == 3000 + np.count_nonzero(state[held] == SLOT_ARCHIVE)
    assert tradable[out.loc[out["action"] == "BUY", "slot"]].all()
    assert (out.loc[out["slot"] >= 3000, "action"] != "BUY").all()
    assert (out.loc[~np.isfinite(out["price"]), "action"] == "HOLD").all()
    assert out["confidence"].between(0, 1).all()
    assert out["rank"].tolist() == list(range(1, len(out) + 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_weights": np.full(5, 0.2)}, "target_weights has shape"),
        ({"close": CLOSE[:-1]}, "close has shape"),
        ({"tickers": TICKERS[:-1]}, "has shape"),
        ({"target_weights": np.append(np.full(len(SLOTS), np.nan), 1.0)}, "target_weights breaks the rule"),
        ({"current_weights": _weights({0: 0.5}) * 0.9}, "current_weights sums to"),
        (
            {"target_weights": _weights({0: 0.5}) + np.append(np.zeros(len(SLOTS)), 1e-8)},
            "target_weights sums",
        ),
        ({"current_weights": _weights({3: 0.1})}, "padding slots weigh 0"),
        ({"target_weights": _weights({0: -0.1})}, "must be >= 0"),
        ({"tradable": TRADABLE | (STATE == SLOT_ARCHIVE)}, "only active slots"),
        ({"tradable": TRADABLE.astype(int)}, "tradable has dtype"),
        ({"threshold": 0.0}, "threshold"),
        ({"model_version": ""}, "model_version"),
    ],
)
def test_malformed_inputs_are_refused_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _recommend({}, {}, **change)


def test_duplicate_tickers_are_refused() -> None:
    tickers = TICKERS.copy()
    tickers[1] = "AAA"
    with pytest.raises(ValueError, match="one slot per ticker"):
        _recommend({}, {}, tickers=tickers)


def test_the_daily_call_threshold_scales_with_the_tradable_universe() -> None:
    from magikarp_assets.core.signals import call_threshold

    assert call_threshold(np.ones(500, bool), 0.5) == pytest.approx(0.001)  # 0.1 % over 500 names
    assert call_threshold(np.r_[np.ones(3000, bool), np.zeros(600, bool)], 0.5) == pytest.approx(0.5 / 3000)
    assert call_threshold(np.ones(500, bool), 0.5, absolute=0.004) == 0.004
    with pytest.raises(ValueError, match="no tradable slot"):
        call_threshold(np.zeros(10, bool), 0.5)
    with pytest.raises(ValueError, match="0 < f <= 1"):
        call_threshold(np.ones(10, bool), 1.5)
