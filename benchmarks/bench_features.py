"""Feature engineering: our DuckDB SQL models (all 32 features) vs FinRL 0.3.7's FeatureEngineer (its default
stockstats indicators) on the same synthetic market; each measurement runs in a fresh process so peak
memory (max RSS) belongs to that measurement alone.

`python -m benchmarks.bench_features [--quick]`
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import pandas as pd

TITLE = "Features: SQL models vs FinRL FeatureEngineer (3 years of synthetic sessions)"
START, END = "2014-02-07", "2017-02-07"  # three years of NYSE sessions
BIG_TARGET = (3000, 10.0)  # (stocks, seconds) for the full 3-year build
RATIO_TARGET = (300, 50.0)  # (stocks, FinRL time / ours)


def _inputs(n_tickers: int):
    from magikarp_assets.core.calendar import trading_days
    from magikarp_assets.core.features.inputs import slot_membership_frame
    from magikarp_assets.core.synthetic import generate_synthetic_market

    market = generate_synthetic_market(n_tickers, START, END, seed=0)
    universe = market.universe
    slot_map = pd.DataFrame(
        {
            "ticker": universe["ticker"],
            "slot": range(len(universe)),
            "state": 1,
            "since": universe["listed_from"].astype("datetime64[ns]"),
        }
    )
    days = trading_days(START, END)
    return (
        market,
        {
            "raw_ohlcv": market.ohlcv,
            "raw_fundamentals": market.fundamentals,
            "slot_membership": slot_membership_frame(slot_map, days),
        },
        days,
    )


def _ours(n_tickers: int, incremental: bool) -> dict:
    from magikarp_assets.core.sql_models import run_model

    _, inputs, days = _inputs(n_tickers)
    target = days[-1:] if incremental else days
    if incremental:  # what a daily run reads: the lookback window only
        window = days[-210:]
        inputs = {
            **inputs,
            "raw_ohlcv": inputs["raw_ohlcv"][inputs["raw_ohlcv"]["date"] >= window[0]],
            "slot_membership": inputs["slot_membership"][inputs["slot_membership"]["date"] >= window[0]],
        }
    started = time.perf_counter()
    out = run_model("stock_features", inputs, target)
    return {"seconds": time.perf_counter() - started, "rows": len(out)}


def _finrl(n_tickers: int) -> dict:
    from magikarp_tests.finrl_peer import finrl_feature_engineer_class

    market, _, _ = _inputs(n_tickers)
    df = market.ohlcv.rename(columns={"ticker": "tic"})[
        ["date", "tic", "open", "high", "low", "close", "volume"]
    ]
    df["date"] = df["date"].dt.strftime("%Y-%m-%d")
    engineer = finrl_feature_engineer_class()(
        use_technical_indicator=True, use_vix=False, use_turbulence=False
    )
    started = time.perf_counter()
    out = engineer.preprocess_data(df)
    return {"seconds": time.perf_counter() - started, "rows": len(out)}


def _child(queue, fn, args):
    try:
        out = fn(*args)
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except BaseException as exc:  # reported to the parent, which raises it
        out = {"error": f"{type(exc).__name__}: {exc}"}
    queue.put(out)


def _measure(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise RuntimeError(f"benchmark {fn.__name__}{args} failed: {out['error']}")
    return out


def _load() -> str:
    """The 1-minute load average now (the cores may be shared: read every wall time beside it)."""
    return f"{os.getloadavg()[0]:.1f}"


def run(quick: bool = False) -> list[dict]:
    peer_sizes = (30,) if quick else (30, 300)
    rows = []
    for n in peer_sizes:
        load = _load()
        ours, peer = _measure(_ours, n, False), _measure(_finrl, n)
        rows.append(
            {
                "case": f"full 3-year build, {n} stocks",
                "ours_s": ours["seconds"],
                "ours_mb": ours["peak_mb"],
                "finrl_s": peer["seconds"],
                "finrl_mb": peer["peak_mb"],
                "ratio": peer["seconds"] / ours["seconds"],
                "load": f"{load} / {_load()}",
            }
        )
    big = 300 if quick else 3000
    for case, incremental in (
        (f"full 3-year build, {big} stocks", False),
        (f"one incremental day, {big} stocks", True),
    ):
        load = _load()
        ours = _measure(_ours, big, incremental)
        rows.append(
            {
                "case": case,
                "ours_s": ours["seconds"],
                "ours_mb": ours["peak_mb"],
                "load": f"{load} / {_load()}",
            }
        )
    return rows


def _targets(rows: list[dict]) -> str:
    """The features issue's speed targets, judged on this run's rows (when the run has them)."""
    said = []
    for r in rows:
        if r["case"] == f"full 3-year build, {BIG_TARGET[0]} stocks":
            ok = r["ours_s"] < BIG_TARGET[1]
            said.append(
                f"3-year build at {BIG_TARGET[0]:,} stocks under {BIG_TARGET[1]:.0f} s: "
                f"{'meets' if ok else 'MISSES'} ({r['ours_s']:.1f} s)"
            )
        if r["case"] == f"full 3-year build, {RATIO_TARGET[0]} stocks" and "ratio" in r:
            ok = r["ratio"] >= RATIO_TARGET[1]
            said.append(
                f"FinRL / ours at {RATIO_TARGET[0]} stocks at least {RATIO_TARGET[1]:.0f}x: "
                f"{'meets' if ok else 'MISSES'} ({r['ratio']:.0f}x)"
            )
    return "Targets: " + ("; ".join(said) if said else "not measured in this run (quick)") + "."


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | ours (s) | ours peak RSS (MB) | FinRL (s) | FinRL peak RSS (MB) | FinRL / ours "
        "| load before / after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peer = (
            f"{r['finrl_s']:.1f} | {r['finrl_mb']:.0f} | {r['ratio']:.0f}x"
            if "finrl_s" in r
            else "not run (minutes, superlinear) | | "
        )
        lines.append(f"| {r['case']} | {r['ours_s']:.2f} | {r['ours_mb']:.0f} | {peer} | {r['load']} |")
    lines.append("\n" + _targets(rows))
    lines.append(
        "\nOurs: all 32 features (15 technical, 10 point-in-time fundamental, 2 temporal, 5 padding), "
        "cross-sectionally normalised. FinRL: FeatureEngineer with its default INDICATORS (8 stockstats "
        "columns), no VIX/turbulence. Peak RSS includes generating the synthetic market in the same "
        "process. Load: the 1-minute load average of the 2 cores before and after the case (other jobs "
        "may share them)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    print(markdown(run(quick=parser.parse_args().quick)))
