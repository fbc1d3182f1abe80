"""Ingestion jobs and their schedules: daily bars at 22:00 UTC on sessions, the universe weekly."""

import dagster as dg

from magikarp_assets.core.calendar import is_trading_day
from magikarp_assets.defs.ingestion.assets import (
    BENCHMARK_PRICES,
    OHLCV_QUARANTINE,
    RAW_FUNDAMENTALS,
    RAW_OHLCV,
    UNIVERSE,
)
from magikarp_assets.defs.partitions import trading_day_partitions

daily_ingestion_job = dg.define_asset_job(
    "daily_ingestion",
    selection=dg.AssetSelection.assets(RAW_OHLCV, OHLCV_QUARANTINE, BENCHMARK_PRICES),
    partitions_def=trading_day_partitions,
    description="Fetch, screen and store one session's bars and benchmark closes.",
)

reference_data_job = dg.define_asset_job(
    "reference_data",
    selection=dg.AssetSelection.assets(UNIVERSE, RAW_FUNDAMENTALS),
    description="Refresh the universe constituents and the fundamentals history.",
)


@dg.schedule(cron_schedule="0 22 * * 1-5", job=daily_ingestion_job, execution_timezone="UTC")
def daily_ingestion_schedule(context: dg.ScheduleEvaluationContext):
    """After the US close, on NYSE sessions only (holidays are skipped with a reason)."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    if not is_trading_day(day):
        return dg.SkipReason(f"{day} is not an NYSE trading day")
    return dg.RunRequest(run_key=day, partition_key=day)


reference_data_schedule = dg.ScheduleDefinition(
    job=reference_data_job, cron_schedule="0 21 * * 1", execution_timezone="UTC", name="weekly_reference_data"
)
