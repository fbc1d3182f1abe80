"""Operator alerts: a critical email when any run fails, and a warning when a blocking data check upstream
of the model fails (the data that would have fed that session's recommendations was stopped)."""

import datetime as dt
import json

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)
from dagster._utils.error import SerializableErrorInfo

from magikarp_assets.core.calendar import is_trading_day
from magikarp_assets.defs.features.tensor_asset import CHECK_TENSOR_FINITE, FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import CHECK_COVERAGE, CHECK_FRESHNESS, RAW_OHLCV
from magikarp_assets.defs.universe.assets import CHECK_SLOT_MAP_VALID, SLOT_MAP
from magikarp_assets.resources.notifier import NotifierResource

# Blocking checks between the raw data and the model: a failure stops that session's recommendations.
WATCHED_CHECKS = (
    dg.AssetCheckKey(RAW_OHLCV, CHECK_COVERAGE),
    dg.AssetCheckKey(RAW_OHLCV, CHECK_FRESHNESS),
    dg.AssetCheckKey(SLOT_MAP, CHECK_SLOT_MAP_VALID),
    dg.AssetCheckKey(FEATURE_TENSOR, CHECK_TENSOR_FINITE),
)
# Failed evaluations read per check and tick; more than this between two ticks are reported over later ticks.
HISTORY_LIMIT = 100
MAX_STEPS_LISTED = 5
PARTITION_TAG = "dagster/partition"
RANGE_TAG = "dagster/asset_partition_range"


def _root_message(error: SerializableErrorInfo | None) -> str:
    """The innermost cause: the user's exception rather than Dagster's wrapper around it."""
    if error is None:
        return "no error recorded"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _session(partition: str | None) -> dt.date | None:
    return dt.date.fromisoformat(partition) if partition and is_trading_day(partition) else None


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Emails a critical alert naming the failed job, session, steps and errors when a run fails.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    """Tell the on-call that a run failed: which job, which session, which steps and why. If delivery
    fails, the tick fails and the next tick alerts the same run again (the mail stays pending)."""
    run = context.dagster_run
    partition = run.tags.get(PARTITION_TAG)
    details: dict[str, object] = {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": partition or "none",
        "assets": ", ".join(sorted(k.to_user_string() for k in run.asset_selection or ())) or "n/a",
    }
    steps = context.get_step_failure_events()
    for event in steps[:MAX_STEPS_LISTED]:
        details[f"step {event.step_key}"] = _root_message(event.step_failure_data.error)
    if not steps:
        details["run error"] = context.failure_event.message or "no message"
    where = f" for {partition}" if partition else ""
    notifier.send_alert("critical", f"Run failed: {run.job_name}{where}", details, as_of=_session(partition))


def _run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The session(s) a run covered, from its tags: a check evaluated with its asset's partition is not
    itself partitioned, so its record carries none."""
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run is not None else {}
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    start, end = tags.get(f"{RANGE_TAG}_start"), tags.get(f"{RANGE_TAG}_end")
    return f"{start}..{end}" if start and end else None


def _check_alert(
    instance: dg.DagsterInstance, notifier: NotifierResource, record: AssetCheckExecutionRecord
) -> None:
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    partition = record.partition or _run_partition(instance, record.run_id)
    details: dict[str, object] = {
        "check": record.key.name,
        "asset": record.key.asset_key.to_user_string(),
        "partition": partition or "none",
        "run_id": record.run_id,
    }
    if isinstance(evaluation, dg.AssetCheckEvaluation):
        details["severity"] = evaluation.severity.value
        details["blocking"] = bool(evaluation.blocking)
        details.update({name: value.value for name, value in evaluation.metadata.items()})
    where = f" for {partition}" if partition else ""
    notifier.send_alert(
        "warning",
        f"Check {record.key.name} on {record.key.asset_key.to_user_string()} failed{where}",
        details,
        as_of=_session(partition),
    )


@dg.sensor(
    name="blocking_check_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Emails a warning for each failed evaluation of a blocking check upstream of the model.",
)
def blocking_check_alert(context: dg.SensorEvaluationContext, notifier: NotifierResource):
    """Warn the data team when coverage, freshness, the slot map or the feature tensor fail their blocking
    check. The cursor keeps the last failed evaluation seen per check, so each failure is mailed once; the
    first tick only records where to start (no flood of old failures when the sensor is switched on)."""
    cursor: dict[str, int] | None = json.loads(context.cursor) if context.cursor else None
    storage = context.instance.event_log_storage
    seen: dict[str, int] = {}
    sent = 0
    for key in WATCHED_CHECKS:
        name = key.to_user_string()
        last = (cursor or {}).get(name, 0)
        failed = storage.get_asset_check_execution_history(
            key, limit=HISTORY_LIMIT, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        new = sorted((r for r in failed if r.id > last), key=lambda r: r.id)
        if cursor is not None:  # a delivery error fails the tick: the cursor stays and the next tick retries
            for record in new:
                _check_alert(context.instance, notifier, record)
                sent += 1
        seen[name] = max([last, *(r.id for r in new)])
    context.update_cursor(json.dumps(seen))
    if sent == 0:
        return dg.SkipReason("no new failed blocking check" if cursor is not None else "cursor initialised")
    return None
