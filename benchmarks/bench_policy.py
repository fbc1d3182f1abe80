"""PPO at production width (3,600 slots): TMagikarp's slot-shared policy against SB3's flat MlpPolicy
[256, 256] on the flattened observation (the source design): size, collection and update cost, one full
PPO iteration and one-day inference latency.

Run: ``.venv/bin/python -m benchmarks.bench_policy [--quick] [--threads N] [--flat-full]``; with
``--learning`` it runs the architecture learning check instead (:func:`learning`, about 10 minutes).

Both policies run in the same process, on the same synthetic market, with the same torch thread count and
the same PPO settings (batch 64). Each is timed on the same small iteration (rollout then update), which
gives its cost per environment step collected and per gradient step. The slot-shared policy is also timed
on one real SB3-default iteration (2,048 steps, 10 epochs: 320 gradient steps); for the flat policy that
iteration is extrapolated from its small one and labelled so, or timed too with ``--flat-full``. Last,
both are timed again with glibc malloc told to keep freed memory, which removes the flat policy's
page-fault cost (an allocator setting, not part of either design, reported so the speed-up is not credited
to the default allocator).
"""

from __future__ import annotations

import ctypes
import io
import math
import os
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
from magikarp_assets.core.rl.training import load_policy, predict_weights, train_policy
from magikarp_assets.core.spec import MAX_ACTIVE, N_ARCHIVE, N_FEATURES, N_SLOTS, SLOT_ACTIVE, SLOT_ARCHIVE

TITLE = "PPO policy at 3,600 slots: slot-shared vs SB3's flat MlpPolicy"
COMMAND = ".venv/bin/python -m benchmarks.bench_policy"
N_DAYS = 64
BATCH_SIZE = 64  # SB3 PPO default
FULL_ITERATION = (2048, 10)  # SB3 PPO defaults n_steps, n_epochs: 320 gradient steps of batch 64
# By `quick`. The flat policy diverged (NaN means) within 4 epochs on this random market, so 2 epochs.
SMALL_ITERATION = {False: (256, 2), True: (64, 1)}
THREADS = 1  # see run()
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt options
OURS, FLAT = "slot-shared", "flat MlpPolicy [256, 256]"
POLICIES: dict[str, tuple[Any, dict[str, Any]]] = {
    OURS: (SlotSharedActorCriticPolicy, {}),
    # SB3 flattens each Dict entry and concatenates them: 3,600 * 35 + 2 = 126,002 inputs.
    FLAT: ("MultiInputPolicy", {"net_arch": [256, 256]}),
}
LEARNING_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "35->64, head [32] (default)": {},
    "35->64->64, head [64]": {"net_arch": [64], "features_extractor_kwargs": {"embed_arch": [64, 64]}},
    "35->32->32, head [32]": {"net_arch": [32], "features_extractor_kwargs": {"embed_arch": [32, 32]}},
}
LEARNING_TIMESTEPS = 30_000


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


def _model(name: str, episode: MarketEpisode, n_steps: int, n_epochs: int) -> PPO:
    policy, policy_kwargs = POLICIES[name]
    return PPO(
        policy,
        PortfolioEnv(episode),
        n_steps=n_steps,
        batch_size=BATCH_SIZE,
        n_epochs=n_epochs,
        policy_kwargs=policy_kwargs,
        device="cpu",
        seed=0,
    )


def _iteration(model: PPO) -> dict[str, Any]:
    """Time one PPO iteration (collect ``n_steps`` then ``n_epochs`` passes of minibatch updates)."""
    n_steps, n_epochs = model.n_steps, model.n_epochs
    timer = _PhaseTimer()
    model.learn(total_timesteps=n_steps, callback=timer)
    update_s = time.perf_counter() - timer.rollout_end
    rollout_s = timer.rollout_end - timer.rollout_start
    gradient_steps = n_epochs * math.ceil(n_steps / BATCH_SIZE)
    return {
        "n_steps": n_steps,
        "n_epochs": n_epochs,
        "gradient_steps": gradient_steps,
        "measured": True,
        "collect_ms_per_step": 1e3 * rollout_s / n_steps,
        "update_ms_per_gradient_step": 1e3 * update_s / gradient_steps,
        "iteration_s": rollout_s + update_s,
        "steps_per_s": n_steps / (rollout_s + update_s),
    }


def _extrapolated(measured: dict[str, Any], n_steps: int, n_epochs: int) -> dict[str, Any]:
    """A larger iteration's time from a measured one's per-step and per-gradient-step costs."""
    gradient_steps = n_epochs * math.ceil(n_steps / BATCH_SIZE)
    seconds = (
        n_steps * measured["collect_ms_per_step"] + gradient_steps * measured["update_ms_per_gradient_step"]
    ) / 1e3
    return {
        **measured,
        "n_steps": n_steps,
        "n_epochs": n_epochs,
        "gradient_steps": gradient_steps,
        "measured": False,
        "iteration_s": seconds,
        "steps_per_s": n_steps / seconds,
    }


def _size_and_latency(model: PPO, episode: MarketEpisode) -> dict[str, Any]:
    buffer = io.BytesIO()
    model.save(buffer, exclude=["_last_obs", "_last_original_obs"])  # as train_policy stores it
    obs, _ = PortfolioEnv(episode).reset()
    model.predict(obs, deterministic=True)  # warm-up
    latencies = []
    for _ in range(20):
        start = time.perf_counter()
        model.predict(obs, deterministic=True)
        latencies.append(time.perf_counter() - start)
    return {
        "parameters": sum(p.numel() for p in model.policy.parameters()),
        "file_mb": len(buffer.getvalue()) / 1e6,
        "inference_ms_one_day": 1e3 * statistics.median(latencies),
    }


def _measured(
    name: str, episode: MarketEpisode, iteration: tuple[int, int], allocator: str, nan_tolerant: bool = False
) -> dict:
    """Time one iteration of a fresh model and report its size and inference latency.

    :param nan_tolerant: turn off torch's distribution argument checks, so a policy whose outputs become NaN
        (the flat one can diverge within a few epochs on this random market) still runs its iteration to
        the end; ``finite`` then says whether its parameters stayed finite.
    """
    load_start = os.getloadavg()[0]
    model = _model(name, episode, *iteration)
    validate = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(not nan_tolerant and validate)
    try:
        timed = _iteration(model)  # the file is saved after training: it then holds Adam's state too
        size_and_latency = _size_and_latency(model, episode)
    finally:
        th.distributions.Distribution.set_default_validate_args(validate)
    finite = all(bool(th.isfinite(p).all()) for p in model.policy.parameters())
    return {
        "policy": name,
        "allocator": allocator,
        **size_and_latency,
        **timed,
        "finite": finite,
        "load_1min": (load_start, os.getloadavg()[0]),
    }


def _keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory instead of returning it to the kernel (mmap threshold and trim
    threshold at their maximum), so big tensors reuse pages instead of page-faulting fresh ones every step.
    Lasts for the rest of the process; False where the C library has no ``mallopt`` (not glibc)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(option, ctypes.c_int(2**31 - 1)) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)
    )


def run(quick: bool = False, threads: int = THREADS, flat_full: bool = False) -> list[dict]:
    """Time both policies on the same small PPO iteration; unless ``quick``, also the slot-shared one on a
    full SB3-default iteration (extrapolated for the flat one unless ``flat_full``), then both again on the
    small iteration with
    glibc malloc keeping freed memory (the flat policy spends about a third of its update in page faults
    otherwise); one row per (policy, iteration, allocator).

    ``threads`` defaults to 1, as :func:`~magikarp_assets.core.rl.training.train_policy` trains: on a 2-core
    machine shared with other processes, 2 threads make each small parallel op wait for a CPU time slice
    (slot-shared inference went from 1.7 ms to 88 ms). On a quiet 2-core machine, 2 threads cut the
    gradient step by 1.6x (slot-shared) and 1.75x (flat).

    :param quick: a 64-step, 1-epoch small iteration only (smoke run, under a minute); otherwise a 256-step,
        2-epoch small iteration, the full one and the allocator rows (about 4 minutes).
    :param threads: torch threads, the same for both policies.
    :param flat_full: time the flat policy's full iteration too instead of extrapolating it (about 5 more
        minutes and 2 GB more memory).
    """
    small = SMALL_ITERATION[quick]
    episode = production_market()
    previous = th.get_num_threads()
    th.set_num_threads(threads)
    try:
        rows = [_measured(name, episode, small, "default") for name in POLICIES]
        if not quick:
            rows.append(_measured(OURS, episode, FULL_ITERATION, "default"))
            rows.append(
                _measured(FLAT, episode, FULL_ITERATION, "default", nan_tolerant=True)
                if flat_full
                else _extrapolated(rows[1], *FULL_ITERATION)
            )
            if _keep_freed_memory():
                rows += [_measured(name, episode, small, "keeps freed memory") for name in POLICIES]
    finally:
        th.set_num_threads(previous)
    return [{**row, "threads": threads} for row in rows]


def _ratio(rows: list[dict], key: str, n_steps: int, allocator: str = "default") -> str:
    pair = {r["policy"]: r for r in rows if r["n_steps"] == n_steps and r["allocator"] == allocator}
    return f"{pair[FLAT][key] / pair[OURS][key]:,.1f}x"


def markdown(rows: list[dict]) -> str:
    """Render ``run()`` rows as a markdown table with the speed-ups, the command and the thread count.

    :param rows: the rows returned by :func:`run`.
    """
    small = rows[0]["n_steps"]
    flat_full = any(r["policy"] == FLAT and r["n_steps"] == FULL_ITERATION[0] and r["measured"] for r in rows)
    lines = [
        f"`{COMMAND}{' --flat-full' if flat_full else ''}`; {rows[0]['threads']} torch thread(s) for both "
        f"policies; PPO batch {BATCH_SIZE}; "
        "3,000 active + 300 archived + 300 padding slots. *Extrapolated* rows are computed from the same "
        "policy's measured small iteration, not timed. Allocator: glibc malloc as configured by default, or "
        "set to keep freed memory (see `run`). Load: the machine's 1-minute load average (2 cores) when the "
        "row's run started and ended.",
        "",
        "| policy | allocator | parameters | file (MB) | inference, one day (ms) | iteration (steps x epochs "
        "= gradient steps) | collect (ms/env step) | update (ms/gradient step) | iteration (s) "
        "| env steps/s incl. update | load |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        how = "measured" if r["measured"] else "*extrapolated*"
        how += "" if r["finite"] else " (parameters became NaN)"
        load = "" if not r["measured"] else "{:.1f} to {:.1f}".format(*r["load_1min"])
        lines.append(
            f"| {r['policy']} | {r['allocator']} | {r['parameters']:,} | {r['file_mb']:,.2f} "
            f"| {r['inference_ms_one_day']:,.1f} "
            f"| {r['n_steps']:,} x {r['n_epochs']} = {r['gradient_steps']}, {how} "
            f"| {r['collect_ms_per_step']:,.1f} | {r['update_ms_per_gradient_step']:,.0f} "
            f"| {r['iteration_s']:,.1f} | {r['steps_per_s']:,.1f} | {load} |"
        )
    lines += [
        "",
        f"- Slot-shared vs flat, same {small}-step iteration: "
        f"{_ratio(rows, 'update_ms_per_gradient_step', small)} faster per gradient step, "
        f"{_ratio(rows, 'collect_ms_per_step', small)} per env step collected, "
        f"{_ratio(rows, 'iteration_s', small)} per iteration; "
        f"{_ratio(rows, 'inference_ms_one_day', small)} faster inference, "
        f"{_ratio(rows, 'file_mb', small)} smaller file.",
    ]
    full = [r for r in rows if r["n_steps"] == FULL_ITERATION[0]]
    if full:
        flat_how = "measured" if flat_full else "extrapolated"
        lines.append(
            f"- Full {FULL_ITERATION[0]:,} x {FULL_ITERATION[1]} iteration, slot-shared measured vs flat "
            f"{flat_how}: {_ratio(rows, 'iteration_s', FULL_ITERATION[0])} faster per iteration, "
            f"{_ratio(rows, 'update_ms_per_gradient_step', FULL_ITERATION[0])} per gradient step."
        )
    if any(r["allocator"] != "default" for r in rows):
        tuned = "keeps freed memory"
        lines.append(
            f"- Both with malloc keeping freed memory, same {small}-step iteration: "
            f"{_ratio(rows, 'update_ms_per_gradient_step', small, tuned)} faster per gradient step, "
            f"{_ratio(rows, 'iteration_s', small, tuned)} per iteration."
        )
    return "\n".join(lines)


def hinted_market(seed: int, n_days: int = 120, n_slots: int = 36) -> MarketEpisode:
    """A synthetic learning check, not a market: feature 0 is the next day's return in units of its
    volatility plus noise of the same size (a look-ahead hint on purpose), the other features are noise, so
    a policy profits only by learning to score each slot from its own row.

    :param seed: random seed.
    :param n_days: trading days.
    :param n_slots: slots, all tradable.
    """
    rng = np.random.default_rng(seed)
    log_returns = rng.normal(0.0, 0.02, size=(n_days, n_slots))
    close = 50.0 * np.exp(np.cumsum(log_returns, axis=0))
    features = rng.standard_normal((n_days, n_slots, N_FEATURES), dtype=np.float32)
    tomorrow = np.vstack([log_returns[1:], np.zeros((1, n_slots))])
    features[:, :, 0] = tomorrow / 0.02 + rng.standard_normal((n_days, n_slots))
    return MarketEpisode(
        features=features,
        close=close,
        tradable=np.ones((n_days, n_slots), dtype=bool),
        slot_state=np.ones((n_days, n_slots), dtype=np.int8),
        dates=pd.bdate_range("2016-01-04", periods=n_days),
    )


def _deterministic_return(model: Any, episode: MarketEpisode) -> float:
    """Log growth of portfolio value over the episode with the model's deterministic scores."""
    env = PortfolioEnv(episode)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        scores, cash_score = predict_weights(model, obs)
        obs, reward, done, _, _ = env.step(np.append(scores, cash_score))
        total += float(reward)
    return total


def learning(seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> list[dict]:
    """Train PPO (training defaults, 1 thread) with each architecture of ``LEARNING_ARCHITECTURES`` on one
    hinted market and score its deterministic policy on another (held-out) one; one row per run.

    :param seeds: training seeds.
    """
    train, held_out = hinted_market(0), hinted_market(1)
    rows = []
    for seed in seeds:
        for name, policy_kwargs in LEARNING_ARCHITECTURES.items():
            result = train_policy(train, "ppo", LEARNING_TIMESTEPS, seed, {"policy_kwargs": policy_kwargs})
            model = load_policy(result.model_bytes, "ppo")
            rows.append(
                {
                    "architecture": name,
                    "seed": seed,
                    "parameters": result.n_parameters,
                    "held_out_log_growth": _deterministic_return(model, held_out),
                    "train_s": result.wall_seconds,
                }
            )
    return rows


def learning_markdown(rows: list[dict]) -> str:
    """Render :func:`learning` rows: held-out log growth per seed and its mean, per architecture.

    :param rows: the rows returned by :func:`learning`.
    """
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"`{COMMAND} --learning`: PPO {LEARNING_TIMESTEPS:,} steps per run on the synthetic hinted market "
        "(36 slots; feature 0 = next-day return + equal noise), deterministic log growth on a held-out one.",
        "",
        "| architecture | parameters | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
        "|---|---:|" + "---:|" * (len(seeds) + 1),
    ]
    for name in LEARNING_ARCHITECTURES:
        runs = [r for r in rows if r["architecture"] == name]
        growth = [r["held_out_log_growth"] for r in runs]
        lines.append(
            f"| {name} | {runs[0]['parameters']:,} | "
            + " | ".join(f"{g:.3f}" for g in growth)
            + f" | {statistics.mean(growth):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--learning" in arguments:
        print(learning_markdown(learning()))
    else:
        threads = int(arguments[arguments.index("--threads") + 1]) if "--threads" in arguments else THREADS
        print(markdown(run("--quick" in arguments, threads, flat_full="--flat-full" in arguments)))
