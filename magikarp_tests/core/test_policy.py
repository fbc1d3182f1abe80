"""The slot-shared policies treat slots as a set: permuting slots permutes the scores, the model size does
not depend on the number of slots, and non-tradable slots never leak into the pooled context."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO

from magikarp_assets.core.rl import COL_TRADABLE, MarketEpisode, PortfolioEnv
from magikarp_assets.core.rl import policy as policy_module
from magikarp_assets.core.rl.policy import (
    ReluMeanMax,
    SlotSharedActorCriticPolicy,
    block_max,
    check_slot_spaces,
)
from magikarp_assets.core.rl.sac_policy import SlotSharedSACPolicy
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING

SAMPLE = Path(__file__).resolve().parents[2] / "magikarp_assets/data/sample/sp500_prices_5yr.parquet"
N_TICKERS = 30
N_ARCHIVE = 2
N_PADDING = 4
N_SLOTS = N_TICKERS + N_ARCHIVE + N_PADDING


def _features(close: pd.DataFrame) -> np.ndarray:
    """Trailing-only indicators per stock: vol-normalised log returns over 1/5/10/20 days, distance to the
    20-day mean and the 20-day volatility, zero-padded to N_FEATURES."""
    log_close = np.log(close)
    daily = log_close.diff()
    vol = daily.rolling(20, min_periods=2).std().fillna(0.02).clip(lower=1e-3)
    columns = [(log_close - log_close.shift(h)) / (vol * np.sqrt(h)) for h in (1, 5, 10, 20)]
    columns += [log_close - log_close.rolling(20, min_periods=1).mean(), vol]
    features = np.zeros((*close.shape, N_FEATURES), dtype=np.float32)
    for index, column in enumerate(columns):
        features[:, :, index] = column.fillna(0.0).to_numpy()
    return features


def sample_episode(n_sessions: int = 60, first_session: str = "2016-06-01") -> MarketEpisode:
    """Real closes of 30 S&P 500 stocks over consecutive sessions on N_SLOTS slots: 30 active (one has a
    missing price on two days), 2 archived names (priced, sell-only) and 4 padding slots."""
    prices = pd.read_parquet(SAMPLE, columns=["date", "ticker", "close"])
    wide = prices.pivot(index="date", columns="ticker", values="close").sort_index()
    wide = wide.loc[first_session:].iloc[:n_sessions]
    wide = wide.loc[:, wide.notna().all()].iloc[:, : N_TICKERS + N_ARCHIVE]
    close = wide.to_numpy(dtype=np.float64).copy()
    close[[10, 11], 3] = np.nan  # a priced name with two missing sessions
    features = _features(wide.where(np.isfinite(close)).ffill())
    n_days = close.shape[0]
    pad = np.full((n_days, N_PADDING), np.nan)
    slot_state = np.array([SLOT_ACTIVE] * N_TICKERS + [SLOT_ARCHIVE] * N_ARCHIVE + [SLOT_PADDING] * N_PADDING)
    close = np.hstack([close, pad])
    return MarketEpisode(
        features=np.concatenate([features, np.zeros((n_days, N_PADDING, N_FEATURES), np.float32)], axis=1),
        close=close,
        tradable=np.isfinite(close) & (slot_state == SLOT_ACTIVE),
        slot_state=np.tile(slot_state.astype(np.int8), (n_days, 1)),
        dates=pd.DatetimeIndex(wide.index),
    )


def sample_observations(n_days: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of real env observations after random trades, so weights and sellable flags are non-zero."""
    env = PortfolioEnv(sample_episode())
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    batch = []
    for _ in range(n_days):
        obs, *_ = env.step(env.action_space.sample() * 3)
        batch.append(obs)
    return {key: np.stack([o[key] for o in batch]) for key in ("slots", "portfolio")}


def _spaces(n_slots: int) -> tuple[spaces.Dict, spaces.Box]:
    observation = spaces.Dict(
        {
            "slots": spaces.Box(-np.inf, np.inf, shape=(n_slots, N_FEATURES + 3), dtype=np.float32),
            "portfolio": spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32),
        }
    )
    return observation, spaces.Box(-1.0, 1.0, shape=(n_slots + 1,), dtype=np.float32)


def _ac_policy(n_slots: int, seed: int = 0) -> SlotSharedActorCriticPolicy:
    th.manual_seed(seed)
    # ortho_init=False keeps output layers at PyTorch's default scale, so means are far from zero.
    return SlotSharedActorCriticPolicy(*_spaces(n_slots), lambda _: 3e-4, ortho_init=False)


def _sac_policy(n_slots: int, seed: int = 0) -> SlotSharedSACPolicy:
    th.manual_seed(seed)
    return SlotSharedSACPolicy(*_spaces(n_slots), lambda _: 3e-4)


def _tensors(obs: dict[str, np.ndarray], order: np.ndarray | None = None) -> dict[str, th.Tensor]:
    slots = obs["slots"] if order is None else obs["slots"][:, order]
    return {"slots": th.as_tensor(slots), "portfolio": th.as_tensor(obs["portfolio"])}


@pytest.fixture(scope="module")
def observations() -> dict[str, np.ndarray]:
    return sample_observations()


@pytest.fixture(scope="module")
def order() -> np.ndarray:
    return np.random.default_rng(7).permutation(N_SLOTS)


def _close(a: th.Tensor, b: th.Tensor) -> bool:
    return th.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sample_observations_exercise_the_masks(observations: dict[str, np.ndarray]) -> None:
    slots = observations["slots"]
    assert slots.shape == (6, N_SLOTS, N_FEATURES + 3)
    assert 0 < slots[..., COL_TRADABLE].mean() < 1
    assert slots[..., COL_TRADABLE + 2].max() > 0  # some weight is held


def test_actor_critic_policy_is_permutation_equivariant(observations, order) -> None:
    policy = _ac_policy(N_SLOTS)
    with th.no_grad():
        means = policy.action_means(_tensors(observations))
        permuted = policy.action_means(_tensors(observations, order))
        values = policy.predict_values(_tensors(observations))
        permuted_values = policy.predict_values(_tensors(observations, order))
    assert means[:, :-1].std() > 1e-3  # slots get different scores, so the check below can fail
    assert _close(permuted[:, :-1], means[:, :-1][:, order])
    assert _close(permuted[:, -1], means[:, -1])
    assert _close(permuted_values, values)
    # Same through SB3's deterministic predict on a single day, after clipping to the action bounds.
    day = {key: value[2] for key, value in observations.items()}
    action, _ = policy.predict(day, deterministic=True)
    action_permuted, _ = policy.predict({**day, "slots": day["slots"][order]}, deterministic=True)
    np.testing.assert_allclose(action_permuted[:-1], action[:-1][order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(action_permuted[-1], action[-1], rtol=1e-5, atol=1e-6)


def test_actor_critic_sampling_distribution_is_equivariant(observations, order) -> None:
    policy = _ac_policy(N_SLOTS)
    actions = th.as_tensor(np.random.default_rng(3).uniform(-1, 1, size=(6, N_SLOTS + 1)), dtype=th.float32)
    permuted_actions = th.cat([actions[:, :-1][:, order], actions[:, -1:]], dim=1)
    with th.no_grad():
        values, log_prob, entropy = policy.evaluate_actions(_tensors(observations), actions)
        values_p, log_prob_p, entropy_p = policy.evaluate_actions(
            _tensors(observations, order), permuted_actions
        )
    assert policy.log_std.shape == (1,)
    assert _close(log_prob_p, log_prob)
    assert _close(entropy_p, entropy)
    assert _close(values_p, values)


def test_sac_actor_and_critic_are_permutation_equivariant(observations, order) -> None:
    policy = _sac_policy(N_SLOTS)
    with th.no_grad():
        mean, log_std, _ = policy.actor.get_action_dist_params(_tensors(observations))
        mean_p, log_std_p, _ = policy.actor.get_action_dist_params(_tensors(observations, order))
        actions = policy.actor(_tensors(observations), deterministic=True)
        actions_p = policy.actor(_tensors(observations, order), deterministic=True)
        q_values = policy.critic(_tensors(observations), actions)
        q_values_p = policy.critic(
            _tensors(observations, order), th.cat([actions[:, :-1][:, order], actions[:, -1:]], dim=1)
        )
    assert mean[:, :-1].std() > 1e-3
    assert _close(mean_p[:, :-1], mean[:, :-1][:, order]) and _close(mean_p[:, -1], mean[:, -1])
    assert _close(log_std_p[:, :-1], log_std[:, :-1][:, order])
    assert _close(actions_p[:, :-1], actions[:, :-1][:, order])
    assert len(q_values) == 2
    for q, q_p in zip(q_values, q_values_p, strict=True):
        assert _close(q_p, q)


def test_relu_mean_max_matches_autograd_and_finite_differences() -> None:
    rng = np.random.default_rng(5)
    pre = th.tensor(rng.uniform(-1.0, 2.0, size=(3 * 7, 4)), dtype=th.float64, requires_grad=True)
    mask = th.tensor(rng.uniform(size=(3, 7)) < 0.6, dtype=th.float64)
    mask[1] = 0.0  # a day with no tradable slot: zeros, and no gradient through the pooling
    mask[2, 0] = 1.0
    embedded, mean, top = ReluMeanMax.apply(pre.detach().clone(), mask)
    kept = pre.detach().relu().view(3, 7, 4) * mask.unsqueeze(-1)
    assert th.equal(embedded, pre.detach().relu())
    assert th.allclose(mean, kept.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))
    assert th.equal(top, kept.amax(1)) and (top[1] == 0).all()
    weights = th.tensor(rng.normal(size=(3, 7, 4)), dtype=th.float64)

    def fused(p: th.Tensor) -> th.Tensor:  # every output used, as the policy uses them
        out, m, t = ReluMeanMax.apply(p.clone(), mask)
        return (out.view(3, 7, 4) * weights).sum() + (m * 2.0).sum() + (t * 3.0).sum()

    def reference(p: th.Tensor) -> th.Tensor:
        out = p.relu().view(3, 7, 4)
        k = out * mask.unsqueeze(-1)
        m = k.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return (out * weights).sum() + (m * 2.0).sum() + (k.amax(1) * 3.0).sum()

    (fused_grad,) = th.autograd.grad(fused(pre), pre)
    (reference_grad,) = th.autograd.grad(reference(pre), pre)
    assert th.allclose(fused_grad, reference_grad)
    assert th.autograd.gradcheck(lambda p: ReluMeanMax.apply(p.clone(), mask), (pre,))
    assert th.autograd.gradcheck(lambda p: ReluMeanMax.apply(p.clone(), mask)[1:], (pre,))


@pytest.mark.parametrize("n_slots", [1, 7, 12, 3600])
def test_block_max_equals_max(n_slots: int) -> None:
    values = th.rand(3, n_slots, 5, generator=th.Generator().manual_seed(n_slots))
    values[0] = 0.0  # all tied
    assert all(th.equal(a, b) for a, b in zip(block_max(values), values.max(dim=1), strict=True))


def test_chunked_pass_equals_one_pass(observations, monkeypatch) -> None:
    policy = _ac_policy(N_SLOTS)
    actions = th.as_tensor(np.random.default_rng(3).uniform(-1, 1, size=(6, N_SLOTS + 1)), dtype=th.float32)

    def outputs_and_gradients() -> list[th.Tensor]:
        policy.zero_grad()
        values, log_prob, entropy = policy.evaluate_actions(_tensors(observations), actions)
        (values.sum() + log_prob.sum()).backward()
        gradients = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
        return [values, log_prob, entropy, *gradients]

    whole = outputs_and_gradients()
    monkeypatch.setattr(policy_module, "CHUNK_ROWS", 2 * N_SLOTS)  # 3 chunks of 2 days
    chunked = outputs_and_gradients()
    assert len(chunked) == len(whole) > 3
    assert all(_close(a, b) for a, b in zip(chunked, whole, strict=True))


def test_non_tradable_slots_do_not_reach_the_context(observations) -> None:
    policy = _ac_policy(N_SLOTS)
    changed = {key: value.copy() for key, value in observations.items()}
    hidden = changed["slots"][..., COL_TRADABLE] == 0
    changed["slots"][..., :N_FEATURES][hidden] += 5.0  # only non-tradable rows change
    with th.no_grad():
        means = policy.action_means(_tensors(observations))
        means_changed = policy.action_means(_tensors(changed))
        values = policy.predict_values(_tensors(observations))
        values_changed = policy.predict_values(_tensors(changed))
    visible = th.as_tensor(~hidden)
    assert _close(means_changed[:, :-1][visible], means[:, :-1][visible])
    assert _close(means_changed[:, -1], means[:, -1]) and _close(values_changed, values)
    assert not _close(means_changed[:, :-1][~visible], means[:, :-1][~visible])  # their own scores move


def test_a_day_with_no_tradable_slot_gives_finite_outputs(observations) -> None:
    closed = {key: value.copy() for key, value in observations.items()}
    closed["slots"][..., COL_TRADABLE] = 0.0
    with th.no_grad():
        means = _ac_policy(N_SLOTS).action_means(_tensors(closed))
        sac_mean, _, _ = _sac_policy(N_SLOTS).actor.get_action_dist_params(_tensors(closed))
    assert th.isfinite(means).all() and th.isfinite(sac_mean).all()


@pytest.mark.parametrize("build", [_ac_policy, _sac_policy])
def test_parameter_shapes_do_not_depend_on_the_number_of_slots(build) -> None:
    shapes = {n: {k: tuple(v.shape) for k, v in build(n).state_dict().items()} for n in (10, N_SLOTS, 3600)}
    assert shapes[10] == shapes[N_SLOTS] == shapes[3600]
    assert sum(np.prod(s) for s in shapes[3600].values()) < 100_000


def test_ppo_model_file_at_production_width_is_small() -> None:
    n_slots = 3600
    close = np.full((2, n_slots), 10.0)
    episode = MarketEpisode(
        features=np.zeros((2, n_slots, N_FEATURES), np.float32),
        close=close,
        tradable=np.ones((2, n_slots), bool),
        slot_state=np.ones((2, n_slots), np.int8),
        dates=pd.DatetimeIndex(["2017-01-03", "2017-01-04"]),
    )
    model = PPO(SlotSharedActorCriticPolicy, PortfolioEnv(episode), n_steps=2, batch_size=2, device="cpu")
    buffer = io.BytesIO()
    model.save(buffer)
    assert len(buffer.getvalue()) < 10 * 1024 * 1024
    with zipfile.ZipFile(buffer) as archive:
        assert archive.getinfo("policy.pth").file_size < 1024 * 1024


def test_spaces_that_break_the_contract_are_rejected() -> None:
    observation, action = _spaces(5)
    with pytest.raises(ValueError, match=r"action space .* Box\(shape=\(6,\)\)"):
        check_slot_spaces(observation, spaces.Box(-1.0, 1.0, shape=(5,), dtype=np.float32))
    with pytest.raises(ValueError, match="'slots' shape"):
        check_slot_spaces(
            spaces.Dict({"slots": spaces.Box(0, 1, (5, 34)), "portfolio": observation["portfolio"]}), action
        )
    with pytest.raises(ValueError, match="gSDE"):
        SlotSharedActorCriticPolicy(observation, action, lambda _: 3e-4, use_sde=True)


def _layout(policy: th.nn.Module) -> str:
    rows = sorted(f"{name}:{tuple(tensor.shape)}" for name, tensor in policy.state_dict().items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


# The saved-network layout of each POLICY_VERSION (default arch sizes, 8 slots). A change to the networks
# fails this test: bump POLICY_VERSION (old model files then get a clear refusal) and pin the new layout.
LAYOUTS = {"slot-shared-2": ("2bebc41cc5efd3c3", "4cec2507758315bc")}


def test_the_policy_version_pins_the_saved_network_layout() -> None:
    assert LAYOUTS[policy_module.POLICY_VERSION] == (_layout(_ac_policy(8)), _layout(_sac_policy(8)))
