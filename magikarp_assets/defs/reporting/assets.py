"""The monthly performance report (after each month's last session) and the recommendation history: every
past call with the model that made it and what the stock did since."""

import datetime as dt

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.metrics import SUCCESS_HORIZONS, monthly_signal_success_rate, success_rates
from magikarp_assets.core.promotion import read_pointer
from magikarp_assets.core.reports.health import health_metrics
from magikarp_assets.core.reports.history import build_history_page, recommendation_history
from magikarp_assets.core.reports.monthly import build_monthly_report, last_session_of_month, monthly_summary
from magikarp_assets.core.reports.page import pct
from magikarp_assets.core.spec import PRIMARY_BENCHMARK
from magikarp_assets.defs.partitions import monthly_partitions
from magikarp_assets.defs.reporting.publish import gather_health, top_markdown, write_report
from magikarp_assets.defs.signals.assets import DAILY_RECOMMENDATIONS, OWNER
from magikarp_assets.defs.signals.reporting import PERFORMANCE_METRICS
from magikarp_assets.resources.io_manager import MissingPartitionError, PartitionedParquetIOManager

MONTHLY_REPORT = dg.AssetKey("monthly_report")
RECOMMENDATION_HISTORY = dg.AssetKey("recommendation_history")


def _portfolio_recommendations(
    io_manager: PartitionedParquetIOManager, performance: pd.DataFrame
) -> pd.DataFrame:
    """Every stored recommendation of the sessions the paper portfolio traded (the series' dates)."""
    frames = []
    for day in pd.to_datetime(performance["date"]):
        key = day.strftime("%Y-%m-%d")
        try:
            frames.append(io_manager.load_partition(DAILY_RECOMMENDATIONS, key))
        except MissingPartitionError:
            raise RuntimeError(
                f"daily_recommendations {key} is missing although the paper portfolio traded that session: "
                "re-materialise it (the history and success rates are built from every session)"
            ) from None
    return pd.concat(frames, ignore_index=True)


def _performance_until(io_manager: PartitionedParquetIOManager, day: pd.Timestamp, why: str) -> pd.DataFrame:
    key = day.strftime("%Y-%m-%d")
    try:
        return io_manager.load_partition(PERFORMANCE_METRICS, key)
    except MissingPartitionError:
        raise RuntimeError(
            f"{why} needs performance_metrics of session {key}, which has not been materialised: run the "
            "daily cycle (daily_signals job) up to that session first"
        ) from None


class HistoryConfig(dg.Config):
    """Which outcomes the history carries (typed run config)."""

    success_horizons: list[int] = Field(
        default=list(SUCCESS_HORIZONS), description="sessions after which a BUY/SELL call is judged vs QQQ"
    )


@dg.asset(
    key=RECOMMENDATION_HISTORY,
    group_name="reporting",
    kinds={"parquet", "duckdb", "html"},
    owners=[OWNER],
    deps=[DAILY_RECOMMENDATIONS, PERFORMANCE_METRICS],
    required_resource_keys={"io_manager"},
    automation_condition=dg.AutomationCondition.eager(),
)
def recommendation_history_table(context: dg.AssetExecutionContext, config: HistoryConfig) -> pd.DataFrame:
    """Every recommendation the paper portfolio received, with the model version that made it and the
    stock's realised return since (and QQQ's), plus its outcome after 30 and 90 sessions: the rows the
    success rates count. One Parquet table, queryable with DuckDB (``select * from
    read_parquet('<storage>/recommendation_history.parquet') where ticker = 'AAPL'``), and a searchable
    HTML page by ticker or date linked here."""
    io_manager: PartitionedParquetIOManager = context.resources.io_manager
    stored = io_manager.stored_partitions(PERFORMANCE_METRICS)
    if not stored:
        raise RuntimeError("recommendation_history needs performance_metrics: run the daily cycle first")
    performance = _performance_until(io_manager, pd.Timestamp(stored[-1]), "recommendation_history")
    recs = _portfolio_recommendations(io_manager, performance)
    bench = performance.set_index("date")["benchmark"]
    horizons = tuple(config.success_horizons)
    history = recommendation_history(recs, bench, stored[-1], horizons)
    report = write_report(
        io_manager, "history/recommendation_history.html", build_history_page(history, stored[-1])
    )
    calls = history[history["action"].isin(["BUY", "SELL"])]
    metadata: dict = {
        **report,
        "as_of": stored[-1],
        "sessions": int(history["date"].nunique()),
        "n_calls": len(calls),
        "latest_calls": top_markdown(
            calls, ["date", "ticker", "action", "model_version", "return_since", "excess_return_since"]
        ),
    }
    for horizon in horizons:
        status = history[f"status_{horizon}s"]
        resolved = int(status.isin(["success", "failure"]).sum())
        metadata[f"success_rate_{horizon}d"] = (
            float((status == "success").sum() / resolved) if resolved else float("nan")
        )
        metadata[f"n_resolved_{horizon}d"] = resolved
    context.add_output_metadata(metadata)
    return history


def _email_details(month: str, figures: dict, report_url: str) -> dict[str, object]:
    details: dict[str, object] = {
        "month": month,
        "portfolio return": pct(figures["month_return"], True),
        f"{PRIMARY_BENCHMARK} return": pct(figures["benchmark_month_return"], True),
        f"excess vs {PRIMARY_BENCHMARK}": pct(figures["excess_month_return"], True),
        "Sharpe ratio in the month": "n/a"
        if pd.isna(figures["month_sharpe_ratio"])
        else f"{figures['month_sharpe_ratio']:.2f}",
        "max drawdown in the month": pct(figures["month_max_drawdown"], True),
        "portfolio value": f"${figures['portfolio_value']:,.2f}",
        "cumulative return": pct(figures["cumulative_return"], True),
        "model versions": figures["model_versions"],
    }
    for key, value in figures.items():
        if key.startswith("success_rate_"):
            details[key.replace("_", " ").replace("d", " sessions")] = pct(value)
    details["full report"] = report_url
    return details


@dg.asset(
    key=MONTHLY_REPORT,
    group_name="reporting",
    kinds={"email", "html"},
    owners=[OWNER],
    partitions_def=monthly_partitions,
    deps=[PERFORMANCE_METRICS],
    required_resource_keys={"io_manager", "model_registry", "notifier"},
)
def monthly_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The month's performance, once its last session is in: the month's return against QQQ, Sharpe,
    drawdown, success rates and the 12-month success of monthly signals, mailed to the team (info level),
    with an offline HTML report (equity curve, drawdown, rolling Sharpe, success rates, model versions with
    promotions and rollbacks) linked here. The sensor monthly_report_after_month_end requests it as soon as
    performance_metrics of the month's last session exists."""
    io_manager: PartitionedParquetIOManager = context.resources.io_manager
    registry = context.resources.model_registry.registry()
    month = context.partition_key[:7]
    last = last_session_of_month(context.partition_key)
    performance = _performance_until(io_manager, last, f"the monthly report of {month}")
    recs = _portfolio_recommendations(io_manager, performance)
    calls = recs[recs["action"].isin(["BUY", "SELL"])]
    prices = recs.pivot_table(index="date", columns="ticker", values="price", aggfunc="last")
    bench = performance.set_index("date")["benchmark"]
    success = success_rates(calls, prices, bench, last)
    monthly = monthly_signal_success_rate(calls, prices, bench, last)
    health = gather_health(context, io_manager, registry, last.date())
    html = build_monthly_report(month, performance, read_pointer(registry).history, success, monthly, health)
    report = write_report(io_manager, f"monthly/{month}.html", html)
    figures = monthly_summary(performance, month)
    receipt = context.resources.notifier.send_alert(
        "info",
        f"Monthly performance {month}",
        _email_details(month, figures, report["report_url"].value),
        as_of=dt.date(last.year, last.month, last.day),
    )
    numbers = {k: float(v) for k, v in figures.items() if not isinstance(v, str)}
    return dg.MaterializeResult(
        metadata={
            **report,
            **numbers,
            **health_metrics(health),
            "monthly_signal_success_rate": monthly.success_rate,
            "last_session": str(last.date()),
            "model_versions": str(figures["model_versions"]),
            "sent": receipt is not None,
            "email_subject": receipt.subject if receipt else "info level disabled",
        }
    )


@dg.sensor(
    name="monthly_report_after_month_end",
    asset_selection=[MONTHLY_REPORT],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the monthly report of each month whose last NYSE session has performance_metrics "
    "and no report yet (once per month: the run key is the month).",
)
def monthly_report_after_month_end(context: dg.SensorEvaluationContext):
    """Run the monthly report after the month's last trading day, keyed on that session's metrics."""
    measured = context.instance.get_materialized_partitions(PERFORMANCE_METRICS)
    reported = context.instance.get_materialized_partitions(MONTHLY_REPORT)
    requests = []
    for month in sorted({key[:7] for key in measured}):
        partition = f"{month}-01"
        if partition in reported or partition < monthly_partitions.get_first_partition_key():
            continue
        if last_session_of_month(partition).strftime("%Y-%m-%d") in measured:
            requests.append(dg.RunRequest(run_key=f"monthly_report:{month}", partition_key=partition))
    return requests or dg.SkipReason("no month has ended since the last report")
