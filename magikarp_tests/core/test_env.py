"""The RL environment trades only what the slot masks allow, charges costs exactly and conserves value."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.env_checker import check_env

from magikarp_assets.core.rl import (
    COL_SELLABLE,
    COL_TRADABLE,
    COL_WEIGHT,
    N_SLOT_COLUMNS,
    MarketEpisode,
    PortfolioEnv,
    finrl_share_trades,
    last_known_prices,
    rebalance_to_weights,
    target_weights,
)
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING

N_DAYS, N_SLOTS = 40, 12
NEVER_TRADABLE = [6, 10, 11]  # padding; active but not tradable; archived and never held
GAP_SLOT, GAP_DAYS = 7, range(10, 20)  # active, no price on these days
LISTED_SLOT, LISTED_DAY = 8, 15  # padding with no price before its listing day
ARCHIVED_SLOT, ARCHIVE_DAY, DELIST_DAY = 9, 10, 30  # archived from day 10, no price from day 30
Policy = Callable[[int, np.random.Generator], np.ndarray]


def _episode(seed: int = 0) -> MarketEpisode:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (N_DAYS, N_SLOTS)), axis=0))
    state = np.full((N_DAYS, N_SLOTS), SLOT_ACTIVE, dtype=np.int8)
    state[:, 6] = SLOT_PADDING
    close[:, 6] = np.nan
    close[list(GAP_DAYS), GAP_SLOT] = np.nan
    state[:LISTED_DAY, LISTED_SLOT] = SLOT_PADDING
    close[:LISTED_DAY, LISTED_SLOT] = np.nan
    state[ARCHIVE_DAY:, ARCHIVED_SLOT] = SLOT_ARCHIVE
    close[DELIST_DAY:, ARCHIVED_SLOT] = np.nan
    state[:, 11] = SLOT_ARCHIVE
    tradable = (state == SLOT_ACTIVE) & np.isfinite(close)
    tradable[:, 10] = False
    features = rng.normal(size=(N_DAYS, N_SLOTS, N_FEATURES)).astype(np.float32)
    dates = pd.bdate_range("2016-01-04", periods=N_DAYS)
    return MarketEpisode(features, close, tradable, state, dates)


def _favouring(slots: list[int], until: int, mode: str) -> Policy:
    """Random actions, but strongly buying ``slots`` before day ``until``."""

    def policy(day: int, rng: np.random.Generator) -> np.ndarray:
        size = N_SLOTS + 1 if mode == "weights" else N_SLOTS
        action = rng.uniform(-1, 1, size).astype(np.float32)
        if day < until:
            action[slots] = 1.0
        return action

    return policy


def _roll(env: PortfolioEnv, policy: Policy, seed: int = 0) -> list[dict]:
    """Play one episode; per step the day, shares before/after, value before and the info dict."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    steps, terminated = [], False
    while not terminated:
        day, before, value = env.day, env.shares.copy(), info["portfolio_value"]
        _, _, terminated, truncated, info = env.step(policy(day, rng))
        assert not truncated
        steps.append({"day": day, "before": before, "after": env.shares.copy(), "value": value, "info": info})
    assert len(steps) == N_DAYS - 1
    return steps


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_check_env_passes(mode: str) -> None:
    check_env(PortfolioEnv(_episode(), mode=mode), warn=False)


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_masked_slots_are_never_bought(mode: str) -> None:
    episode = _episode()
    for seed in range(5):
        steps = _roll(PortfolioEnv(episode, mode=mode), _favouring(NEVER_TRADABLE, N_DAYS, mode), seed)
        for step in steps:
            assert (step["after"][NEVER_TRADABLE] == 0).all()
            if step["day"] < LISTED_DAY:
                assert step["after"][LISTED_SLOT] == 0
        assert any(step["after"][:6].sum() > 0 for step in steps)  # the rest did trade


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_archived_slot_can_only_be_sold(mode: str) -> None:
    policy = _favouring([ARCHIVED_SLOT], ARCHIVE_DAY, mode)
    steps = _roll(PortfolioEnv(_episode(), mode=mode), policy, seed=3)
    assert steps[ARCHIVE_DAY]["before"][ARCHIVED_SLOT] > 0
    archived = [s for s in steps if s["day"] >= ARCHIVE_DAY]
    assert all(s["after"][ARCHIVED_SLOT] <= s["before"][ARCHIVED_SLOT] for s in archived)
    assert any(s["after"][ARCHIVED_SLOT] < s["before"][ARCHIVED_SLOT] for s in archived)


def test_costs_charged_exactly_in_shares_mode() -> None:
    close = np.array([[10.0, 20.0], [11.0, 20.0], [12.0, 21.0]])
    features = np.zeros((3, 2, N_FEATURES), dtype=np.float32)
    tradable = np.ones((3, 2), dtype=bool)
    state = np.ones((3, 2), dtype=np.int8)
    episode = MarketEpisode(features, close, tradable, state, pd.bdate_range("2016-01-04", periods=3))
    env = PortfolioEnv(episode, mode="shares", initial_cash=1500.0, hmax=100)
    env.reset()
    # Both want 100 shares; FinRL's order buys slot 1 first: 1500 // 20.02 = 74 shares, then 1 of slot 0.
    _, _, _, _, info = env.step(np.array([1.0, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(env.shares, [1.0, 74.0])
    assert info["cash"] == pytest.approx(1500.0 - 20 * 74 * 1.001 - 10 * 1 * 1.001, rel=1e-15)
    assert info["costs"] == pytest.approx(0.001 * (20 * 74 + 10), rel=1e-12)
    assert info["turnover"] == pytest.approx((20 * 74 + 10) / 1500.0, rel=1e-12)
    # Day 1: sell 1 share of slot 0 at 11 and 50 of slot 1 at 20 (min(|action| * hmax, held)).
    _, reward, terminated, _, info = env.step(np.array([-1.0, -0.5], dtype=np.float32))
    np.testing.assert_array_equal(env.shares, [0.0, 24.0])
    cash_before = 1500.0 - 20 * 74 * 1.001 - 10 * 1.001
    cash = cash_before + (11 * 1 + 20 * 50) * 0.999
    assert info["cash"] == pytest.approx(cash, rel=1e-12)
    assert info["costs"] == pytest.approx(0.001 * (11 + 20 * 50), rel=1e-12)
    assert info["portfolio_value"] == pytest.approx(cash + 24 * 21.0, rel=1e-12)
    value_before = cash_before + 1 * 11.0 + 74 * 20.0
    assert reward == pytest.approx((cash + 24 * 21.0 - value_before) * 1e-4, rel=1e-9)
    assert terminated


def test_costs_charged_exactly_in_weights_mode() -> None:
    # From all cash, buying weights w costs b * sum(w) * V', so V' = V / (1 + b * sum(w)).
    target = target_weights(np.array([0.5, -0.2, 0.9]), 0.0, np.ones(3, dtype=bool), np.zeros(3))
    expected = np.exp([0.5, -0.2, 0.9, 0.0]) / np.exp([0.5, -0.2, 0.9, 0.0]).sum()
    np.testing.assert_allclose(target, expected, rtol=1e-14)
    no = np.zeros(3, dtype=bool)
    result = rebalance_to_weights(1000.0, np.zeros(3), target, no, no, 0.001, 0.002)
    wealth = 1000.0 / (1 + 0.001 * target[:3].sum())
    np.testing.assert_allclose(result.positions, target[:3] * wealth, rtol=1e-13)
    assert result.costs == pytest.approx(1000.0 - wealth, rel=1e-10)
    assert result.cash == pytest.approx(target[3] * wealth, rel=1e-12)
    # Mixed buys and sells: costs are exactly the rates times the value traded, and targets are met.
    held = np.array([500.0, 100.0, 0.0])
    result = rebalance_to_weights(400.0, held, target, no, no, 0.001, 0.002)
    delta = result.positions - held
    assert result.costs == pytest.approx(0.001 * delta[delta > 0].sum() - 0.002 * delta[delta < 0].sum())
    wealth = 1000.0 - result.costs
    np.testing.assert_allclose(result.positions, target[:3] * wealth, rtol=1e-13)
    assert result.cash == pytest.approx(target[3] * wealth, rel=1e-12)


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_value_is_conserved_through_trades(mode: str) -> None:
    episode = _episode()
    prices = np.nan_to_num(last_known_prices(episode.close))
    for seed in range(3):
        policy = _favouring([ARCHIVED_SLOT, GAP_SLOT], ARCHIVE_DAY, mode)
        for step in _roll(PortfolioEnv(episode, mode=mode), policy, seed):
            info, day = step["info"], step["day"]
            after_trades = info["cash"] + step["after"] @ prices[day] + info["costs"]
            assert after_trades == pytest.approx(step["value"], rel=1e-12)
            assert info["portfolio_value"] == pytest.approx(info["cash"] + step["after"] @ prices[day + 1])
            assert info["cash"] >= -1e-9 * step["value"]


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_held_slot_without_price_is_frozen_and_valued_at_last_price(mode: str) -> None:
    episode = _episode()
    env = PortfolioEnv(episode, mode=mode)
    steps = _roll(env, _favouring([GAP_SLOT], GAP_DAYS.start, mode), seed=1)
    last_price = episode.close[GAP_DAYS.start - 1, GAP_SLOT]
    held = steps[GAP_DAYS.start]["before"][GAP_SLOT]
    assert held > 0
    for day in GAP_DAYS:
        assert steps[day]["after"][GAP_SLOT] == held
    env.reset()
    for day in range(GAP_DAYS.stop):
        obs, _, _, _, info = env.step(
            _favouring([GAP_SLOT], GAP_DAYS.start, mode)(day, np.random.default_rng())
        )
        if env.day in GAP_DAYS:
            slot = obs["slots"][GAP_SLOT]
            assert slot[COL_TRADABLE] == 0 and slot[COL_SELLABLE] == 0
            weight = env.shares[GAP_SLOT] * last_price / info["portfolio_value"]
            assert slot[COL_WEIGHT] == pytest.approx(weight, rel=1e-6) and weight > 0


def test_target_weights_sum_to_one_and_respect_masks() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        tradable = rng.random(50) < 0.6
        cap = np.where(~tradable & (rng.random(50) < 0.3), rng.uniform(0, 0.05, 50), 0.0)
        frozen = np.where(~tradable & (cap == 0) & (rng.random(50) < 0.2), rng.uniform(0, 0.02, 50), 0.0)
        weights = target_weights(rng.uniform(-1, 1, 50), rng.uniform(-1, 1), tradable, cap, frozen, 3.0)
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
        assert (weights >= 0).all() and weights[-1] > 0
        masked = ~tradable & (cap == 0) & (frozen == 0)
        assert (weights[:-1][masked] == 0).all()
        assert (weights[:-1][cap > 0] <= cap[cap > 0]).all()
        np.testing.assert_array_equal(weights[:-1][frozen > 0], frozen[frozen > 0])


def test_observation_layout() -> None:
    episode = _episode()
    env = PortfolioEnv(episode, mode="shares")
    obs, _ = env.reset()
    assert obs["slots"].shape == (N_SLOTS, N_SLOT_COLUMNS) and obs["slots"].dtype == np.float32
    np.testing.assert_array_equal(obs["slots"][:, :N_FEATURES], episode.features[0])
    np.testing.assert_array_equal(obs["slots"][:, COL_TRADABLE], episode.tradable[0])
    assert obs["portfolio"].tolist() == [1.0, pytest.approx(episode.tradable[0].mean())]
    obs, _, _, _, info = env.step(np.ones(N_SLOTS, dtype=np.float32))
    held = env.shares > 0
    np.testing.assert_array_equal(obs["slots"][:, COL_SELLABLE], held & np.isfinite(episode.close[1]))
    weights = obs["slots"][:, COL_WEIGHT]
    assert weights.sum() + obs["portfolio"][0] == pytest.approx(1.0, abs=1e-6)
    assert obs["portfolio"][0] == pytest.approx(info["cash"] / info["portfolio_value"], rel=1e-6)


def test_weights_mode_reward_is_log_growth() -> None:
    env = PortfolioEnv(_episode(), mode="weights")
    _, info = env.reset()
    value = info["portfolio_value"]
    _, reward, _, _, info = env.step(np.linspace(-1, 1, N_SLOTS + 1, dtype=np.float32))
    assert reward == pytest.approx(np.log(info["portfolio_value"] / value), rel=1e-12)
    assert info["costs"] > 0 and 0 < info["turnover"] <= 1


def test_permuting_slots_permutes_observations_and_keeps_values() -> None:
    episode = _episode()
    perm = np.random.default_rng(9).permutation(N_SLOTS)
    permuted = MarketEpisode(
        episode.features[:, perm],
        episode.close[:, perm],
        episode.tradable[:, perm],
        episode.slot_state[:, perm],
        episode.dates,
    )
    env, env_p = PortfolioEnv(episode), PortfolioEnv(permuted)
    obs, _ = env.reset()
    obs_p, _ = env_p.reset()
    rng = np.random.default_rng(4)
    for _ in range(N_DAYS - 1):
        np.testing.assert_allclose(obs_p["slots"], obs["slots"][perm], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(obs_p["portfolio"], obs["portfolio"], rtol=1e-6)
        action = rng.uniform(-1, 1, N_SLOTS + 1).astype(np.float32)
        obs, _, _, _, info = env.step(action)
        obs_p, _, _, _, info_p = env_p.step(np.append(action[:-1][perm], action[-1]))
        assert info_p["portfolio_value"] == pytest.approx(info["portfolio_value"], rel=1e-12)
        np.testing.assert_allclose(env_p.shares, env.shares[perm], rtol=1e-12)


def test_episode_rejects_tradable_padding_with_date_and_slot() -> None:
    episode = _episode()
    tradable = episode.tradable.copy()
    tradable[3, 6] = True
    with pytest.raises(ValueError, match=r"tradable needs an active slot with a price.*2016-01-07 slot 6"):
        MarketEpisode(episode.features, episode.close, tradable, episode.slot_state, episode.dates)


def test_stepping_past_the_last_day_is_refused() -> None:
    env = PortfolioEnv(_episode(), mode="shares")
    _roll(env, _favouring([], 0, "shares"))
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(N_SLOTS, dtype=np.float32))


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_turbulence_day_sells_every_priced_position_and_buys_nothing(mode: str) -> None:
    episode = _episode()
    turbulence = np.zeros(N_DAYS)
    turbulence[[8, 12]] = 5.0
    env = PortfolioEnv(episode, mode=mode, turbulence=turbulence, turbulence_threshold=1.0)
    steps = _roll(env, _favouring([GAP_SLOT, 0, 1], N_DAYS, mode), seed=2)
    for day in (8, 12):
        before, after = steps[day]["before"], steps[day]["after"]
        priced = np.isfinite(episode.close[day])
        assert before[priced].sum() > 0
        assert (after[priced] == 0).all()
        np.testing.assert_array_equal(after[~priced], before[~priced])  # held without a price: untouched
    assert steps[12]["before"][GAP_SLOT] > 0  # day 12 falls in the price gap of a held slot


def _finrl_loop(
    cash: float,
    shares: np.ndarray,
    prices: np.ndarray,
    actions: np.ndarray,
    buyable: np.ndarray,
    sellable: np.ndarray,
    cost: float,
    liquidate: bool,
) -> tuple[float, np.ndarray]:
    """FinRL StockTradingEnv.step's trade loops, name by name with FinRL's own float operations."""
    shares, order = shares.copy(), np.argsort(actions)
    for i in order[: int((actions < 0).sum())]:
        if sellable[i]:
            sold = shares[i] if liquidate else min(-actions[i], shares[i])
            cash += prices[i] * sold * (1 - cost)
            shares[i] -= sold
    for i in [] if liquidate else order[::-1][: int((actions > 0).sum())]:
        if buyable[i]:
            bought = min(cash // (prices[i] * (1 + cost)), actions[i])
            cash -= prices[i] * bought * (1 + cost)
            shares[i] += bought
    return cash, shares


@pytest.mark.parametrize("cash", [0.0, 40.0, 3_000.0, 150_000.0, 1e9])
def test_share_trades_equal_finrl_loop_bit_for_bit(cash: float) -> None:
    rng = np.random.default_rng(int(cash))
    for case in range(40):
        n = 300
        prices = rng.uniform(1.0, 400.0, n)
        shares = np.where(rng.random(n) < 0.4, rng.integers(1, 150, n), 0).astype(np.float64)
        actions = rng.integers(-100, 101, n) // rng.choice([1, 10, 50])  # many ties
        buyable, priced = rng.random(n) < 0.8, rng.random(n) < 0.9
        prices[~(buyable | priced)] = np.nan  # never read where neither buyable nor sellable
        buyable &= priced
        liquidate = case % 10 == 9
        expected_cash, expected_shares = _finrl_loop(
            cash, shares, prices, actions, buyable, priced & (shares > 0), 0.001, liquidate
        )
        result = finrl_share_trades(
            cash, shares, prices, actions, buyable, priced & (shares > 0), 0.001, 0.001, liquidate
        )
        assert result.cash == expected_cash, f"case {case}"
        np.testing.assert_array_equal(result.positions, expected_shares, err_msg=f"case {case}")


def test_share_buys_follow_action_order_with_the_cash_left() -> None:
    prices, no = np.array([100.0, 60.0, 50.0, 20.0]), np.zeros(4, dtype=bool)
    actions = np.array([100, 90, 80, -5])  # bought in this order; the last is a sell of an empty slot
    result = finrl_share_trades(250.0, np.zeros(4), prices, actions, ~no, no, 0.0, 0.0)
    # 250 // 100 = 2 shares leave 50: none of the 60 name, exactly one of the 50 name, nothing left.
    np.testing.assert_array_equal(result.positions, [2.0, 0.0, 1.0, 0.0])
    assert result.cash == 0.0 and result.traded_value == 250.0


def _exact_post_trade(
    cash: float,
    holdings: np.ndarray,
    target: np.ndarray,
    locked: np.ndarray,
    sell_only: np.ndarray,
    buy: float,
    sell: float,
) -> np.ndarray:
    """Exact rational solution of ``W + costs(W) = B`` (B = cash + unlocked holdings): post-trade values."""
    q = [Fraction(float(v)) for v in holdings]
    free = [i for i in range(len(q)) if not locked[i]]
    share = sum(Fraction(float(target[i])) for i in free) + Fraction(float(target[-1]))
    frac = {i: Fraction(float(target[i])) / share for i in free}
    base, b, s = Fraction(cash) + sum(q[i] for i in free), Fraction(buy), Fraction(sell)

    def post(w: Fraction) -> dict[int, Fraction]:
        return {i: min(frac[i] * w, q[i]) if sell_only[i] else frac[i] * w for i in free}

    def g(w: Fraction) -> Fraction:
        return w + sum(b * (x - q[i]) if x > q[i] else s * (q[i] - x) for i, x in post(w).items())

    points = sorted({Fraction(0), base} | {q[i] / frac[i] for i in free if 0 < q[i] / (frac[i] or 1) < base})
    lo, hi = next((a, z) for a, z in itertools.pairwise(points) if g(a) <= base <= g(z))
    wealth = lo + (base - g(lo)) * (hi - lo) / (g(hi) - g(lo))
    exact = post(wealth)
    return np.array([float(exact[i]) if i in exact else float(q[i]) for i in range(len(q))])


def test_rebalance_matches_the_exact_rational_solution() -> None:
    rng = np.random.default_rng(3)
    for case in range(60):
        n = 8
        holdings = np.where(rng.random(n) < 0.7, rng.uniform(0, 300, n), 0.0)
        held = holdings > 0
        locked = held & (rng.random(n) < 0.2)
        sell_only = held & ~locked & (rng.random(n) < 0.3)
        target = rng.dirichlet(np.ones(n + 1)) * np.append(np.where(locked, 0.0, 1.0), 1.0)
        target /= target.sum()
        cash, buy, sell = float(rng.uniform(0, 500)), *rng.choice([0.0, 0.001, 0.01, 0.2], 2)
        result = rebalance_to_weights(cash, holdings, target, locked, sell_only, buy, sell)
        expected = _exact_post_trade(cash, holdings, target, locked, sell_only, buy, sell)
        np.testing.assert_allclose(result.positions, expected, rtol=1e-12, atol=1e-9, err_msg=f"case {case}")
        np.testing.assert_array_equal(result.positions[locked], holdings[locked])
        assert (result.positions[sell_only] <= holdings[sell_only]).all()
        delta = result.positions - holdings
        costs = buy * delta[delta > 0].sum() - sell * delta[delta < 0].sum()
        assert result.costs == pytest.approx(costs, rel=1e-12, abs=1e-12)
        assert result.cash + result.positions.sum() == pytest.approx(cash + holdings.sum() - costs, rel=1e-12)


@pytest.mark.parametrize("mode", ["weights", "shares"])
def test_observations_are_fresh_and_match_the_book(mode: str) -> None:
    """Observations are never reused (SB3 keeps the terminal one while it resets); sellable and weight
    columns follow the book whether few slots are held (row writes) or many (column writes)."""
    episode = _episode()
    env = PortfolioEnv(episode, mode=mode)
    obs, info = env.reset()
    kept = [(obs, {key: value.copy() for key, value in obs.items()})]
    prices = np.nan_to_num(last_known_prices(episode.close))
    rng, held_counts, terminated = np.random.default_rng(0), set(), False
    while not terminated:
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        if env.day < 10:  # buy slot 0 only: in shares mode one slot is held
            action[:] = -1.0
            action[0] = 1.0
        obs, _, terminated, _, info = env.step(action)
        kept.append((obs, {key: value.copy() for key, value in obs.items()}))
        held = env.shares > 0
        held_counts.add(int(held.sum()))
        np.testing.assert_array_equal(
            obs["slots"][:, COL_SELLABLE], held & np.isfinite(episode.close[env.day])
        )
        weight = (env.shares * prices[env.day] / info["portfolio_value"]).astype(np.float32)
        np.testing.assert_array_equal(obs["slots"][:, COL_WEIGHT], weight)
        np.testing.assert_array_equal(
            obs["slots"][:, :COL_SELLABLE], episode.observation_block[env.day, :, :-2]
        )
    for returned, copy in kept:
        for key in copy:
            np.testing.assert_array_equal(returned[key], copy[key])
    assert max(held_counts) > 1 and (min(held_counts) == 1 or mode == "weights")  # both write paths ran
    assert not episode.observation_block.flags.writeable
