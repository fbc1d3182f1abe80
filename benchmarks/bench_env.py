"""Environment step rate: TMagikarp's PortfolioEnv (shares and weights modes) against FinRL 0.3.7's
StockTradingEnv on the same synthetic random-walk market."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv
from magikarp_assets.core.spec import N_FEATURES
from magikarp_tests.finrl_peer import finrl_frame, make_finrl_env

SIZES = (30, 300, 3000, 3600)
N_DAYS = 64  # one episode; both environments reset when it ends (reset time is included)
N_ACTIONS = 16  # bank of pre-drawn random actions, cycled, so RNG cost is not measured


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


def _steps_per_second(env: Any, actions: np.ndarray, max_steps: int, max_seconds: float) -> tuple[int, float]:
    """Step ``env`` with cycled actions for ``max_steps`` or ``max_seconds``, whichever comes first."""
    env.reset(seed=0)
    env.step(actions[0])  # warm-up
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while steps < max_steps and time.perf_counter() - start < max_seconds:
        _, _, terminated, truncated, _ = env.step(actions[steps % len(actions)])
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps, time.perf_counter() - start


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


def run(quick: bool = False) -> list[dict]:
    """Measure env steps per second at each size in ``SIZES``; one row per size.

    :param quick: short measurements (about 1 s per env instead of 10 s, FinRL capped at 3 s instead of 20 s).
    """
    ours_steps, ours_seconds = (300, 1.0) if quick else (5000, 10.0)
    finrl_steps, finrl_seconds = (100, 3.0) if quick else (2000, 20.0)
    rows = []
    for n_stocks in SIZES:
        episode = synthetic_market(N_DAYS, n_stocks)
        rng = np.random.default_rng(1)
        share_actions = rng.uniform(-1, 1, (N_ACTIONS, n_stocks)).astype(np.float32)
        weight_actions = rng.uniform(-1, 1, (N_ACTIONS, n_stocks + 1)).astype(np.float32)
        row: dict[str, Any] = {"stocks": n_stocks, "days": N_DAYS}
        measures = {
            "magikarp_shares": (
                PortfolioEnv(episode, mode="shares"),
                share_actions,
                ours_steps,
                ours_seconds,
            ),
            "magikarp_weights": (PortfolioEnv(episode), weight_actions, ours_steps, ours_seconds),
            "finrl_shares": (_finrl_env(episode), share_actions, finrl_steps, finrl_seconds),
        }
        for name, (env, actions, max_steps, max_seconds) in measures.items():
            steps, seconds = _steps_per_second(env, actions, max_steps, max_seconds)
            row[f"{name}_steps"] = steps
            row[f"{name}_per_s"] = steps / seconds
        row["speedup_shares"] = row["magikarp_shares_per_s"] / row["finrl_shares_per_s"]
        row["speedup_weights"] = row["magikarp_weights_per_s"] / row["finrl_shares_per_s"]
        rows.append(row)
    return rows


def _finrl_env(episode: MarketEpisode) -> _FinrlEpisodeEnd:
    """FinRL's env on the same closes and the same 32 features per stock as technical indicators."""
    names = [f"f{i}" for i in range(N_FEATURES)]
    tickers = [f"S{i:04d}" for i in range(episode.n_slots)]
    tech = {name: episode.features[:, :, i] for i, name in enumerate(names)}
    frame = finrl_frame(episode.dates, tickers, episode.close, tech)
    return _FinrlEpisodeEnd(make_finrl_env(frame, names), episode.n_days)


def markdown(rows: list[dict]) -> str:
    """Render ``run()`` rows as a markdown table.

    :param rows: the rows returned by :func:`run`.
    """
    lines = [
        "| stocks | ours shares (steps/s) | ours weights (steps/s) | FinRL (steps/s) | FinRL steps timed "
        "| speed-up shares | speed-up weights |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stocks']:,} | {r['magikarp_shares_per_s']:,.0f} | {r['magikarp_weights_per_s']:,.0f} "
            f"| {r['finrl_shares_per_s']:,.1f} | {r['finrl_shares_steps']} | {r['speedup_shares']:,.0f}x "
            f"| {r['speedup_weights']:,.0f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv[1:])))
