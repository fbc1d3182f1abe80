"""Backtest baselines against hand-computed values, the gates' verdicts and reasons, the rollback triggers,
and the out-of-sample rule."""

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.backtest import (
    LeakageError,
    SessionData,
    buy_and_hold,
    check_out_of_sample,
    equal_weight,
    run_policy,
    starting_book,
)
from magikarp_assets.core.calendar import previous_trading_day, trading_days
from magikarp_assets.core.gates import GateThresholds, RollbackTriggers, evaluate_gate, rollback_check
from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_ARCHIVE
from magikarp_assets.core.trading import TradingCosts
from magikarp_assets.core.windows import model_windows

DAYS = trading_days("2016-06-01", "2016-06-06")  # 4 sessions
START = previous_trading_day(DAYS[0])
COSTS_B, COSTS_S = 0.001, 0.002


def _costs() -> TradingCosts:
    return TradingCosts(COSTS_B, COSTS_S)


def test_qqq_buy_and_hold_equals_the_hand_computed_values():
    prices = pd.Series([100.0, 101.0, 99.0, 103.0, 104.0], index=DAYS.insert(0, START))
    result = buy_and_hold(prices, DAYS, 1_000.0, _costs())
    # Day 1: all cash buys QQQ at 101 net of the 0.1 % cost: W + 0.001 W = 1000.
    invested = 1_000.0 / 1.001
    expected = [1_000.0, invested, invested * 99 / 101, invested * 103 / 101, invested * 104 / 101]
    np.testing.assert_allclose(result.series["value"], expected, rtol=1e-12)
    assert result.series["costs"].tolist() == pytest.approx([0, 0.001 * invested, 0, 0, 0], rel=1e-12)
    assert result.metrics["cumulative_return"] == pytest.approx(expected[-1] / 1_000.0 - 1, rel=1e-12)
    assert result.metrics["benchmark_cumulative_return"] == pytest.approx(0.04, rel=1e-12)


def _session(day, close, state, tickers):
    close = np.asarray(close, dtype=float)
    state = np.asarray(state, dtype=np.int8)
    tensor = {
        "features": np.zeros((len(close), 32), np.float32),
        "tradable": np.isfinite(close) & (state == SLOT_ACTIVE),
        "close": close,
        "slot_state": state,
    }
    return SessionData(day, tensor, np.asarray(tickers, dtype=object), "sm")


def test_equal_weight_equals_the_hand_computed_values_and_sells_archived_names():
    tickers = ["A", "B", "C", ""]
    sessions = [
        _session(DAYS[0], [10.0, 20.0, 40.0, np.nan], [1, 1, 1, 0], tickers),
        _session(DAYS[1], [11.0, 20.0, 40.0, np.nan], [1, 1, SLOT_ARCHIVE, 0], tickers),
    ]
    bench = pd.Series([1.0, 1.0, 1.0], index=DAYS[:2].insert(0, START))
    result = run_policy(sessions, equal_weight(), starting_book(900.0, DAYS[0]), _costs(), bench)
    # Day 1: buy a third of W in each of A, B, C with W * 1.001 = 900 (no sales).
    w1 = 900.0 / 1.001
    # Day 2: A rose 10 %: holdings A 1.1 w1/3, B w1/3, C w1/3. C is archived: sold whole at 0.2 %; A and B
    # (both under W'/2) are bought up to half of W' each at 0.1 %:
    # W' = V - s * held_c - b * (W'/2 - held_a) - b * (W'/2 - held_b).
    held_a, held_b, held_c = 1.1 * w1 / 3, w1 / 3, w1 / 3
    value_before = held_a + held_b + held_c
    w2 = (value_before - COSTS_S * held_c + COSTS_B * (held_a + held_b)) / (1 + COSTS_B)
    np.testing.assert_allclose(result.series["value"], [900.0, w1, w2], rtol=1e-12)
    assert result.series["turnover"].iloc[1] == pytest.approx(w1 / 900.0, rel=1e-12)
    assert result.series["value_before"].iloc[2] == pytest.approx(value_before, rel=1e-12)


GOOD = {"sharpe_ratio": 1.2, "max_drawdown": -0.05, "average_turnover": 0.1, "cumulative_return": 0.03}


def test_gate_passes_within_limits_and_states_every_rule():
    gate = evaluate_gate("backtest", GOOD, {"sharpe_ratio": 1.5}, "production model v1", GateThresholds())
    assert gate.passed and len(gate.reasons) == 4 and not gate.failures
    assert "Sharpe >= production model v1's Sharpe 1.5000 - margin 0.5" in gate.reasons[1]


@pytest.mark.parametrize(
    ("change", "rule", "value", "limit"),
    [
        ({"sharpe_ratio": 0.9}, "Sharpe >=", "0.9000", "1.0000"),
        ({"max_drawdown": -0.25}, "max drawdown", "-0.2500", "-0.2000"),
        ({"average_turnover": 0.8}, "turnover", "0.8000", "0.5000"),
        ({"cumulative_return": float("nan")}, "no NaN", "1.0000", "0.0000"),
    ],
)
def test_gate_fails_naming_the_rule_the_value_and_the_limit(change, rule, value, limit):
    gate = evaluate_gate("backtest", {**GOOD, **change}, {"sharpe_ratio": 1.5}, "prod", GateThresholds())
    assert not gate.passed
    (failure,) = gate.failures
    assert failure.startswith("FAILED: ") and rule in failure
    assert f"value {value}" in failure and f"limit {limit}" in failure


def test_thresholds_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAGIKARP_SHADOW_GATE_MAX_DRAWDOWN", "0.07")
    monkeypatch.setenv("MAGIKARP_ROLLBACK_WINDOW", "15")
    assert GateThresholds.from_env("MAGIKARP_SHADOW_GATE").max_drawdown == 0.07
    assert GateThresholds.from_env("MAGIKARP_BACKTEST_GATE").max_drawdown == 0.20
    assert RollbackTriggers.from_env().window == 15
    monkeypatch.setenv("MAGIKARP_ROLLBACK_WINDOW", "many")
    with pytest.raises(ValueError, match="MAGIKARP_ROLLBACK_WINDOW='many'"):
        RollbackTriggers.from_env()


def test_rollback_triggers_on_drawdown_and_on_sharpe_far_below_qqq():
    days = trading_days("2016-06-01", "2016-07-29")
    steady = pd.Series(100.0 * 1.001 ** np.arange(len(days)), index=days)
    assert rollback_check(steady, steady, RollbackTriggers()).passed
    crashed = steady.copy()
    crashed.iloc[-1] = crashed.iloc[-2] * 0.85
    verdict = rollback_check(crashed, steady, RollbackTriggers())
    assert not verdict.passed and "drawdown over the last 20 session(s)" in verdict.failures[0]
    # An old crash outside the 20-session window no longer triggers.
    old = steady.copy()
    old.iloc[5:] *= 0.8
    assert rollback_check(old, old, RollbackTriggers()).passed
    falling = pd.Series(100.0 * 0.999 ** np.arange(len(days)), index=days)
    noisy_up = steady * (1 + 0.001 * np.sin(np.arange(len(days))))
    verdict = rollback_check(falling, noisy_up, RollbackTriggers(sharpe_gap=3.0))
    assert not verdict.passed and "Sharpe" in verdict.failures[0]


@pytest.mark.parametrize("month", ["2016-03-01", "2016-09-01", "2017-01-01"])
@pytest.mark.parametrize(("sessions", "months"), [(10, 1), (252, 2), (120, 3)])
def test_the_backtest_window_never_overlaps_training(month, sessions, months):
    windows = model_windows(month, sessions, months)
    assert windows.training[-1] < windows.backtest[0] and not set(windows.training) & set(windows.backtest)
    check_out_of_sample("v", windows.training[-1], windows.backtest)
    with pytest.raises(LeakageError, match="strictly out of sample"):
        check_out_of_sample("v", windows.backtest[0], windows.backtest)
