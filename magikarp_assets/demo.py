"""`make demo`: run the daily cycle on the bundled real sample, offline, and print what it produced."""

from __future__ import annotations

import argparse
import sys

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import trading_day_window
from magikarp_assets.core.market_data.sample import SAMPLE_LAST_DAY
from magikarp_assets.definitions import build_definitions

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _run(
    defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, days: pd.DatetimeIndex | None = None
):
    tags = {}
    if days is not None:
        tags = {RANGE_START_TAG: days[0].strftime("%Y-%m-%d"), RANGE_END_TAG: days[-1].strftime("%Y-%m-%d")}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = defs.resolve_job_def(job_name).execute_in_process(
        run_config=quiet, instance=instance, tags=tags, raise_on_error=False
    )
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(event.message, file=sys.stderr)
        raise SystemExit(f"job {job_name} failed (run {result.run_id}); see `make dev` for the full log")
    return result


def _print_ingestion(result, days: pd.DatetimeIndex) -> None:
    # A range run attaches the same (whole-run) metadata to each session's materialisation.
    m = next(
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "raw_ohlcv"
    )
    meta = {k: v.value for k, v in m.metadata.items()}
    sources = {k.removeprefix("rows_from_"): v for k, v in meta.items() if k.startswith("rows_from_")}
    print(
        f"raw_ohlcv, {len(days)} sessions: {meta['rows']} bars, worst-day coverage {meta['coverage']:.2%}, "
        f"{meta['rows_quarantined']} quarantined, {meta['suspect_returns']} suspect gaps, sources {sources}"
    )
    for check in result.get_asset_check_evaluations():
        status = "PASS" if check.passed else "FAIL"
        print(f"  check {check.asset_key.to_user_string()}:{check.check_name}: {status}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", default=str(SAMPLE_LAST_DAY.date()), help="last session to run (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=5, help="number of sessions to ingest")
    args = parser.parse_args(argv)
    instance = dg.DagsterInstance.get()
    defs = build_definitions("local")
    days = trading_day_window(args.end, args.days)
    print(f"TMagikarp demo on the bundled real sample: {days[0].date()} .. {days[-1].date()} (offline)")
    _run(defs, "reference_data", instance)
    _print_ingestion(_run(defs, "daily_ingestion", instance, days), days)


if __name__ == "__main__":
    main()
