"""Environment step rate: TMagikarp's PortfolioEnv (shares and weights modes) against FinRL 0.3.7's
StockTradingEnv on the same synthetic random-walk market of one trading year.

Run: ``.venv/bin/python -m benchmarks.bench_env [--quick]``.

Both environments get the same closes, the same 32 features per stock (FinRL's technical indicators) and
the same cycled bank of actions, over an episode of ``N_DAYS`` = 252 sessions (one trading year, a
realistic training episode). FinRL's step cost grows with the episode length (each step calls
``df.tic.unique()`` and ``df.index.unique()`` on the whole long frame); that is its real behaviour at this
length. Timing starts after construction and a warm-up step (construction, which for ours includes
building the episode's observation block, is reported apart), resets at the end of an episode are
included, and the environments are timed in interleaved rounds. Ours returns a fresh observation every
step (see ``PortfolioEnv``), as SB3 needs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv
from magikarp_assets.core.spec import N_FEATURES
from magikarp_tests.finrl_peer import finrl_env_module, finrl_frame, make_finrl_env

TITLE = "Environment step rate: PortfolioEnv against FinRL's StockTradingEnv"
SIZES = (30, 300, 3000, 3600)
N_DAYS = 252  # one trading year per episode; both environments reset when it ends
N_ACTIONS = 16  # bank of pre-drawn random actions, cycled, so RNG cost is not measured
ROUNDS = 3  # interleaved timing rounds per size
COMMAND = ".venv/bin/python -m benchmarks.bench_env"


def synthetic_market(n_days: int, n_stocks: int, seed: int = 0) -> MarketEpisode:
    """Random-walk closes (about 2% daily volatility) and standard-normal features, every slot tradable.

    :param n_days: trading days in the episode.
    :param n_stocks: number of slots.
    :param seed: random seed.
    """
    rng = np.random.default_rng(seed)
    log_steps = rng.normal(0.0003, 0.02, size=(n_days, n_stocks))
    close = rng.uniform(10.0, 300.0, size=n_stocks) * np.exp(np.cumsum(log_steps, axis=0))
    return MarketEpisode(
        features=rng.standard_normal((n_days, n_stocks, N_FEATURES), dtype=np.float32),
        close=close,
        tradable=np.ones((n_days, n_stocks), dtype=bool),
        slot_state=np.ones((n_days, n_stocks), dtype=np.int8),
        dates=pd.bdate_range("2016-01-04", periods=n_days),
    )


def _steps_per_second(
    env: Any, actions: np.ndarray, steps: int, seconds: float, either: bool
) -> tuple[int, float]:
    """Step ``env`` with cycled actions until ``steps`` steps and ``seconds`` have passed (with ``either``:
    until one of them has); returns (steps taken, elapsed seconds)."""
    env.reset(seed=0)
    env.step(actions[0])  # warm-up
    env.reset(seed=0)
    taken, start = 0, time.perf_counter()
    while True:
        enough_steps, enough_time = taken >= steps, time.perf_counter() - start >= seconds
        if (enough_steps or enough_time) if either else (enough_steps and enough_time):
            return taken, time.perf_counter() - start
        _, _, terminated, truncated, _ = env.step(actions[taken % len(actions)])
        taken += 1
        if terminated or truncated:
            env.reset()


class _FinrlEpisodeEnd:
    """FinRL reports the end one step late (terminal=True comes on an extra, tradeless step): end on the
    last day instead."""

    def __init__(self, env: Any, n_days: int) -> None:
        self.env, self.last_day = env, n_days - 1

    def reset(self, seed: int | None = None) -> Any:
        return self.env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        state, reward, _, truncated, info = self.env.step(action)
        return state, reward, self.env.day >= self.last_day, truncated, info


def _finrl_env(episode: MarketEpisode) -> _FinrlEpisodeEnd:
    """FinRL's env on the same closes and the same 32 features per stock as technical indicators."""
    names = [f"f{i}" for i in range(N_FEATURES)]
    tickers = [f"S{i:04d}" for i in range(episode.n_slots)]
    tech = {name: episode.features[:, :, i] for i, name in enumerate(names)}
    frame = finrl_frame(episode.dates, tickers, episode.close, tech)
    return _FinrlEpisodeEnd(make_finrl_env(frame, names), episode.n_days)


def run(quick: bool = False, sizes: tuple[int, ...] = SIZES) -> list[dict]:
    """Measure env steps per second at each size; one row per size.

    The three environments are timed in ``ROUNDS`` interleaved rounds (ours shares, ours weights, FinRL,
    then again), so load from other processes on a shared machine hits all of them alike; rates are total
    steps over total seconds.

    :param quick: one short round (ours >= 0.3 s per mode; FinRL at most 20 steps or 3 s) instead of
        ``ROUNDS`` rounds (ours >= 1 s and >= 500 steps per mode per round; FinRL at most 170 steps or 7 s
        per round, about 20 s in all).
    :param sizes: numbers of stocks to measure.
    """
    rounds = 1 if quick else ROUNDS
    ours_steps, ours_seconds = (100, 0.3) if quick else (500, 1.0)
    finrl_steps, finrl_seconds = (20, 3.0) if quick else (170, 7.0)
    finrl_env_module()  # load FinRL's module once, outside any construction time
    rows = []
    for n_stocks in sizes:
        episode = synthetic_market(N_DAYS, n_stocks)
        rng = np.random.default_rng(1)
        share_actions = rng.uniform(-1, 1, (N_ACTIONS, n_stocks)).astype(np.float32)
        weight_actions = rng.uniform(-1, 1, (N_ACTIONS, n_stocks + 1)).astype(np.float32)
        row: dict[str, Any] = {"stocks": n_stocks, "days": N_DAYS}
        envs: dict[str, tuple[Any, np.ndarray, int, float, bool]] = {}
        for name, mode, actions in (
            ("magikarp_shares", "shares", share_actions),
            ("magikarp_weights", "weights", weight_actions),
        ):
            started = time.perf_counter()
            env = PortfolioEnv(episode, mode=mode)
            env.reset()  # builds the episode's observation block on first use
            row[f"{name}_setup_s"] = time.perf_counter() - started
            envs[name] = (env, actions, ours_steps, ours_seconds, False)
        started = time.perf_counter()
        envs["finrl_shares"] = (_finrl_env(episode), share_actions, finrl_steps, finrl_seconds, True)
        row["finrl_shares_setup_s"] = time.perf_counter() - started
        totals = {name: [0, 0.0] for name in envs}
        for _ in range(rounds):
            for name, (env, actions, steps, seconds, either) in envs.items():
                taken, elapsed = _steps_per_second(env, actions, steps, seconds, either)
                totals[name][0] += taken
                totals[name][1] += elapsed
        for name, (taken, elapsed) in totals.items():
            row[f"{name}_steps"], row[f"{name}_per_s"] = taken, taken / elapsed
        row["speedup_shares"] = row["magikarp_shares_per_s"] / row["finrl_shares_per_s"]
        row["speedup_weights"] = row["magikarp_weights_per_s"] / row["finrl_shares_per_s"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """Render ``run()`` rows as a markdown table, with the command and episode length.

    :param rows: the rows returned by :func:`run`.
    """
    lines = [
        f"`{COMMAND}`; episodes of {N_DAYS} sessions; steps/s with the steps timed in parentheses, "
        "interleaved rounds on the same data and actions",
        "",
        "| stocks | ours shares (steps/s) | ours weights (steps/s) | FinRL (steps/s) "
        "| speed-up shares | speed-up weights | setup ours / FinRL (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stocks']:,} | {r['magikarp_shares_per_s']:,.0f} ({r['magikarp_shares_steps']:,}) "
            f"| {r['magikarp_weights_per_s']:,.0f} ({r['magikarp_weights_steps']:,}) "
            f"| {r['finrl_shares_per_s']:,.1f} ({r['finrl_shares_steps']:,}) "
            f"| {r['speedup_shares']:,.0f}x | {r['speedup_weights']:,.0f}x "
            f"| {r['magikarp_shares_setup_s']:.2f} / {r['finrl_shares_setup_s']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv[1:])))
