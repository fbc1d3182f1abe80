"""System health at a glance: the last run of each job, failed checks, data freshness per source and the
production model's age, as gathered from the orchestrator and rendered as a report section."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.reports.page import esc, kpis_html, number, section, table_html

FAILED_STATUSES = ("FAILURE", "CANCELED")


@dataclass(frozen=True)
class JobRun:
    """The latest run of one job.

    :param job: job name.
    :param status: run status (SUCCESS, FAILURE, STARTED...).
    :param run_id: the run's id.
    :param partition: partition (or range) it covered, if any.
    :param ended_at: end time (UTC) when finished.
    """

    job: str
    status: str
    run_id: str
    partition: str | None = None
    ended_at: dt.datetime | None = None


@dataclass(frozen=True)
class CheckFailure:
    """A check whose latest evaluation failed.

    :param check: check name.
    :param asset: the asset it checks.
    :param partition: the partition evaluated, if known.
    :param severity: ERROR (blocking) or WARN.
    :param reason: what the check reported.
    """

    check: str
    asset: str
    partition: str | None
    severity: str
    reason: str


@dataclass(frozen=True)
class SourceFreshness:
    """How current one ingested source is.

    :param asset: the ingestion asset (raw_ohlcv, benchmark_prices...).
    :param sources: vendors that delivered its latest materialisation (e.g. ``sample:iex``).
    :param latest_partition: newest session stored (None: never, or not partitioned).
    :param materialised_at: when it was last written (UTC).
    :param sessions_behind: NYSE sessions between the latest partition and the report's day (0 = current).
    """

    asset: str
    sources: str
    latest_partition: str | None
    materialised_at: dt.datetime | None
    sessions_behind: int | None


@dataclass(frozen=True)
class ModelAge:
    """The production model and how old it is.

    :param version: serving version (None: no production model).
    :param promoted_at: when it was promoted (ISO, UTC).
    :param days_since_promotion: calendar days from promotion to the report's day.
    :param training_end: last session of its training window.
    :param sessions_since_training: NYSE sessions from the training window's end to the report's day.
    """

    version: str | None = None
    promoted_at: str | None = None
    days_since_promotion: float | None = None
    training_end: str | None = None
    sessions_since_training: int | None = None


@dataclass(frozen=True)
class SystemHealth:
    """Everything the health section shows, as of one day."""

    as_of: dt.date
    runs: tuple[JobRun, ...] = ()
    failed_checks: tuple[CheckFailure, ...] = ()
    freshness: tuple[SourceFreshness, ...] = ()
    model: ModelAge = field(default_factory=ModelAge)


def sessions_between(start: str | dt.date | None, end: str | dt.date) -> int | None:
    """NYSE sessions after ``start`` up to and including ``end`` (0 when equal, None when unknown).

    :param start: an earlier session.
    :param end: the later day.
    """
    if start is None:
        return None
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if start_ts >= end_ts:
        return 0
    return max(0, len(trading_days(start_ts, end_ts)) - 1)


def model_age(
    version: str | None, promoted_at: str | None, training_end: str | None, as_of: dt.date, now: dt.datetime
) -> ModelAge:
    """The production model's age: sessions from its training data's end to ``as_of``, and wall-clock days
    since its promotion.

    :param version: the serving version.
    :param promoted_at: ISO time of its (latest) promotion.
    :param training_end: last session of its training window.
    :param as_of: the report's day.
    :param now: the current time (UTC, timezone-aware).
    """
    days = None
    if promoted_at:
        promoted = pd.Timestamp(promoted_at)
        promoted = promoted.tz_localize("UTC") if promoted.tzinfo is None else promoted
        days = (pd.Timestamp(now) - promoted) / pd.Timedelta(days=1)
    return ModelAge(version, promoted_at, days, training_end, sessions_between(training_end, as_of))


def health_metrics(health: SystemHealth) -> dict[str, float]:
    """Numbers worth plotting over time (Dagster metadata): failed runs and checks, the stalest source,
    the model's age.

    :param health: the gathered health.
    """
    behind = [f.sessions_behind for f in health.freshness if f.sessions_behind is not None]
    return {
        "health_failed_runs": float(sum(r.status in FAILED_STATUSES for r in health.runs)),
        "health_failed_checks": float(len(health.failed_checks)),
        "health_max_sessions_behind": float(max(behind)) if behind else float("nan"),
        "model_sessions_since_training": float(health.model.sessions_since_training)
        if health.model.sessions_since_training is not None
        else float("nan"),
    }


def _when(value: dt.datetime | None) -> str:
    return "n/a" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def health_section(health: SystemHealth) -> str:
    """The system-health section of a report.

    :param health: the gathered health.
    """
    numbers = health_metrics(health)
    model = health.model
    kpis = kpis_html(
        [
            ("failed latest runs", f"{numbers['health_failed_runs']:.0f}"),
            ("failed checks", f"{numbers['health_failed_checks']:.0f}"),
            ("stalest source, sessions behind", number(numbers["health_max_sessions_behind"], 0)),
            ("production model", model.version or "none"),
            ("sessions since its training data", number(model.sessions_since_training, 0)),
            ("days since promotion", number(model.days_since_promotion, 1)),
        ]
    )
    runs = pd.DataFrame(
        [(r.job, r.status, r.partition or "", _when(r.ended_at), r.run_id[:8]) for r in health.runs],
        columns=["job", "status", "partition", "ended", "run"],
    )
    checks = pd.DataFrame(
        [(c.check, c.asset, c.partition or "", c.severity, c.reason) for c in health.failed_checks],
        columns=["check", "asset", "partition", "severity", "reason"],
    )
    fresh = pd.DataFrame(
        [
            (f.asset, f.sources, f.latest_partition or "n/a", _when(f.materialised_at), f.sessions_behind)
            for f in health.freshness
        ],
        columns=["asset", "sources", "latest partition", "written", "sessions behind"],
    )
    status_fmt = {"status": lambda s: f"FAILED ({s})" if s in FAILED_STATUSES else s}
    return section(
        f"System health as of {health.as_of}",
        kpis,
        "<h3>Last run of each job</h3>",
        table_html(runs, status_fmt),
        "<h3>Failed checks (latest evaluation)</h3>",
        table_html(checks),
        "<h3>Data freshness per source</h3>",
        table_html(fresh, {"sessions behind": lambda v: "n/a" if v is None or pd.isna(v) else str(int(v))}),
        f"<p class='note'>Production model {esc(model.version or 'none')}: promoted "
        f"{esc(model.promoted_at or 'n/a')}, trained on data up to {esc(model.training_end or 'n/a')}.</p>",
    )
