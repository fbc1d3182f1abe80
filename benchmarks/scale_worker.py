"""One phase of the scale benchmark in a fresh process: the real Dagster assets materialised in-process on the
synthetic market, each stage timed with its own peak memory.

`python -m benchmarks.scale_worker PHASE N_TICKERS START END OUT_JSON [--quick]`, with DAGSTER_HOME and
MAGIKARP_DATA_ROOT pointing at the scale's own folders (set by :mod:`benchmarks.bench_scale`). Phases:

- ``setup``: reference data, ingestion, slot maps, SQL features and tensors over the history (every session
  before END), a small serving model force-promoted, and the paper portfolio over the history's last sessions;
- ``daily``: the daily cycle for the session END, the day its data arrives, stage by stage;
- ``training``: one monthly candidate training run with a fixed timestep budget.

Peak memory per stage is the process's VmHWM after the stage, reset before it through /proc/self/clear_refs
(Linux), so each stage's peak is its own; ``start_mb`` is the resident memory when the stage began.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.synthetic import cached_synthetic_market
from magikarp_assets.definitions import build_definitions
from magikarp_assets.defs.features.sql_assets import SQL_FEATURE_ASSETS
from magikarp_assets.defs.models.assets import CandidateConfig
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.resources.market_data import MarketDataResource

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SEED = 0
INGESTION = ["raw_ohlcv", "ohlcv_quarantine", "benchmark_prices"]
SIGNALS = ["daily_recommendations", "portfolio_state"]
REPORT = ["performance_metrics", "daily_report"]
# The daily cycle after the session's data arrives, in dependency order: (stage, assets).
DAILY_STAGES = [
    ("ingestion (bars + benchmarks)", INGESTION),
    ("slot map", ["slot_map"]),
    ("SQL features (DuckDB)", SQL_FEATURE_ASSETS),
    ("feature tensor", ["feature_tensor"]),
    ("signals: load model + infer + rules + write", SIGNALS),
    ("performance + email to outbox", REPORT),
]
WARMUP_SESSIONS = 5  # sessions the paper portfolio runs in setup, so the measured day starts from holdings
# The serving model of the setup: a small PPO budget (it only has to exist; training is measured apart).
SERVING_MODEL = {"total_timesteps": 256, "n_steps": 128, "batch_size": 64, "n_epochs": 1, "seed": SEED}
QUICK_TRAINING_BUDGET = 256  # --quick only: a smoke run; the record uses CandidateConfig's default budget
QUICK_WINDOW = {"training_sessions": 60, "backtest_months": 1}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next reading is this stage's peak."""
    Path("/proc/self/clear_refs").write_text("5")


class Cycle:
    """Materialises asset selections of the platform with the synthetic market provider."""

    def __init__(self, n_tickers: int, start: str, end: str) -> None:
        self.defs = build_definitions("local")
        self.instance = dg.DagsterInstance.ephemeral()
        self.market = MarketDataResource(
            provider="synthetic",
            synthetic_tickers=n_tickers,
            synthetic_start=start,
            synthetic_end=end,
            synthetic_seed=SEED,
        )
        self.resources = {**self.defs.resources, "market_data": self.market}
        self.stages: list[dict[str, Any]] = []

    def stage(
        self,
        label: str,
        selection: list[str],
        days: pd.DatetimeIndex | None = None,
        partition: str | None = None,
        run_config: dict | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Run one selection as one Dagster run and record its wall time, step times and peak memory."""
        tags = range_tags(f"{days[0].date()}", f"{days[-1].date()}") if days is not None else None
        _reset_peak()
        start_mb = _rss_mb("VmRSS")
        load = os.getloadavg()[0]
        started = time.perf_counter()
        result = dg.materialize(
            list(self.defs.assets),
            instance=self.instance,
            resources=self.resources,
            selection=selection,
            tags=tags,
            partition_key=partition,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=False,
        )
        seconds = time.perf_counter() - started
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure]
            raise RuntimeError(f"stage {label!r} failed (run {result.run_id}): " + " | ".join(failures))
        steps = {
            e.step_key: e.event_specific_data.duration_ms / 1000
            for e in result.all_events
            if e.is_step_success and e.step_key
        }
        self.stages.append(
            {
                "stage": label,
                "seconds": seconds,
                "step_seconds": steps,
                "peak_mb": _rss_mb("VmHWM"),
                "start_mb": start_mb,
                "load_1m": load,
            }
        )
        print(
            f"    {label}: {seconds:.1f} s, peak {self.stages[-1]['peak_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
        return result


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    mats = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in mats[-1].metadata.items()}


def setup(cycle: Cycle, history: pd.DatetimeIndex) -> dict[str, Any]:
    """Build the history the daily cycle reads, as a backfill through the same assets."""
    started = time.perf_counter()
    cached_synthetic_market(
        cycle.market.synthetic_tickers, cycle.market.synthetic_start, cycle.market.synthetic_end, SEED
    )
    generate_seconds = time.perf_counter() - started
    cycle.stage("reference data (universe, fundamentals)", ["universe_constituents", "raw_fundamentals"])
    cycle.stage(f"ingestion, {len(history)} sessions", INGESTION, history)
    cycle.stage(f"slot maps, {len(history)} sessions", ["slot_map"], history)
    cycle.stage(f"SQL features, {len(history)} sessions", SQL_FEATURE_ASSETS, history)
    cycle.stage(f"feature tensors, {len(history)} sessions", ["feature_tensor"], history)
    month = f"{history[-1].to_period('M').to_timestamp().date()}"
    config = {**SERVING_MODEL, **QUICK_WINDOW}
    trained = cycle.stage(
        "serving model (small PPO budget)",
        ["candidate_model"],
        partition=month,
        run_config={"ops": {"candidate_model": {"config": config}}},
    )
    version = _metadata(trained, "candidate_model")["version"]
    registry = cycle.resources["model_registry"].registry()
    promote(registry, version, approver="bench_scale", note="scale benchmark", force_reason="benchmark model")
    warmup = history[-WARMUP_SESSIONS:]
    cycle.stage(f"paper portfolio, last {len(warmup)} sessions", [*SIGNALS, "performance_metrics"], warmup)
    return {"generate_market_seconds": generate_seconds}


def daily(cycle: Cycle, day: pd.Timestamp) -> dict[str, Any]:
    """The measured daily cycle: one new session, each stage one run, as the sensors would chain them."""
    results = {
        label: cycle.stage(label, selection, partition=f"{day.date()}") for label, selection in DAILY_STAGES
    }
    recs = _metadata(results[DAILY_STAGES[4][0]], "daily_recommendations")
    return {
        "inference_ms": recs["inference_ms"],
        "calls": {k: recs[k] for k in ("n_buy", "n_sell", "n_hold")},
    }


def training(cycle: Cycle, day: pd.Timestamp, quick: bool) -> dict[str, Any]:
    """One monthly candidate with CandidateConfig's defaults (a small budget and window when quick)."""
    defaults = CandidateConfig.model_fields
    budget = QUICK_TRAINING_BUDGET if quick else defaults["total_timesteps"].default
    config = {"total_timesteps": budget, "seed": SEED, **(QUICK_WINDOW if quick else {})}
    month = f"{day.to_period('M').to_timestamp().date()}"
    result = cycle.stage(
        f"candidate_model, {budget} timesteps",
        ["candidate_model"],
        partition=month,
        run_config={"ops": {"candidate_model": {"config": config}}},
    )
    meta = _metadata(result, "candidate_model")
    return {
        "timesteps": meta["timesteps"],
        "train_seconds": meta["wall_seconds"],
        "curve": meta["episode_reward_curve"],
        "training_window": meta["training_window"],
        "hyper_parameters": {**{k: f.default for k, f in defaults.items()}, **config},
        "default_timesteps": defaults["total_timesteps"].default,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("phase", choices=["setup", "daily", "training"])
    parser.add_argument("n_tickers", type=int)
    parser.add_argument("start")
    parser.add_argument("end")
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sessions = trading_days(args.start, args.end)
    day, history = sessions[-1], sessions[:-1]
    cycle = Cycle(args.n_tickers, args.start, args.end)
    if args.phase == "setup":
        extra = setup(cycle, history)
    elif args.phase == "daily":
        extra = daily(cycle, day)
    else:
        extra = training(cycle, day, args.quick)
    args.out.write_text(json.dumps({"phase": args.phase, "stages": cycle.stages, **extra}, default=str))


if __name__ == "__main__":
    main()
