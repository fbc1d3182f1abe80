"""The fixed-slot universe: which ticker sits in which of the 3,600 tensor slots each session."""

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.membership import members_on
from magikarp_assets.core.slots import SlotMap, update_slot_map
from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_ARCHIVE
from magikarp_assets.defs.ingestion.assets import UNIVERSE, partition_days
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.resources.io_manager import MissingPartitionError

SLOT_MAP = dg.AssetKey("slot_map")
CHECK_SLOT_MAP_VALID = "slot_map_valid"
OWNER = "team:ml-platform"


def _previous_map(context: dg.AssetExecutionContext, first_day: pd.Timestamp) -> SlotMap | None:
    """Yesterday's map, from storage; None on the first session of the slot history (no earlier map is
    stored). A gap is refused: slot maps are built in order, each from the one before."""
    io_manager = context.resources.io_manager
    prev_key = previous_trading_day(first_day).strftime("%Y-%m-%d")
    try:
        return SlotMap.from_frame(io_manager.load_partition(SLOT_MAP, prev_key))
    except MissingPartitionError:
        stored = [k for k in io_manager.stored_partitions(SLOT_MAP) if k < prev_key]
        if not stored:
            context.log.info(f"slot history starts on {first_day.date()} (no earlier slot map stored)")
            return None
        raise RuntimeError(
            f"slot_map {first_day.date()} needs the slot map of the previous session {prev_key}, "
            f"which has not been materialised (the last stored one is {stored[-1]}): slot maps are built in "
            "order, so backfill from the earliest missing session"
        ) from None


@dg.asset(
    key=SLOT_MAP,
    group_name="universe",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"universe": dg.AssetIn(UNIVERSE)},
    deps=[
        dg.AssetDep(SLOT_MAP, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))
    ],
    required_resource_keys={"io_manager"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_SLOT_MAP_VALID,
            asset=SLOT_MAP,
            blocking=True,
            description="Unique tickers and slots, active/archive counts within limits.",
        )
    ],
)
def slot_map(context: dg.AssetExecutionContext, universe: pd.DataFrame):
    """Ticker -> slot 0..3599 for each session: a ticker keeps its slot while active or archived, so index
    reconstitution needs no retraining; built from the previous session's map, versioned by content."""
    days = partition_days(context)
    current = _previous_map(context, days[0])
    frames = []
    for day in days:
        current = update_slot_map(current, members_on(universe, day), day)
        frames.append(current.to_frame().assign(date=day))
    assert current is not None
    # What is stored must decode to the same, valid map (unique tickers and slots, counts in limits).
    problems = []
    for frame in frames:
        try:
            if SlotMap.from_frame(frame.drop(columns="date")).version != frame["version"].iloc[0]:
                problems.append(f"{frame['date'].iloc[0].date()}: stored map does not round-trip")
        except ValueError as exc:
            problems.append(f"{frame['date'].iloc[0].date()}: {exc}")
    yield dg.Output(
        pd.concat(frames, ignore_index=True),
        metadata={
            "version": current.version,
            "active": len(current.tickers(SLOT_ACTIVE)),
            "archived": len(current.tickers(SLOT_ARCHIVE)),
            "versions_in_run": len({f["version"].iloc[0] for f in frames}),
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_SLOT_MAP_VALID,
        passed=not problems,
        metadata={"problems": "; ".join(problems[:10]) or "none", "days": len(frames)},
    )
