"""Partition definitions, defined once and reused by every asset: NYSE sessions and months."""

from __future__ import annotations

import dagster as dg

from magikarp_assets.core.calendar import FIRST_TRADING_DAY, non_trading_weekdays, nyse

# One partition per NYSE session: weekday cron with the exchange's holidays as exclusions.
# end_offset=1 makes today's session a partition from midnight, so the 22:00 UTC run can fill it.
trading_day_partitions = dg.TimeWindowPartitionsDefinition(
    start=FIRST_TRADING_DAY,
    fmt="%Y-%m-%d",
    cron_schedule="0 0 * * 1-5",
    timezone="UTC",
    end_offset=1,
    exclusions=[
        d.tz_localize("UTC").to_pydatetime()
        for d in non_trading_weekdays(FIRST_TRADING_DAY, nyse().last_session)
    ],
)

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date="2013-03-01", end_offset=1)

# Dagster's run tags for one run over a range of partitions (a single-run backfill); not public constants.
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run materialise the partitions ``first``..``last``."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}
