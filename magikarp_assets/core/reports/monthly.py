"""The monthly performance report: the paper portfolio's equity curve against QQQ, drawdown, rolling
Sharpe, recommendation success rates and which model served when (promotions and rollbacks marked)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.metrics import MonthlySuccess, drawdown_series, performance_summary
from magikarp_assets.core.promotion import PointerEvent
from magikarp_assets.core.reports.health import SystemHealth, health_section
from magikarp_assets.core.reports.page import (
    OTHER_COLOURS,
    PORTFOLIO_COLOUR,
    figure_html,
    growth_figure,
    kpis_html,
    number,
    pct,
    render_page,
    section,
    table_html,
)
from magikarp_assets.core.spec import PRIMARY_BENCHMARK

ROLLING_SHARPE_SESSIONS = 63  # about a quarter
TRADING_DAYS = 252


def month_sessions(month: str | dt.date | pd.Timestamp) -> pd.DatetimeIndex:
    """The NYSE sessions of the calendar month containing ``month``.

    :param month: any day of the month (e.g. the partition key ``2017-01-01``).
    """
    start = pd.Timestamp(month).to_period("M").to_timestamp()
    return trading_days(start, start + pd.offsets.MonthEnd(0))


def last_session_of_month(month: str | dt.date | pd.Timestamp) -> pd.Timestamp:
    """The month's last NYSE session (the day its monthly report waits for).

    :param month: any day of the month.
    :raises ValueError: for a month without sessions.
    """
    sessions = month_sessions(month)
    if sessions.empty:
        raise ValueError(f"month {pd.Timestamp(month):%Y-%m} has no NYSE session")
    return sessions[-1]


def rolling_sharpe(values: pd.Series, window: int = ROLLING_SHARPE_SESSIONS) -> pd.Series:
    """Annualised Sharpe ratio (rf = 0) over a trailing window of daily returns; NaN until ``window // 3``
    returns are known (a short portfolio still gets a curve) and where the window is flat.

    :param values: portfolio value per session.
    :param window: sessions in the window.
    """
    returns = pd.Series(values, dtype=float).pct_change()
    rolling = returns.rolling(window, min_periods=max(2, window // 3))
    std = rolling.std(ddof=1)
    return (rolling.mean() / std.where(std > 0) * np.sqrt(TRADING_DAYS)).rename("rolling_sharpe")


def monthly_summary(performance: pd.DataFrame, month: str | dt.date | pd.Timestamp) -> dict[str, float | str]:
    """The month's figures: its return and QQQ's (from the previous month's last session, or the
    portfolio's first), Sharpe and drawdown within the month, success rates at its end.

    :param performance: the performance_metrics series (date, value, benchmark, metrics), up to the month's
        last session.
    :param month: any day of the month.
    :raises ValueError: when the series has no session in the month.
    """
    series = performance.assign(date=pd.to_datetime(performance["date"])).set_index("date")
    sessions = month_sessions(month)
    inside = series.index.isin(sessions)
    if not inside.any():
        raise ValueError(f"performance_metrics has no session in {sessions[0]:%Y-%m} (month report)")
    first = int(np.argmax(inside))
    window = series.iloc[max(0, first - 1) : int(np.flatnonzero(inside)[-1]) + 1]
    summary = performance_summary(window["value"], window["benchmark"], daily_turnover=window["turnover"])
    last = window.iloc[-1]
    out: dict[str, float | str] = {
        "month_return": summary["cumulative_return"],
        "benchmark_month_return": summary["benchmark_cumulative_return"],
        "excess_month_return": summary["cumulative_return"] - summary["benchmark_cumulative_return"],
        "month_sharpe_ratio": summary["sharpe_ratio"],
        "month_max_drawdown": summary["max_drawdown"],
        "month_average_turnover": summary["average_turnover"],
        "portfolio_value": float(last["value"]),
        "cumulative_return": float(last["cumulative_return"]),
        "sessions": float(inside.sum()),
        "model_versions": ", ".join(dict.fromkeys(series.loc[inside, "model_version"].astype(str))),
    }
    for column in series.columns:
        if column.startswith("success_rate_"):
            out[column] = float(last[column])
    return out


def model_switches(performance: pd.DataFrame, events: Sequence[PointerEvent]) -> pd.DataFrame:
    """Sessions where the serving model changed, each labelled with the production-pointer event that
    explains it (promote, force_promote, rollback, auto_rollback; ``switch`` when none matches).

    :param performance: the performance_metrics series (date, model_version).
    :param events: the production pointer's history (core.promotion.read_pointer(...).history).
    :return: date, version, previous, action, by, note.
    """
    versions = performance[["date", "model_version"]].reset_index(drop=True)
    changed = np.flatnonzero(versions["model_version"].ne(versions["model_version"].shift()).to_numpy())
    # Later switches match the events in order; the first session's version matches its latest event
    # before the one the second switch matched (the history may start long before the series).
    matched: list[int | None] = []
    cursor = 0
    for i in changed[1:]:
        version, previous = versions["model_version"].iloc[i], versions["model_version"].iloc[i - 1]
        found = next(
            (
                j
                for j in range(cursor, len(events))
                if (events[j].version, events[j].previous) == (version, previous)
            ),
            None,
        )
        matched.append(found)
        cursor = found + 1 if found is not None else cursor
    limit = next((j for j in matched if j is not None), len(events))
    first_version = versions["model_version"].iloc[0] if len(versions) else None
    earlier = [j for j in range(limit) if events[j].version == first_version]
    matched.insert(0, earlier[-1] if earlier else None)
    rows = []
    for i, found in zip(changed, matched, strict=True):
        event = events[found] if found is not None else None
        rows.append(
            {
                "date": pd.Timestamp(versions["date"].iloc[i]),
                "version": versions["model_version"].iloc[i],
                "previous": versions["model_version"].iloc[i - 1] if i else "-",
                "action": event.action if event else ("start" if i == 0 else "switch"),
                "by": event.by if event else "",
                "note": event.note if event else "",
            }
        )
    return pd.DataFrame(rows, columns=["date", "version", "previous", "action", "by", "note"])


def _line(values: pd.Series, title: str, name: str, axis: str, colour: str, fill: bool = False) -> go.Figure:
    figure = go.Figure(
        go.Scatter(
            x=list(values.index),
            y=values.round(6).tolist(),
            name=name,
            mode="lines",
            line={"color": colour},
            fill="tozeroy" if fill else None,
        )
    )
    figure.update_layout(title=title, yaxis_title=axis)
    return figure


def _versions_figure(performance: pd.DataFrame, switches: pd.DataFrame) -> go.Figure:
    figure = go.Figure(
        go.Scatter(
            x=list(pd.to_datetime(performance["date"])),
            y=performance["model_version"].tolist(),
            mode="markers",
            name="serving version",
            marker={"color": PORTFOLIO_COLOUR, "size": 5},
        )
    )
    marked = switches[switches["action"] != "start"]
    symbols = {"rollback": "x", "auto_rollback": "x"}
    figure.add_trace(
        go.Scatter(
            x=list(marked["date"]),
            y=marked["version"].tolist(),
            mode="markers+text",
            name="promotion / rollback",
            text=marked["action"].tolist(),
            textposition="top center",
            marker={
                "size": 14,
                "color": OTHER_COLOURS[2],
                "symbol": [symbols.get(a, "triangle-up") for a in marked["action"]],
            },
        )
    )
    figure.update_layout(title="Model versions over time", yaxis={"type": "category"})
    return figure


def _success_figure(performance: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    columns = [c for c in performance.columns if c.startswith("success_rate_")]
    for colour, column in zip((PORTFOLIO_COLOUR, *OTHER_COLOURS), columns, strict=False):
        figure.add_trace(
            go.Scatter(
                x=list(pd.to_datetime(performance["date"])),
                y=(performance[column] * 100).round(4).tolist(),
                name=column.replace("success_rate_", "").replace("d", " sessions"),
                mode="lines+markers",
                line={"color": colour},
            )
        )
    figure.update_layout(title=f"Share of BUY/SELL calls beating {PRIMARY_BENCHMARK}", yaxis_title="%")
    return figure


def build_monthly_report(
    month: str | dt.date | pd.Timestamp,
    performance: pd.DataFrame,
    events: Sequence[PointerEvent],
    success: pd.DataFrame | None = None,
    monthly_success: MonthlySuccess | None = None,
    health: SystemHealth | None = None,
) -> str:
    """The monthly performance page.

    :param month: any day of the month reported.
    :param performance: the performance_metrics series up to the month's last session.
    :param events: the production pointer's history, to mark promotions and rollbacks.
    :param success: core.metrics.success_rates as of the month's end (horizon, action, counts, rate).
    :param monthly_success: the 12-month success rate of monthly signals.
    :param health: the system-health section's content, when gathered.
    :return: a self-contained HTML document.
    """
    label = f"{pd.Timestamp(month):%Y-%m}"
    figures = monthly_summary(performance, month)
    series = performance.assign(date=pd.to_datetime(performance["date"])).set_index("date")
    kpis = [
        ("month return", pct(figures["month_return"], True)),
        (f"{PRIMARY_BENCHMARK} month return", pct(figures["benchmark_month_return"], True)),
        ("excess return", pct(figures["excess_month_return"], True)),
        ("Sharpe in the month", number(figures["month_sharpe_ratio"])),
        ("max drawdown in the month", pct(figures["month_max_drawdown"], True)),
        ("portfolio value", f"${figures['portfolio_value']:,.0f}"),
        ("cumulative return", pct(figures["cumulative_return"], True)),
    ]
    if monthly_success is not None:
        kpis.append(("12-month success of monthly signals", pct(monthly_success.success_rate)))
    parts = [section(f"Summary {label}", kpis_html(kpis))]
    if len(series) > 1:
        growth = growth_figure(
            {"Portfolio": series["value"], PRIMARY_BENCHMARK: series["benchmark"]}, "Equity curve"
        )
        parts.append(section(f"Equity curve vs {PRIMARY_BENCHMARK}", figure_html(growth)))
    drawdown = drawdown_series(series["value"]) * 100
    parts.append(
        section("Drawdown", figure_html(_line(drawdown, "Drawdown", "drawdown", "%", "#cf222e", True)))
    )
    sharpe = rolling_sharpe(series["value"])
    parts.append(
        section(
            f"Rolling Sharpe ({ROLLING_SHARPE_SESSIONS} sessions)",
            figure_html(_line(sharpe, "Rolling Sharpe", "Sharpe", "annualised", PORTFOLIO_COLOUR)),
        )
    )
    success_parts = [figure_html(_success_figure(performance.reset_index(drop=True)))]
    if success is not None:
        success_parts.append(table_html(success, {"success_rate": pct}))
    parts.append(section("Recommendation success rates", *success_parts))
    switches = model_switches(performance, events)
    parts.append(
        section("Model versions", figure_html(_versions_figure(performance, switches)), table_html(switches))
    )
    if health is not None:
        parts.append(health_section(health))
    return render_page(
        f"TMagikarp monthly performance {label}", f"versions: {figures['model_versions']}", parts
    )
