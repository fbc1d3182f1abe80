"""Helpers of the reliability suite."""

import dagster as dg

DAGSTER_WRAPPERS = (
    "RetryRequestedFromPolicy",
    "DagsterExecutionStepExecutionError",
    "DagsterMaxRetriesExceededError",
)


def step_errors(result: dg.ExecuteInProcessResult) -> list[str]:
    """`ClassName: message` of the user-level cause of each step error of a run (Dagster's retry and
    execution wrappers peeled off), in order."""
    found = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cls_name in DAGSTER_WRAPPERS and error.cause is not None:
            error = error.cause
        if error is not None:
            found.append(f"{error.cls_name}: {error.message.strip()}")
    return found


def ingest_partition_in_process(root: str, partition: str) -> bool:
    """Materialise raw_ohlcv (and its quarantine) for one partition into the local store at `root`, in
    this process with its own instance; used by the concurrency test from worker processes."""
    from magikarp_assets.defs.ingestion import assets as ingestion
    from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
    from magikarp_assets.resources.market_data import MarketDataResource

    result = dg.materialize(
        [ingestion.universe_constituents, ingestion.raw_ohlcv],
        resources={
            "market_data": MarketDataResource(),
            "io_manager": PartitionedParquetIOManager(backend="local", root=root),
        },
        partition_key=partition,
        selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE],
    )
    return result.success
