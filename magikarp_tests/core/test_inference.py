"""Serving a policy outside the environment reproduces the environment exactly: the same observation for the
same book, and the same target weights (hence the same trades) for the same model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv, last_known_prices, rebalance_to_weights
from magikarp_assets.core.rl.inference import build_observation, infer_target_weights
from magikarp_assets.core.rl.training import load_policy, train_policy
from magikarp_assets.core.spec import N_FEATURES, SLOT_ARCHIVE
from magikarp_tests.core.test_policy import sample_episode

LEAVERS = [27, 28]  # active names archived from day 6 on: held, priced, sell-only
ARCHIVED_FROM = 6


@pytest.fixture(scope="module")
def episode() -> MarketEpisode:
    """Real closes; slot 3 has no price on days 10 and 11 (held then: locked); two names leave the index."""
    base = sample_episode(n_sessions=16)
    slot_state = base.slot_state.copy()
    slot_state[ARCHIVED_FROM:, LEAVERS] = SLOT_ARCHIVE
    tradable = base.tradable & (slot_state == 1)
    return dataclasses.replace(base, slot_state=slot_state, tradable=tradable)


@pytest.fixture(scope="module")
def model(episode):
    result = train_policy(episode, "ppo", 32, 5, {"n_steps": 32, "batch_size": 16, "n_epochs": 1})
    return load_policy(result.model_bytes, "ppo")


def _book(env: PortfolioEnv) -> dict[str, np.ndarray | float]:
    """The env's book on its current day, rebuilt from its public state and the episode's prices."""
    day, episode = env.day, env.episode
    value_price = np.nan_to_num(last_known_prices(episode.close)[day], nan=0.0)
    value = env.portfolio_value()
    held = env.shares > 0
    priced = np.isfinite(episode.close[day])
    weight = env.shares * value_price / value
    return {
        "held": held,
        "priced": priced,
        "weight": weight,
        "cash_weight": env.cash / value,
        "holdings": env.shares * value_price,
        "value_price": value_price,
    }


def test_observation_equals_the_environments_own_for_the_same_book(episode) -> None:
    env = PortfolioEnv(episode)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(1)
    compared = 0
    for _ in range(episode.n_days - 1):
        book = _book(env)
        day = env.day
        ours = build_observation(
            episode.features[day],
            episode.tradable[day],
            book["held"] & book["priced"],
            book["weight"],
            book["cash_weight"],
        )
        assert ours.keys() == obs.keys()
        for key in obs:
            assert ours[key].dtype == obs[key].dtype and np.array_equal(ours[key], obs[key]), (day, key)
        compared += 1
        obs, *_ = env.step(env.action_space.sample() * 3)
    assert compared == episode.n_days - 1
    # The comparison covered a held name without a price and held archived names.
    assert env.shares[3] > 0 and (env.shares[LEAVERS] > 0).any()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_inferred_targets_trade_exactly_like_the_environment(episode, model, temperature) -> None:
    env = PortfolioEnv(episode, temperature=temperature)
    obs, _ = env.reset(seed=0)
    locked_days = sell_only_days = 0
    for _ in range(episode.n_days - 1):
        day, book = env.day, _book(env)
        held, priced = book["held"], book["priced"]
        locked, sell_only = held & ~priced, held & priced & ~episode.tradable[day]
        locked_days += bool(locked.any())
        sell_only_days += bool(sell_only.any())
        target = infer_target_weights(
            model,
            obs,
            episode.tradable[day],
            np.where(sell_only, book["weight"], 0.0),
            np.where(locked, book["weight"], 0.0) if locked.any() else None,
            temperature,
        )
        assert target.shape == (episode.n_slots + 1,) and target.sum() == pytest.approx(1.0, abs=1e-12)
        assert (target[:-1][~episode.tradable[day] & ~held] == 0).all()
        assert (target[:-1][sell_only] <= book["weight"][sell_only] + 1e-15).all()
        expected = rebalance_to_weights(
            env.cash, book["holdings"], target, locked, sell_only, env.buy_cost_pct, env.sell_cost_pct
        )
        obs, *_ = env.step(model.predict(obs, deterministic=True)[0])
        assert env.cash == expected.cash
        close = np.where(priced, episode.close[day], 1.0)
        assert np.array_equal(env.shares, np.where(locked, env.shares, expected.positions / close))
    assert locked_days and sell_only_days


def test_bad_inputs_name_the_rule() -> None:
    features = np.zeros((4, N_FEATURES), np.float32)
    flags = np.zeros(4, bool)
    with pytest.raises(ValueError, match=r"features has shape \(4, 31\)"):
        build_observation(features[:, :-1], flags, flags, np.zeros(4), 1.0)
    with pytest.raises(ValueError, match=r"sellable has shape \(3,\)"):
        build_observation(features, flags, flags[:3], np.zeros(4), 1.0)
    features[2, 5] = np.nan
    with pytest.raises(ValueError, match="'finite' at slot 2"):
        build_observation(features, flags, flags, np.zeros(4), 1.0)
