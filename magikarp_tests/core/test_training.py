"""PPO, A2C and SAC train slot-shared policies on real prices, reproducibly from a seed, and the saved models
predict valid scores that the environment turns into valid portfolio weights."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch as th

from magikarp_assets.core.rl import (
    COL_SELLABLE,
    COL_TRADABLE,
    COL_WEIGHT,
    PortfolioEnv,
    target_weights,
    training,
)
from magikarp_assets.core.rl.policy import DEFAULT_EMBED_ARCH, DEFAULT_HEAD_ARCH, POLICY_VERSION
from magikarp_assets.core.rl.training import (
    PolicyVersionError,
    TrainingResult,
    feature_normalisation,
    load_policy,
    predict_weights,
    train_policy,
)
from magikarp_assets.core.spec import N_FEATURES
from magikarp_tests.core.test_policy import N_SLOTS, sample_episode

N_SESSIONS = 40  # 39 steps per episode
FAST: dict[str, tuple[int, dict[str, Any]]] = {
    "ppo": (128, {"n_steps": 64, "batch_size": 32, "n_epochs": 2}),
    "a2c": (120, {"n_steps": 8}),
    "sac": (120, {"learning_starts": 40, "batch_size": 16, "buffer_size": 200}),
}


@pytest.fixture(scope="module")
def episode():
    return sample_episode(n_sessions=N_SESSIONS)


@pytest.fixture(scope="module")
def trained(episode) -> dict[str, tuple[TrainingResult, list[str]]]:
    results = {}
    for algorithm, (steps, hyper_parameters) in FAST.items():
        messages: list[str] = []
        results[algorithm] = (
            train_policy(episode, algorithm, steps, 11, hyper_parameters, messages.append),
            messages,
        )
    return results


def _parameters(result: TrainingResult) -> dict[str, th.Tensor]:
    return load_policy(result.model_bytes, result.algorithm).policy.state_dict()


@pytest.mark.parametrize("algorithm", sorted(FAST))
def test_training_records_its_run(trained, algorithm: str) -> None:
    result, messages = trained[algorithm]
    steps, hyper_parameters = FAST[algorithm]
    rollout = hyper_parameters.get("n_steps", 1)
    assert result.timesteps == -(-steps // rollout) * rollout
    assert len(result.episode_reward_curve) == result.timesteps // (N_SESSIONS - 1)
    assert all(np.isfinite(result.episode_reward_curve)) and len(set(result.episode_reward_curve)) > 1
    assert 10_000 < result.n_parameters < 100_000 and result.wall_seconds > 0
    assert messages[0].startswith(f"training {algorithm.upper()}") and messages[-1].startswith("trained")
    assert sum(m.startswith("episode ") for m in messages) == len(result.episode_reward_curve)


@pytest.mark.parametrize("algorithm", sorted(FAST))
def test_trained_model_scores_become_valid_weights_in_the_env(trained, episode, algorithm: str) -> None:
    model = load_policy(trained[algorithm][0].model_bytes, algorithm)
    env = PortfolioEnv(episode)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        scores, cash_score = predict_weights(model, obs)
        assert scores.shape == (N_SLOTS,) and np.isfinite(scores).all()
        assert (np.abs(scores) <= 1).all() and -1 <= cash_score <= 1
        slots = obs["slots"]
        tradable = slots[:, COL_TRADABLE] > 0
        sell_only = (slots[:, COL_SELLABLE] > 0) & ~tradable
        weights = target_weights(scores, cash_score, tradable, np.where(sell_only, slots[:, COL_WEIGHT], 0.0))
        assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
        assert (weights[:-1][~tradable & ~sell_only] == 0).all()
        obs, reward, done, _, info = env.step(np.append(scores, cash_score))
        assert np.isfinite(reward) and info["portfolio_value"] > 0
        held = env.shares > 0
        assert not (held & ~episode.tradable[: env.day].any(axis=0)).any()  # never bought unbuyable slots


@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_same_seed_gives_identical_parameters(trained, episode, algorithm: str) -> None:
    steps, hyper_parameters = FAST[algorithm]
    first = trained[algorithm][0]
    again = train_policy(episode, algorithm, steps, 11, hyper_parameters)
    assert again.episode_reward_curve == first.episode_reward_curve
    expected, actual = _parameters(first), _parameters(again)
    assert expected.keys() == actual.keys()
    assert all(th.equal(expected[name], actual[name]) for name in expected)
    other = _parameters(train_policy(episode, algorithm, steps, 12, hyper_parameters))
    assert not all(th.equal(expected[name], other[name]) for name in expected)


def test_save_load_round_trip_gives_identical_predictions(trained, episode) -> None:
    result = trained["ppo"][0]
    model = load_policy(result.model_bytes, "ppo")
    buffer = io.BytesIO()
    model.save(buffer)
    reloaded = load_policy(buffer.getvalue(), "ppo")
    obs, _ = PortfolioEnv(episode).reset()
    scores, cash = predict_weights(model, obs)
    scores_again, cash_again = predict_weights(reloaded, obs)
    assert np.array_equal(scores, scores_again) and cash == cash_again
    assert np.unique(scores).size > 1
    encoder = reloaded.policy.features_extractor
    assert result.normalisation is not None
    np.testing.assert_allclose(encoder.feature_mean.numpy(), result.normalisation["feature_mean"], rtol=1e-6)
    np.testing.assert_allclose(encoder.feature_std.numpy(), result.normalisation["feature_std"], rtol=1e-6)


def test_the_saved_model_records_its_architecture(trained, episode) -> None:
    stored = load_policy(trained["ppo"][0].model_bytes, "ppo").policy_kwargs
    assert stored["net_arch"] == list(DEFAULT_HEAD_ARCH)
    assert stored["features_extractor_kwargs"]["embed_arch"] == list(DEFAULT_EMBED_ARCH)
    custom = {"policy_kwargs": {"net_arch": [8, 8], "features_extractor_kwargs": {"embed_arch": [16, 12]}}}
    model = load_policy(train_policy(episode, "a2c", 8, 0, {"n_steps": 8, **custom}).model_bytes, "a2c")
    shapes = {name: tuple(p.shape) for name, p in model.policy.state_dict().items()}
    assert shapes["features_extractor.layers.1.weight"] == (12, 16)
    assert shapes["slot_head.context_in.weight"] == (8, 2 * 12 + 2)
    assert shapes["slot_head.out.weight"] == (1, 8)


def test_feature_normalisation_uses_tradable_cells_only(episode) -> None:
    stats = feature_normalisation(episode)
    cells = episode.features[episode.tradable].astype(np.float64)
    scaled = (cells - np.array(stats["feature_mean"])) / np.array(stats["feature_std"])
    varying = cells.std(axis=0) > 0
    assert varying[:6].all() and not varying[6:].any()  # 6 indicators, the rest is zero padding
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled[:, varying].std(axis=0), 1.0, rtol=1e-9)
    assert stats["feature_std"][N_FEATURES - 1] == 1.0
    assert len(stats["feature_mean"]) == N_FEATURES


def test_bad_arguments_are_rejected_with_the_rule(episode) -> None:
    with pytest.raises(ValueError, match=r"algorithm='td3' breaks the rule"):
        train_policy(episode, "td3", 10, 0, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"hyper_parameters\['seed'\]"):
        train_policy(episode, "ppo", 10, 0, {"seed": 3})
    with pytest.raises(ValueError, match="mode='weights'"):
        train_policy(episode, "ppo", 10, 0, {"env_kwargs": {"mode": "shares"}})
    with pytest.raises(ValueError, match="total_timesteps=0"):
        train_policy(episode, "a2c", 0, 0, {})
    obs, _ = PortfolioEnv(episode).reset()
    model = load_policy(train_policy(episode, "a2c", 8, 0, {"n_steps": 8}).model_bytes, "a2c")
    with pytest.raises(ValueError, match=r"obs\['slots'\] shape \(35, 35\)"):
        predict_weights(model, {**obs, "slots": obs["slots"][:-1]})


def test_a_model_of_another_policy_version_is_refused_before_loading(
    trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_bytes = trained["ppo"][0].model_bytes
    stored = load_policy(model_bytes, "ppo").policy_kwargs["features_extractor_kwargs"]
    assert stored["policy_version"] == POLICY_VERSION
    monkeypatch.setattr(training, "POLICY_VERSION", "slot-shared-99")
    with pytest.raises(
        PolicyVersionError, match=f"version {POLICY_VERSION}, but this code loads version slot-shared-99"
    ):
        load_policy(model_bytes, "ppo")
