"""The model's daily input: 32 features for each of the 3,600 slots, plus masks and prices."""

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd

from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.features.tensor import pack_day, stack_tensors
from magikarp_assets.defs.ingestion.assets import partition_days
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.universe.assets import SLOT_MAP

FEATURE_TENSOR = dg.AssetKey("feature_tensor")
STOCK_FEATURES = dg.AssetKey("stock_features")
CHECK_TENSOR_FINITE = "tensor_is_finite"
OWNER = "team:ml-platform"
LOAD_THREADS = 8  # concurrent partition reads when loading a training window


@dg.asset(
    key=FEATURE_TENSOR,
    group_name="features",
    kinds={"numpy"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"stock_features": dg.AssetIn(STOCK_FEATURES), "slot_map": dg.AssetIn(SLOT_MAP)},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_TENSOR_FINITE,
            asset=FEATURE_TENSOR,
            blocking=True,
            description="No NaN/inf in features; padding slots all zero and never tradable.",
        )
    ],
)
def feature_tensor(context: dg.AssetExecutionContext, stock_features: pd.DataFrame, slot_map: pd.DataFrame):
    """Slot-aligned float32 [3600, 32] features with the tradable mask, closes and slot states of the session,
    stamped with the slot-map version and the feature-spec hash the model must match."""
    started = time.perf_counter()
    # Each day's rows by position, found in one pass (a mask per day would rescan the range every day).
    feature_rows, map_rows = _rows_by_day(stock_features), _rows_by_day(slot_map)
    none = np.array([], dtype=np.intp)
    out: dict[str, dict[str, np.ndarray]] = {}
    for day in partition_days(context):
        out[day.strftime("%Y-%m-%d")] = pack_day(
            stock_features.iloc[feature_rows.get(day, none)], slot_map.iloc[map_rows.get(day, none)]
        )
    last = out[max(out)]
    bad = [
        k
        for k, v in out.items()
        if not np.isfinite(v["features"]).all()
        or v["features"][v["slot_state"] == 0].any()
        or v["tradable"][v["slot_state"] == 0].any()
    ]
    yield dg.Output(
        out if len(out) > 1 else last,
        metadata={
            "tradable_slots": int(last["tradable"].sum()),
            "slot_map_version": str(last["slot_map_version"]),
            "feature_spec_hash": FEATURE_SPEC_HASH[:12],
            "pack_seconds": time.perf_counter() - started,
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_TENSOR_FINITE, passed=not bad, metadata={"bad_days": ", ".join(bad) or "none"}
    )


def _rows_by_day(frame: pd.DataFrame) -> dict[pd.Timestamp, np.ndarray]:
    """Row positions of each date of `frame` (its `date` column), in row order."""
    return {pd.Timestamp(d): rows for d, rows in frame.groupby("date", sort=False).indices.items()}


def load_tensor_window(io_manager, days: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Stack the stored tensors of `days` into [T, 3600, ...] arrays: one call for the range, the sessions'
    files read concurrently (on S3 each is a GET, so latency, not bandwidth, would otherwise add up)."""
    io_manager.blob_store()  # built once, before the threads share it
    keys = [d.strftime("%Y-%m-%d") for d in days]
    with ThreadPoolExecutor(max_workers=LOAD_THREADS) as pool:
        per_day = list(pool.map(lambda key: io_manager.load_partition(FEATURE_TENSOR, key), keys))
    return stack_tensors(per_day)
