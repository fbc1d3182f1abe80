"""PPO at production width (3,600 slots): TMagikarp's slot-shared policy against SB3's flat MlpPolicy
[256, 256] on the flattened observation (the source design): training throughput, model file size and
one-day inference latency."""

from __future__ import annotations

import io
import math
import statistics
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv
from magikarp_assets.core.rl.policy import SlotSharedActorCriticPolicy
from magikarp_assets.core.spec import MAX_ACTIVE, N_ARCHIVE, N_FEATURES, N_SLOTS, SLOT_ACTIVE, SLOT_ARCHIVE

N_DAYS = 64
BATCH_SIZE = 64  # SB3 PPO default
SB3_N_STEPS, SB3_N_EPOCHS = 2048, 10  # SB3 PPO defaults: the iteration the estimate refers to
POLICIES: dict[str, tuple[Any, dict[str, Any]]] = {
    "slot-shared": (SlotSharedActorCriticPolicy, {}),
    # SB3 flattens each Dict entry and concatenates them: 3,600 * 35 + 2 = 126,002 inputs.
    "flat MlpPolicy [256, 256]": ("MultiInputPolicy", {"net_arch": [256, 256]}),
}


def production_market(n_days: int = N_DAYS, seed: int = 0) -> MarketEpisode:
    """Random-walk closes on the production slot layout: 3,000 active slots, 300 archived names (priced,
    sell-only) and 300 padding slots (no price), with standard-normal features.

    :param n_days: trading days.
    :param seed: random seed.
    """
    rng = np.random.default_rng(seed)
    n_priced = MAX_ACTIVE + N_ARCHIVE
    close = np.full((n_days, N_SLOTS), np.nan)
    steps = rng.normal(0.0003, 0.02, size=(n_days, n_priced))
    close[:, :n_priced] = rng.uniform(10.0, 300.0, size=n_priced) * np.exp(np.cumsum(steps, axis=0))
    state = np.zeros(N_SLOTS, dtype=np.int8)
    state[:MAX_ACTIVE], state[MAX_ACTIVE:n_priced] = SLOT_ACTIVE, SLOT_ARCHIVE
    features = np.zeros((n_days, N_SLOTS, N_FEATURES), dtype=np.float32)
    features[:, :n_priced] = rng.standard_normal((n_days, n_priced, N_FEATURES), dtype=np.float32)
    return MarketEpisode(
        features=features,
        close=close,
        tradable=np.broadcast_to(state == SLOT_ACTIVE, (n_days, N_SLOTS)).copy(),
        slot_state=np.tile(state, (n_days, 1)),
        dates=pd.bdate_range("2016-01-04", periods=n_days),
    )


class _PhaseTimer(BaseCallback):
    """Marks when the rollout starts and ends, so collection and update are timed apart."""

    def _on_rollout_start(self) -> None:
        self.rollout_start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_end = time.perf_counter()

    def _on_step(self) -> bool:
        return True


def _one_iteration(name: str, episode: MarketEpisode, n_steps: int, n_epochs: int) -> dict[str, Any]:
    policy, policy_kwargs = POLICIES[name]
    model = PPO(
        policy,
        PortfolioEnv(episode),
        n_steps=n_steps,
        batch_size=BATCH_SIZE,
        n_epochs=n_epochs,
        policy_kwargs=policy_kwargs,
        device="cpu",
        seed=0,
    )
    timer = _PhaseTimer()
    model.learn(total_timesteps=n_steps, callback=timer)
    finished = time.perf_counter()
    rollout_s, update_s = timer.rollout_end - timer.rollout_start, finished - timer.rollout_end
    gradient_steps = n_epochs * math.ceil(n_steps / BATCH_SIZE)
    per_gradient_step = update_s / gradient_steps
    buffer = io.BytesIO()
    model.save(buffer)
    obs, _ = PortfolioEnv(episode).reset()
    model.predict(obs, deterministic=True)  # warm-up
    latencies = []
    for _ in range(20):
        start = time.perf_counter()
        model.predict(obs, deterministic=True)
        latencies.append(time.perf_counter() - start)
    sb3_gradient_steps = SB3_N_EPOCHS * math.ceil(SB3_N_STEPS / BATCH_SIZE)
    return {
        "policy": name,
        "parameters": sum(p.numel() for p in model.policy.parameters()),
        "file_mb": len(buffer.getvalue()) / 1e6,
        "n_steps": n_steps,
        "n_epochs": n_epochs,
        "gradient_steps": gradient_steps,
        "rollout_ms_per_step": 1e3 * rollout_s / n_steps,
        "update_s": update_s,
        "update_ms_per_gradient_step": 1e3 * per_gradient_step,
        "measured_steps_per_s": n_steps / (rollout_s + update_s),
        "estimated_sb3_default_iteration_s": SB3_N_STEPS * rollout_s / n_steps
        + sb3_gradient_steps * per_gradient_step,
        "inference_ms_one_day": 1e3 * statistics.median(latencies),
    }


def run(quick: bool = False) -> list[dict]:
    """Time one PPO iteration (rollout + update) per policy at 3,600 slots on one torch thread.

    A full SB3-default iteration (n_steps 2,048, 10 epochs, batch 64: 320 gradient steps) of the flat policy
    takes many minutes here, so the iteration timed is smaller (quick: 64 steps, 1 epoch; else 256 steps,
    2 epochs) and ``estimated_sb3_default_iteration_s`` scales the measured per-step and per-gradient-step
    costs to the SB3 default.

    :param quick: the smallest iteration (about a minute in all).
    """
    n_steps, n_epochs = (64, 1) if quick else (256, 2)
    episode = production_market()
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        return [_one_iteration(name, episode, n_steps, n_epochs) for name in POLICIES]
    finally:
        th.set_num_threads(threads)


def markdown(rows: list[dict]) -> str:
    """Render ``run()`` rows as a markdown table.

    :param rows: the rows returned by :func:`run`.
    """
    lines = [
        "| policy | parameters | file (MB) | timed iteration | rollout (ms/step) | update (ms/gradient step) "
        "| measured env steps/s incl. update | est. SB3-default iteration (s) | inference, one day (ms) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['parameters']:,} | {r['file_mb']:,.2f} "
            f"| {r['n_steps']} steps, {r['n_epochs']} epoch(s), {r['gradient_steps']} gradient steps "
            f"| {r['rollout_ms_per_step']:,.1f} | {r['update_ms_per_gradient_step']:,.0f} "
            f"| {r['measured_steps_per_s']:,.2f} | {r['estimated_sb3_default_iteration_s']:,.0f} "
            f"| {r['inference_ms_one_day']:,.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv[1:])))
