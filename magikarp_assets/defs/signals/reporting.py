"""Reporting on the paper portfolio: its performance against QQQ and the success of its calls, kept
incrementally day by day, and the daily email to the team."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.metrics import (
    FAILURE,
    SUCCESS,
    SUCCESS_HORIZONS,
    performance_summary,
    recommendation_outcomes,
)
from magikarp_assets.core.notify import equity_curve_png, weights_bar_png
from magikarp_assets.core.reports.daily import build_daily_report, daily_kpis
from magikarp_assets.core.reports.health import health_metrics
from magikarp_assets.core.spec import PRIMARY_BENCHMARK
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES, partition_days
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.reporting.publish import gather_health, known_sectors, top_markdown, write_report
from magikarp_assets.defs.signals.assets import (
    DAILY_RECOMMENDATIONS,
    OWNER,
    PORTFOLIO_STATE,
    PREVIOUS_SESSION,
)
from magikarp_assets.resources.io_manager import MissingPartitionError
from magikarp_assets.resources.notifier import NotifierResource

PERFORMANCE_METRICS = dg.AssetKey("performance_metrics")
DAILY_REPORT = dg.AssetKey("daily_report")
SERIES_COLUMNS = ["date", "value", "benchmark", "turnover", "costs", "model_version"]


class PerformanceConfig(dg.Config):
    """How performance is measured (typed run config)."""

    risk_free_rate: float = Field(default=0.0, description="annual simple rate for the Sharpe ratio")
    success_horizons: list[int] = Field(
        default=list(SUCCESS_HORIZONS), description="sessions after which a BUY/SELL call is judged vs QQQ"
    )


def _previous_series(
    context: dg.AssetExecutionContext, day: pd.Timestamp, inception: pd.Timestamp
) -> pd.DataFrame | None:
    """Yesterday's stored series; none on the portfolio's first session; refused when missing otherwise."""
    if day == inception:
        return None
    prev_key = previous_trading_day(day).strftime("%Y-%m-%d")
    try:
        return context.resources.io_manager.load_partition(PERFORMANCE_METRICS, prev_key)
    except MissingPartitionError:
        raise RuntimeError(
            f"performance_metrics {day.date()} extends the series of the previous session {prev_key}, which "
            f"has not been materialised: it is built in order from the portfolio's first session "
            f"{inception.date()}, so backfill from the earliest missing session"
        ) from None


class _Recommendations:
    """Stored recommendation partitions, read on demand (this run's from its inputs)."""

    def __init__(self, context: dg.AssetExecutionContext, in_run: pd.DataFrame) -> None:
        self._io = context.resources.io_manager
        self._cache = {pd.Timestamp(d): part for d, part in in_run.groupby("date")}

    def on(self, day: pd.Timestamp) -> pd.DataFrame:
        if day not in self._cache:
            try:
                self._cache[day] = self._io.load_partition(DAILY_RECOMMENDATIONS, day.strftime("%Y-%m-%d"))
            except MissingPartitionError:
                raise RuntimeError(
                    f"judging the calls of {day.date()} needs daily_recommendations {day.date()}, which has "
                    "not been materialised although the paper portfolio traded that session"
                ) from None
        return self._cache[day]


def _exit_prices(
    recs: _Recommendations, tickers: list[str], entry: pd.Timestamp, day: pd.Timestamp
) -> pd.Series:
    """Each ticker's last close on or before ``day`` after ``entry`` (NaN if none: the entry price then
    stands), walking back only for the tickers without a close on ``day``."""
    prices = pd.Series(np.nan, index=pd.Index(tickers, dtype=object))
    session = day
    while session > entry and prices.isna().any():
        known = recs.on(session).set_index("ticker")["price"]
        missing = prices.index[prices.isna()]
        prices[missing] = known.reindex(missing).to_numpy()
        session = previous_trading_day(session)
    return prices


def _resolved_calls(
    recs: _Recommendations, series: pd.DataFrame, day: pd.Timestamp, horizon: int
) -> tuple[int, int]:
    """(successes, resolved) among the BUY/SELL calls made ``horizon`` sessions before ``day``."""
    entry = previous_trading_day(day, horizon)
    if entry < series["date"].iloc[0]:
        return 0, 0
    calls = recs.on(entry)
    calls = calls[calls["action"].isin(["BUY", "SELL"])]
    if calls.empty:
        return 0, 0
    tickers = sorted(calls["ticker"].unique())
    prices = pd.DataFrame(
        [
            calls.set_index("ticker")["price"].reindex(tickers).to_numpy(),
            _exit_prices(recs, tickers, entry, day),
        ],
        index=pd.DatetimeIndex([entry, day]),
        columns=tickers,
    )
    bench = series.set_index("date")["benchmark"]
    status = recommendation_outcomes(calls, prices, bench, horizon, day)["status"]
    return int((status == SUCCESS).sum()), int(status.isin([SUCCESS, FAILURE]).sum())


def _metrics_row(
    series: pd.DataFrame, previous: pd.Series | None, recs: _Recommendations, config: PerformanceConfig
) -> dict:
    day = series["date"].iloc[-1]
    values = series.set_index("date")
    summary = performance_summary(
        values["value"], values["benchmark"], config.risk_free_rate, daily_turnover=values["turnover"]
    )
    row = {
        **summary,
        "excess_return": summary["cumulative_return"] - summary["benchmark_cumulative_return"],
        "daily_return": values["value"].iloc[-1] / values["value"].iloc[-2] - 1
        if len(values) > 1
        else np.nan,
    }
    for horizon in config.success_horizons:
        won, resolved = _resolved_calls(recs, series, day, horizon)
        if previous is not None and f"n_success_{horizon}d" not in previous.index:
            raise ValueError(
                f"performance_metrics of the previous session has no counts for a {horizon}-session horizon "
                "(it was built with other success_horizons): rebuild the series from the portfolio's first "
                "session with the new horizons"
            )
        if previous is not None:
            won += int(previous[f"n_success_{horizon}d"])
            resolved += int(previous[f"n_resolved_{horizon}d"])
        row[f"n_success_{horizon}d"] = won
        row[f"n_resolved_{horizon}d"] = resolved
        row[f"success_rate_{horizon}d"] = won / resolved if resolved else np.nan
    return row


@dg.asset(
    key=PERFORMANCE_METRICS,
    group_name="reporting",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "portfolio_state": dg.AssetIn(PORTFOLIO_STATE),
        "daily_recommendations": dg.AssetIn(DAILY_RECOMMENDATIONS),
        "benchmark_prices": dg.AssetIn(BENCHMARK_PRICES),
    },
    deps=[dg.AssetDep(PERFORMANCE_METRICS, partition_mapping=PREVIOUS_SESSION)],
    required_resource_keys={"io_manager"},
    automation_condition=dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(PERFORMANCE_METRICS)),
)
def performance_metrics(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    portfolio_state: pd.DataFrame,
    daily_recommendations: pd.DataFrame,
    benchmark_prices: pd.DataFrame,
):
    """How the paper portfolio is doing against QQQ as of each session: cumulative return, Sharpe ratio,
    drawdown, win rate, alpha and beta, and how often its BUY/SELL calls beat QQQ over 30 and 90 sessions;
    one row per session since the portfolio started, extended from the previous session's series."""
    recs = _Recommendations(context, daily_recommendations)
    qqq = benchmark_prices[benchmark_prices["ticker"] == PRIMARY_BENCHMARK].set_index("date")["adj_close"]
    out: dict[str, pd.DataFrame] = {}
    frame = None
    for day in partition_days(context):
        book = portfolio_state[portfolio_state["date"] == day]
        if book.empty or day not in qqq.index:
            missing = "portfolio_state" if book.empty else f"benchmark_prices ({PRIMARY_BENCHMARK})"
            raise ValueError(f"performance_metrics {day.date()}: {missing} has no row for that session")
        inception = pd.Timestamp(book["inception"].iloc[0])
        if frame is None:
            frame = _previous_series(context, day, inception)
        previous = None if frame is None else frame.iloc[-1]
        new = pd.DataFrame(
            {
                "date": [day],
                "value": [float(book["value"].iloc[0])],
                "benchmark": [float(qqq.loc[day])],
                "turnover": [float(book["turnover"].iloc[0])],
                "costs": [float(book["costs"].iloc[0])],
                "model_version": [str(book["model_version"].iloc[0])],
            }
        )
        series = new if frame is None else pd.concat([frame[SERIES_COLUMNS], new], ignore_index=True)
        row = _metrics_row(series, previous, recs, config)
        frame = (
            pd.concat([frame, new.assign(**row)], ignore_index=True)
            if frame is not None
            else new.assign(**row)
        )
        out[day.strftime("%Y-%m-%d")] = frame
    assert frame is not None
    last = frame.iloc[-1]
    metrics = {name: float(last[name]) for name in frame.columns if name not in SERIES_COLUMNS}
    context.add_output_metadata({"sessions": len(frame), "value": float(last["value"]), **metrics})
    return frame if len(out) == 1 else out


def _percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1%}"


def _email_summary(book: pd.DataFrame, metrics: pd.Series, horizons: list[int]) -> dict[str, object]:
    """The email's headline numbers (the notifier formats returns as signed %, values and cash as $)."""
    summary: dict[str, object] = {
        "portfolio_value": float(book["value"].iloc[0]),
        "cash": float(book["cash"].iloc[0]),
        "daily_return": float(metrics["daily_return"]),
        "cumulative_return": float(metrics["cumulative_return"]),
        f"{PRIMARY_BENCHMARK}_cumulative_return": float(metrics["benchmark_cumulative_return"]),
        f"excess_return_vs_{PRIMARY_BENCHMARK}": float(metrics["excess_return"]),
        "max_drawdown": float(metrics["max_drawdown"]),
        "sharpe_ratio": "n/a" if pd.isna(metrics["sharpe_ratio"]) else f"{metrics['sharpe_ratio']:.2f}",
        "holdings": int((book["shares"] > 0).sum()),
        "model_version": str(book["model_version"].iloc[0]),
    }
    for horizon in horizons:
        summary[f"success_rate_{horizon}_sessions"] = _percent(metrics[f"success_rate_{horizon}d"])
    return summary


def _previous_recommendations(context: dg.AssetExecutionContext, day: pd.Timestamp) -> pd.DataFrame | None:
    try:
        return context.resources.io_manager.load_partition(
            DAILY_RECOMMENDATIONS, previous_trading_day(day).strftime("%Y-%m-%d")
        )
    except MissingPartitionError:
        return None  # the portfolio's first session: nothing to compare with


def _html_report(
    context: dg.AssetExecutionContext, recs: pd.DataFrame, performance: pd.DataFrame, as_of: dt.date
) -> dict:
    """Write the day's HTML report (with system health) through the blob store; its metadata."""
    io_manager = context.resources.io_manager
    health = gather_health(context, io_manager, context.resources.model_registry.registry(), as_of)
    previous = _previous_recommendations(context, pd.Timestamp(as_of))
    html = build_daily_report(as_of, recs, previous, performance, known_sectors(io_manager), health)
    metadata = write_report(io_manager, f"daily/{as_of.isoformat()}.html", html)
    summary = pd.DataFrame(daily_kpis(recs, performance), columns=["figure", "value"])
    calls = recs[recs["action"].isin(["BUY", "SELL"])].sort_values("rank")
    return {
        **metadata,
        **health_metrics(health),
        "portfolio_summary": dg.MetadataValue.md(summary.to_markdown(index=False)),
        "top_recommendations": top_markdown(
            calls, ["rank", "ticker", "action", "current_weight", "target_weight", "confidence"]
        ),
    }


@dg.asset(
    key=DAILY_REPORT,
    group_name="reporting",
    kinds={"email", "html"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    ins={
        "daily_recommendations": dg.AssetIn(DAILY_RECOMMENDATIONS),
        "portfolio_state": dg.AssetIn(PORTFOLIO_STATE),
        "performance_metrics": dg.AssetIn(PERFORMANCE_METRICS),
    },
    required_resource_keys={"io_manager", "model_registry", "notifier"},
    automation_condition=dg.AutomationCondition.eager(),
)
def daily_report(
    context: dg.AssetExecutionContext,
    daily_recommendations: pd.DataFrame,
    portfolio_state: pd.DataFrame,
    performance_metrics: pd.DataFrame,
) -> dg.MaterializeResult:
    """The daily report to the team: an offline HTML page (the session's BUY/SELL calls, the portfolio
    against QQQ, weights by sector, changes since the previous session, system health) stored beside the
    data and linked here, and the email with the top calls, the headline numbers and two charts. Mail that
    cannot be delivered fails the run and stays pending: the next delivery (any email or a re-run) sends it
    first."""
    notifier: NotifierResource = context.resources.notifier
    as_of = dt.date.fromisoformat(context.partition_key)
    metrics = performance_metrics.iloc[-1]
    report = _html_report(context, daily_recommendations, performance_metrics, as_of)
    horizons = sorted(
        int(c.split("_")[-1][:-1]) for c in performance_metrics if c.startswith("success_rate_")
    )
    charts: dict[str, bytes] = {}
    if len(performance_metrics) > 1:
        charts["Portfolio vs QQQ"] = equity_curve_png(
            performance_metrics["date"].dt.strftime("%Y-%m-%d").tolist(),
            performance_metrics["value"].tolist(),
            performance_metrics["benchmark"].tolist(),
        )
    if len(daily_recommendations):
        charts["Largest weight changes"] = weights_bar_png(
            daily_recommendations["ticker"].tolist(),
            daily_recommendations["current_weight"].tolist(),
            daily_recommendations["target_weight"].tolist(),
        )
    summary = _email_summary(portfolio_state, metrics, horizons)
    summary["full_report"] = report["report_url"].value
    receipt = notifier.send_recommendations(daily_recommendations, summary, charts, as_of)
    if receipt is None:
        return dg.MaterializeResult(metadata={**report, "sent": False, "reason": "info level disabled"})
    return dg.MaterializeResult(
        metadata={
            **report,
            "sent": True,
            "subject": receipt.subject,
            "transport": receipt.transport,
            "target": receipt.target,
            "recipients": len(receipt.recipients),
            "charts": len(charts),
            "message_id": receipt.message_id,
        }
    )


daily_signals_job = dg.define_asset_job(
    "daily_signals",
    selection=dg.AssetSelection.assets(
        DAILY_RECOMMENDATIONS, PORTFOLIO_STATE, PERFORMANCE_METRICS, DAILY_REPORT
    ),
    partitions_def=trading_day_partitions,
    description="Recommendations, paper portfolio, performance and the email for sessions (automation runs "
    "them as each session's tensor arrives; use this job for manual runs and backfills, which go in order).",
)
