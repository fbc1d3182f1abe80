"""`make bench`: run every benchmark section and write docs/benchmarks.md with the machine and command.

Each section module exposes `run(quick: bool) -> list[dict]` and `markdown(rows) -> str`; the
peers (FinRL's FeatureEngineer and StockTradingEnv, SB3's flat MlpPolicy) run in the same process and
on the same data, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SECTIONS = [
    "benchmarks.bench_features",
    "benchmarks.bench_env",
    "benchmarks.bench_policy",
    "benchmarks.bench_scale",
]
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB RAM, Python {platform.python_version()}"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _stored_sections() -> dict[str, str]:
    """The sections of the current page by title, so `--only` can refresh some and keep the others."""
    if not OUT.exists():
        return {}
    chunks = OUT.read_text().split("\n## ")[1:]
    return {chunk.split("\n", 1)[0]: "## " + chunk.rstrip("\n") + "\n" for chunk in chunks}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps: a smoke run, not for the record")
    parser.add_argument(
        "--only", nargs="*", help="section modules to run; the page keeps the other sections as they were"
    )
    args = parser.parse_args(argv)
    command = "make bench" if not args.quick else "python -m benchmarks.run --quick"
    if args.only:
        command = f"python -m benchmarks.run --only {' '.join(args.only)}"
    stored = _stored_sections() if args.only else {}
    fresh: dict[str, str] = {}
    for name in args.only or SECTIONS:
        module = importlib.import_module(name)
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        # The record run times the flat policy's full PPO iteration too (about 5 minutes) instead of
        # extrapolating it.
        extra = {"flat_full": True} if name.endswith("bench_policy") and not args.quick else {}
        rows = module.run(quick=args.quick, **extra)
        title = getattr(module, "TITLE", name)
        fresh[title] = (
            f"## {title}\n\n{module.markdown(rows)}\n\n"
            f"(section run on {dt.date.today()} at commit `{_commit()}` by `{command}`, took "
            f"{time.perf_counter() - started:.0f} s; `python -m {name}` reruns it alone)\n"
        )
    titles = [getattr(importlib.import_module(n), "TITLE", n) for n in SECTIONS]
    parts = [
        "# Benchmarks\n",
        f"Written by `{command}` on {dt.date.today()} at commit `{_commit()}`"
        + (" (other sections kept from earlier runs, each says when)" if args.only else "")
        + ".\n",
        f"Machine: {_machine()}. Wall times are single measurements on a machine that may be shared;"
        " ratios come from the same run on the same data.\n",
        *[fresh.get(t) or stored[t] for t in titles if t in fresh or t in stored],
    ]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
