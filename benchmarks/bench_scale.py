"""Scale: the whole daily cycle through the real Dagster assets on the synthetic market at 500, 1,500 and
3,000 active tickers (3,600 slots, 3 years of history), stage by stage with wall time and peak memory, how
each stage grows from the smallest to the largest scale, and one monthly training run with the default budget.

`python -m benchmarks.bench_scale [--quick]`. Each scale gets its own empty store and Dagster home; each phase
(history build, daily cycle, training) runs in a fresh process (:mod:`benchmarks.scale_worker`), as a daily
run would, so no phase inherits another's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TITLE = "Scale: the daily cycle through the Dagster assets at 500 to 3,000 tickers, and monthly training"
COMMAND = ".venv/bin/python -m benchmarks.bench_scale"
# Three years of sessions ending where the real sample ends; the last session is the measured new day.
WINDOW = {False: ("2014-02-07", "2017-02-07"), True: ("2016-02-08", "2017-02-07")}
SCALES = {False: (500, 1500, 3000), True: (40, 120)}
DAILY_TARGET_S, DAILY_TARGET_MB, SIGNAL_TARGET_S, TRAINING_TARGET_S = 60.0, 4096.0, 5.0, 3600.0
SIGNAL_STAGE = "signals: load model + infer + rules + write"


def _phase(phase: str, n: int, home: Path, quick: bool) -> dict[str, Any]:
    start, end = WINDOW[quick]
    out = home / f"{phase}.json"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MAGIKARP_DATA_ROOT": str(home / "storage"),
        "MAGIKARP_DEPLOYMENT": "local",
    }
    cmd = [sys.executable, "-m", "benchmarks.scale_worker", phase, str(n), start, end, str(out)]
    print(f"  {phase} at {n:,} tickers ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([*cmd, *(["--quick"] if quick else [])], env=env, check=True)
    result = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - started
    return result


def run(quick: bool = False) -> list[dict]:
    """One row per scale: {"tickers", "setup", "daily", and at the largest scale "training"}.

    :param quick: two tiny scales over one year, a 256-step training run (a smoke run, not for the record).
    """
    rows = []
    scales = SCALES[quick]
    for n in scales:
        with tempfile.TemporaryDirectory(prefix=f"magikarp-scale-{n}-") as tmp:
            home = Path(tmp)
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            row: dict[str, Any] = {"tickers": n, "load_before": os.getloadavg()}
            row["setup"] = _phase("setup", n, home, quick)
            row["daily"] = _phase("daily", n, home, quick)
            if n == scales[-1]:
                row["training"] = _phase("training", n, home, quick)
            row["load_after"] = os.getloadavg()
        rows.append(row)
    return rows


def _stage_table(stages: list[dict]) -> list[str]:
    lines = [
        "| stage | wall (s) | in Dagster steps (s) | peak RSS (MB) | RSS at start (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(
            f"| {s['stage']} | {s['seconds']:.2f} | {sum(s['step_seconds'].values()):.2f} | "
            f"{s['peak_mb']:,.0f} | {s['start_mb']:,.0f} |"
        )
    return lines


def _daily_totals(row: dict) -> tuple[float, float]:
    stages = row["daily"]["stages"]
    return sum(s["seconds"] for s in stages), max(s["peak_mb"] for s in stages)


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def _growth(rows: list[dict]) -> list[str]:
    small, big = rows[0], rows[-1]
    factor = big["tickers"] / small["tickers"]
    head = " | ".join(f"{r['tickers']:,} (s)" for r in rows)
    lines = [
        f"| daily stage | {head} | ratio {big['tickers']:,} / {small['tickers']:,} | linear or better |",
        "|---|" + "---:|" * (len(rows) + 2),
    ]
    labels = [s["stage"] for s in small["daily"]["stages"]]
    for i, label in enumerate([*labels, "whole daily cycle"]):
        if i < len(labels):
            times = [r["daily"]["stages"][i]["seconds"] for r in rows]
        else:
            times = [_daily_totals(r)[0] for r in rows]
        ratio = times[-1] / times[0]
        cells = " | ".join(f"{t:.2f}" for t in times)
        lines.append(f"| {label} | {cells} | {ratio:.2f}x | {'yes' if ratio <= factor else 'NO'} |")
    lines.append(
        f"\nTickers grow {factor:.0f}x; a stage grows no worse than linearly when its time ratio is at most "
        f"{factor:.0f}x (fixed costs, such as Dagster's run start and loading the model, make most ratios "
        "far smaller)."
    )
    return lines


def _curve(curve: list[float], blocks: int = 10) -> str:
    """The learning curve as the mean episode reward of (up to) `blocks` consecutive groups of episodes."""
    if not curve:
        return "no complete episode"
    size = -(-len(curve) // blocks)
    groups = [curve[i : i + size] for i in range(0, len(curve), size)]
    cells = ", ".join(
        f"{i * size + 1}-{i * size + len(g)}: {sum(g) / len(g):.4f}" for i, g in enumerate(groups)
    )
    return f"{len(curve)} episodes; mean total reward per group of episodes, in order: {cells}"


def _training(row: dict) -> list[str]:
    t = row["training"]
    stage = t["stages"][0]
    rate = t["timesteps"] / t["train_seconds"]
    overhead = stage["seconds"] - t["train_seconds"]
    default = t["default_timesteps"]
    hp = t["hyper_parameters"]
    if t["timesteps"] >= default:
        budget = (
            f"Default monthly budget (CandidateConfig total_timesteps = {default:,}): measured "
            f"{stage['seconds'] / 60:.1f} min for the whole run; target under 60 min: "
            f"{_verdict(stage['seconds'] < TRAINING_TARGET_S)}."
        )
    else:
        projected = default / rate + overhead
        budget = (
            f"Default monthly budget (CandidateConfig total_timesteps = {default:,}): extrapolated "
            f"{projected / 60:.1f} min at this rate (with the run's fixed {overhead:.0f} s); target under "
            f"60 min: {_verdict(projected < TRAINING_TARGET_S)}."
        )
    return [
        "| budget (timesteps) | training window | wall, whole run (s) | training (s) "
        "| env steps/s incl. updates | peak RSS (MB) |",
        "|---:|---|---:|---:|---:|---:|",
        f"| {t['timesteps']:,} | {t['training_window']} | {stage['seconds']:.1f} "
        f"| {t['train_seconds']:.1f} | {rate:.1f} | {stage['peak_mb']:,.0f} |",
        "",
        f"Settings: {hp['algorithm'].upper()}, n_steps {hp['n_steps']}, batch {hp['batch_size']}, "
        f"{hp['n_epochs']} epochs, {hp['training_sessions']} training sessions, seed {hp['seed']} "
        "(CandidateConfig defaults).",
        f"Learning curve (total reward, the sum of daily log returns net of costs, of each completed "
        f"episode over the training window): {_curve(t['curve'])}.",
        budget,
    ]


def markdown(rows: list[dict]) -> str:
    """The section: history build and daily cycle per scale, growth, signal generation, training."""
    first = rows[0]
    start_day = first["setup"]["stages"][1]["stage"].split(", ")[-1]
    lines = [
        f"`{COMMAND}`; synthetic market (SYNTHETIC data: factor model, listings and delistings), history of "
        f"{start_day} before the measured session; 3,600 slots at every scale. Each stage is one in-process "
        "Dagster run of the real assets (`dg.materialize`) with the synthetic provider, local Parquet/.npz "
        "store, model registry and outbox; wall time includes Dagster's run overhead, *in Dagster steps* is "
        "the sum of the ops' own durations. Peak RSS is the stage's own (VmHWM reset before each stage) in a "
        "process that imported Dagster, pandas, DuckDB and torch; each phase runs in a fresh process.",
    ]
    for row in rows:
        n = row["tickers"]
        total, peak = _daily_totals(row)
        load = f"load average {row['load_before'][0]:.2f} before, {row['load_after'][0]:.2f} after"
        lines += [
            f"\n### {n:,} active tickers ({load})\n",
            f"Daily cycle for one new session after its data arrives: **{total:.1f} s**, peak "
            f"**{peak:,.0f} MB** (targets at 3,000: under {DAILY_TARGET_S:.0f} s and "
            f"{DAILY_TARGET_MB / 1024:.0f} GB).\n",
            *_stage_table(row["daily"]["stages"]),
            f"\nHistory build (setup, measured apart; generating the synthetic market took "
            f"{row['setup']['generate_market_seconds']:.1f} s more):\n",
            *_stage_table(row["setup"]["stages"]),
        ]
    big = rows[-1]
    total, peak = _daily_totals(big)
    signal = next(s for s in big["daily"]["stages"] if s["stage"] == SIGNAL_STAGE)
    lines += [
        "\n### Targets\n",
        f"- Daily cycle at {big['tickers']:,} tickers: {total:.1f} s (target < {DAILY_TARGET_S:.0f} s: "
        f"{_verdict(total < DAILY_TARGET_S)}), peak {peak:,.0f} MB (target < 4 GB: "
        f"{_verdict(peak < DAILY_TARGET_MB)}).",
        f"- Signal generation for 3,600 slots (load the hash-verified model, infer, apply the BUY/SELL/HOLD "
        f"rules, roll the paper portfolio, write both partitions): {signal['seconds']:.2f} s as a Dagster "
        f"run, {sum(signal['step_seconds'].values()):.2f} s in the step, of which inference "
        f"{big['daily']['inference_ms']:.0f} ms (target < {SIGNAL_TARGET_S:.0f} s: "
        f"{_verdict(signal['seconds'] < SIGNAL_TARGET_S)}).",
        "\n### Growth from the smallest to the largest scale\n",
        *_growth(rows),
        f"\n### Monthly training at 3,600 slots ({big['tickers']:,} active tickers)\n",
        *_training(big),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    print(markdown(run(quick=parser.parse_args().quick)))
