"""Shares mode reproduces FinRL 0.3.7's StockTradingEnv step for step on real S&P 500 prices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv
from magikarp_assets.core.spec import N_FEATURES
from magikarp_tests.finrl_peer import finrl_frame, make_finrl_env

SAMPLE = Path(__file__).resolve().parents[2] / "magikarp_assets/data/sample/sp500_prices_5yr.parquet"
N_STOCKS = 30
N_SESSIONS = 90
FIRST_SESSION = "2016-03-01"
TECH = ["macd", "ret_1"]
Market = tuple[pd.DatetimeIndex, list[str], np.ndarray, dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def market() -> Market:
    """30 tickers priced on every one of 90 consecutive sessions, with two indicators per stock."""
    prices = pd.read_parquet(SAMPLE, columns=["date", "ticker", "close"])
    wide = prices.pivot(index="date", columns="ticker", values="close").sort_index()
    wide = wide.loc[FIRST_SESSION:].iloc[:N_SESSIONS]
    wide = wide.loc[:, wide.notna().all()].iloc[:, :N_STOCKS]
    assert wide.shape == (N_SESSIONS, N_STOCKS)
    close = wide.to_numpy(dtype=np.float64)
    macd = (wide.ewm(span=12, adjust=False).mean() - wide.ewm(span=26, adjust=False).mean()).to_numpy()
    ret_1 = np.vstack([np.zeros((1, N_STOCKS)), np.diff(np.log(close), axis=0)])
    # FinRL reads the first indicator as a "cannot trade" flag when it equals True (1.0).
    assert not (macd == 1.0).any()
    return pd.DatetimeIndex(wide.index), list(wide.columns), close, {"macd": macd, "ret_1": ret_1}


def _episode(dates: pd.DatetimeIndex, close: np.ndarray, tech: dict[str, np.ndarray]) -> MarketEpisode:
    features = np.zeros((*close.shape, N_FEATURES), dtype=np.float32)
    for column, name in enumerate(TECH):
        features[:, :, column] = tech[name]
    return MarketEpisode(
        features=features,
        close=close,
        tradable=np.ones(close.shape, dtype=bool),
        slot_state=np.ones(close.shape, dtype=np.int8),
        dates=dates,
    )


def _run_both(
    market: Market, initial_amount: float, turbulence: np.ndarray | None, threshold: float | None, seed: int
) -> tuple[np.ndarray, list[tuple], object]:
    dates, tickers, close, tech = market
    ours = PortfolioEnv(
        _episode(dates, close, tech),
        mode="shares",
        initial_cash=initial_amount,
        hmax=100,
        reward_scaling=1e-4,
        turbulence=turbulence,
        turbulence_threshold=threshold,
    )
    peer = make_finrl_env(
        finrl_frame(dates, tickers, close, tech, turbulence),
        TECH,
        hmax=100,
        initial_amount=initial_amount,
        reward_scaling=1e-4,
        turbulence_threshold=threshold,
    )
    ours.reset(seed=seed)
    peer.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-0.7, 1.0, size=(len(dates) - 1, len(tickers)))
    n = len(tickers)
    trajectory = []
    for step, action in enumerate(actions.astype(np.float32)):
        _, reward, terminated, _, info = ours.step(action)
        state, peer_reward, peer_terminal, _, _ = peer.step(action)
        assert info["date"] == peer.date_memory[-1]
        np.testing.assert_array_equal(np.asarray(state[1 : n + 1]), close[step + 1])
        assert terminated == (step == len(actions) - 1) and not peer_terminal
        trajectory.append(
            (
                info["cash"],
                state[0],
                ours.shares.copy(),
                np.asarray(state[n + 1 : 2 * n + 1], dtype=float),
                info["portfolio_value"],
                peer.asset_memory[-1],
                reward,
                peer_reward,
            )
        )
    return actions, trajectory, peer


def _assert_same(trajectory: list) -> None:
    for step, (cash, peer_cash, shares, peer_shares, value, peer_value, reward, peer_reward) in enumerate(
        trajectory
    ):
        assert abs(cash - peer_cash) <= 1e-9 * abs(peer_cash), f"cash differs at step {step}"
        np.testing.assert_array_equal(shares, peer_shares, err_msg=f"holdings differ at step {step}")
        assert abs(value - peer_value) <= 1e-9 * abs(peer_value), f"total asset differs at step {step}"
        assert abs(reward - peer_reward) <= 1e-9 * abs(peer_value) * 1e-4, f"reward differs at step {step}"


def test_shares_mode_matches_finrl_with_cash_limited_buys(market: Market) -> None:
    actions, trajectory, peer = _run_both(
        market, initial_amount=300_000.0, turbulence=None, threshold=None, seed=7
    )
    _assert_same(trajectory)
    wanted = (actions.astype(np.float32) * 100).astype(int)
    done = np.asarray(peer.actions_memory)
    partial = (wanted > 0) & (done > 0) & (done < wanted)
    starved = (wanted > 0) & (done == 0)
    # The sequential cash rule was really exercised: partial fills and unaffordable names on many days.
    assert partial.any(axis=1).sum() >= 10
    assert starved.any(axis=1).sum() >= 10
    assert (done < 0).sum() >= 100  # and many sells


def test_shares_mode_matches_finrl_with_turbulence_liquidation(market: Market) -> None:
    _, _, close, _ = market
    turbulence = np.concatenate([[0.0], np.abs(np.diff(np.log(close), axis=0)).mean(axis=1)])
    threshold = float(np.quantile(turbulence, 0.85))
    assert turbulence[0] < threshold  # FinRL ignores day 0's turbulence; ours would not
    _, trajectory, _ = _run_both(
        market, initial_amount=1_000_000.0, turbulence=turbulence, threshold=threshold, seed=11
    )
    _assert_same(trajectory)
    liquidation_days = np.flatnonzero(turbulence[:-1] >= threshold)
    assert liquidation_days.size >= 5
    held_before = [trajectory[day - 1][2].sum() > 0 for day in liquidation_days if day > 0]
    assert sum(held_before) >= 5
    for day in liquidation_days:
        assert trajectory[day][2].sum() == 0, f"positions left after liquidation on day {day}"
