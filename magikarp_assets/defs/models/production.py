"""Which model serves and how that changes: the production pointer with its history, the audited promote
and rollback jobs, the automatic rollback on live degradation, and the monthly train-backtest-shadow cycle."""

import datetime as dt

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.calendar import is_trading_day, trading_days
from magikarp_assets.core.gates import RollbackTriggers, rollback_check
from magikarp_assets.core.promotion import ProductionPointer, PromotionError, promote, read_pointer, rollback
from magikarp_assets.defs.models.assets import CANDIDATE_MODEL
from magikarp_assets.defs.models.backtest import BACKTEST_REPORT, CANDIDATE
from magikarp_assets.defs.models.common import OWNER
from magikarp_assets.defs.models.shadow import SHADOW_REPORT, SHADOW_SESSIONS, shadow_sessions
from magikarp_assets.defs.partitions import monthly_partitions, trading_day_partitions
from magikarp_assets.defs.signals.reporting import PERFORMANCE_METRICS
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource

PRODUCTION_MODEL = dg.AssetKey("production_model")
MODEL_HEALTH = dg.AssetKey("model_health")
AUTO_ROLLBACK_BY = "model_health"


def pointer_metadata(pointer: ProductionPointer) -> dict:
    columns = ["at", "action", "version", "previous", "by", "note"]
    history = pd.DataFrame([e.__dict__ for e in pointer.history], columns=columns)
    return {
        "version": pointer.version or "none",
        "events": len(pointer.history),
        "history": dg.MetadataValue.md(
            history.to_markdown(index=False) if len(history) else "no promotion yet"
        ),
        "last_action": pointer.history[-1].action if pointer.history else "none",
    }


@dg.asset(key=PRODUCTION_MODEL, group_name="models", kinds={"json"}, owners=[OWNER])
def production_model(model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """The version serving recommendations (models/production.json) and the full history of promotions
    and rollbacks, with who did each and why. Changed only by promote_model, rollback_model and the
    automatic rollback; materialising this asset just reports it."""
    return dg.MaterializeResult(metadata=pointer_metadata(read_pointer(model_registry.registry())))


class PromoteConfig(dg.Config):
    """An audited promotion: who approves which version, and why."""

    version: str = Field(description="model version to serve (status awaiting_approval unless forced)")
    approver: str = Field(description="your name: recorded in the production history")
    note: str = Field(default="", description="why it is approved")
    force: bool = Field(default=False, description="promote a version that has not passed both gates")
    force_reason: str = Field(default="", description="required with force: recorded in the history")


@dg.op(name="promote", out={})
def promote_op(context: dg.OpExecutionContext, config: PromoteConfig, model_registry: ModelRegistryResource):
    if config.force and not config.force_reason.strip():
        raise PromotionError(f"forced promotion of {config.version} needs a force_reason")
    if config.force_reason and not config.force:
        raise PromotionError("force_reason given without force=true: set force to promote ungated")
    pointer = promote(
        model_registry.registry(), config.version, config.approver, config.note,
        force_reason=config.force_reason if config.force else None,
    )  # fmt: skip
    context.log.info(f"production model is now {pointer.version} ({pointer.history[-1].action})")
    yield dg.AssetMaterialization(PRODUCTION_MODEL, metadata=pointer_metadata(pointer))


class RollbackConfig(dg.Config):
    """A manual rollback to one of the retained versions."""

    to_version: str = Field(default="", description="version to serve; empty: the previous production one")
    by: str = Field(description="your name: recorded in the production history")
    note: str = Field(default="", description="why")


@dg.op(name="rollback", out={})
def rollback_op(
    context: dg.OpExecutionContext, config: RollbackConfig, model_registry: ModelRegistryResource
):
    pointer = rollback(model_registry.registry(), config.to_version or None, config.by, config.note)
    context.log.info(f"production model rolled back to {pointer.version}")
    yield dg.AssetMaterialization(PRODUCTION_MODEL, metadata=pointer_metadata(pointer))


@dg.job(
    description="Promote an approved model version to production (audited: approver, note, force reason)."
)
def promote_model():
    promote_op()


@dg.job(description="Serve an earlier retained version again (one of the last 20), recorded in the history.")
def rollback_model():
    rollback_op()


class HealthConfig(dg.Config):
    """The automatic-rollback triggers; left empty, each comes from MAGIKARP_ROLLBACK_* or the default."""

    window: int | None = None
    max_drawdown: float | None = None
    sharpe_gap: float | None = None
    min_sessions: int | None = None

    def triggers(self) -> RollbackTriggers:
        base = RollbackTriggers.from_env().__dict__
        return RollbackTriggers(**{**base, **{k: v for k, v in self.model_dump().items() if v is not None}})


def served_tail(metrics: pd.DataFrame, version: str) -> pd.DataFrame:
    """The trailing sessions served by ``version``, with the session before them as the base."""
    served = (metrics["model_version"] == version).to_numpy()
    first = len(served)
    while first > 0 and served[first - 1]:
        first -= 1
    return metrics.iloc[max(first - 1, 0) :]


@dg.asset(
    key=MODEL_HEALTH,
    group_name="models",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    ins={"performance_metrics": dg.AssetIn(PERFORMANCE_METRICS)},
    automation_condition=dg.AutomationCondition.eager(),
)
def model_health(
    context: dg.AssetExecutionContext,
    config: HealthConfig,
    performance_metrics: pd.DataFrame,
    model_registry: ModelRegistryResource,
    notifier: NotifierResource,
) -> pd.DataFrame:
    """After each session: the production model's trailing drawdown and Sharpe against QQQ; past a trigger
    it is rolled back automatically to the previous approved version (recorded as auto_rollback in the
    production history) and a critical email is sent."""
    registry = model_registry.registry()
    pointer = read_pointer(registry)
    day = context.partition_key
    serving = str(performance_metrics["model_version"].iloc[-1])
    triggers = config.triggers()
    tail = served_tail(performance_metrics, serving).set_index("date")
    verdict = rollback_check(tail["value"], tail["benchmark"], triggers)
    action = "none"
    if not verdict.passed and serving != pointer.version:
        action = f"none: production is already {pointer.version}"
    elif not verdict.passed:
        note = f"session {day}: " + "; ".join(verdict.failures)
        details = {
            "session": day,
            "model": serving,
            **{f"rule {i + 1}": r for i, r in enumerate(verdict.reasons)},
        }
        try:
            pointer = rollback(registry, None, by=AUTO_ROLLBACK_BY, note=note, automatic=True)
            action = f"auto_rollback to {pointer.version}"
            details["rolled back to"] = pointer.version
            title = f"Model {serving} rolled back to {pointer.version} ({day})"
        except PromotionError as error:
            action = f"rollback impossible: {error}"
            details["rollback"] = str(error)
            title = f"Model {serving} degraded and cannot be rolled back ({day})"
        notifier.send_alert("critical", title, details, as_of=dt.date.fromisoformat(day))
        context.log.error(f"{title}: {note}")
    context.add_output_metadata(
        {
            "model": serving,
            "action": action,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in verdict.reasons)),
        }
    )
    return pd.DataFrame(
        {"date": [pd.Timestamp(day)], "model_version": [serving], "triggered": [not verdict.passed],
         "action": [action], "reasons": ["; ".join(verdict.reasons)]}
    )  # fmt: skip


monthly_model_job = dg.define_asset_job(
    "monthly_model_cycle",
    selection=dg.AssetSelection.assets(CANDIDATE_MODEL, BACKTEST_REPORT),
    partitions_def=monthly_partitions,
    description="Train the month's candidate and backtest it; a pass puts it in shadow mode.",
)
shadow_report_job = dg.define_asset_job(
    "shadow_report_job", selection=dg.AssetSelection.assets(SHADOW_REPORT), partitions_def=monthly_partitions
)

JOBS = [promote_model, rollback_model, monthly_model_job, shadow_report_job]


def first_session_of_month(day: dt.date) -> bool:
    """Whether ``day`` is the month's first NYSE session."""
    start = day.replace(day=1)
    return is_trading_day(day) and trading_days(start, day)[0].date() == day


@dg.schedule(
    job=monthly_model_job, cron_schedule="0 6 * * 1-5", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the first trading day of each month: train, backtest and (if it passes) start shadow.",
)  # fmt: skip
def monthly_model_schedule(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.date()
    if not first_session_of_month(today):
        return dg.SkipReason(f"{today} is not the first trading day of its month")
    month = today.replace(day=1).isoformat()
    return dg.RunRequest(run_key=f"monthly-{month}", partition_key=month)


@dg.sensor(
    job=shadow_report_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Runs shadow_report for a candidate once it has {SHADOW_SESSIONS} shadow sessions.",
)  # fmt: skip
def shadow_report_sensor(
    context: dg.SensorEvaluationContext,
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    model_registry: ModelRegistryResource,
):
    """Request the shadow_report of each month whose candidate is still in shadow with enough sessions."""
    registry = model_registry.registry()
    requests = []
    for month in io_manager.stored_partitions(BACKTEST_REPORT):
        report = io_manager.load_partition(BACKTEST_REPORT, month)
        version = str(report.loc[report["strategy"] == CANDIDATE, "version"].iloc[0])
        if registry.manifest(version).status != "shadow":
            continue
        if shadow_sessions(io_manager, version, month)["date"].nunique() >= SHADOW_SESSIONS:
            requests.append(dg.RunRequest(run_key=f"shadow-{month}-{version}", partition_key=month))
    return requests or dg.SkipReason("no shadow candidate with enough sessions")
