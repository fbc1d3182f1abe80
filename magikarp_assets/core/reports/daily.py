"""The daily report: the session's calls, the paper portfolio against QQQ, its weights by sector and what
changed since the previous session, as one offline HTML page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache

import pandas as pd
import plotly.graph_objects as go

from magikarp_assets.core.market_data.sample import SAMPLE_DIR
from magikarp_assets.core.reports.health import SystemHealth, health_section
from magikarp_assets.core.reports.page import (
    BENCHMARK_COLOUR,
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
from magikarp_assets.core.tickers import normalize_ticker

UNKNOWN_SECTOR = "unknown"
CALLS = ("BUY", "SELL")
TOP_CHANGES = 15
CALL_COLUMNS = [
    "rank",
    "ticker",
    "sector",
    "action",
    "current_weight",
    "target_weight",
    "delta",
    "confidence",
]


@lru_cache(maxsize=1)
def sample_sectors() -> dict[str, str]:
    """GICS sector per ticker from the bundled S&P 500 constituents file (2017)."""
    meta = pd.read_parquet(SAMPLE_DIR / "sp500_constituents_2017.parquet", columns=["ticker", "gics_sector"])
    return dict(zip(meta["ticker"].map(normalize_ticker), meta["gics_sector"].astype(str), strict=True))


def with_sectors(recs: pd.DataFrame, sectors: Mapping[str, str]) -> pd.DataFrame:
    """``recs`` with a ``sector`` column: the known sector, else ``unknown``.

    :param recs: rows with a ticker column.
    :param sectors: ticker -> sector.
    """
    return recs.assign(sector=recs["ticker"].map(dict(sectors)).fillna(UNKNOWN_SECTOR))


def sector_weights(recs: pd.DataFrame, sectors: Mapping[str, str]) -> pd.DataFrame:
    """Current and target weight per sector, largest target first.

    :param recs: one session's recommendations (current_weight, target_weight per ticker).
    :param sectors: ticker -> sector.
    """
    grouped = with_sectors(recs, sectors).groupby("sector")[["current_weight", "target_weight"]].sum()
    return grouped.sort_values("target_weight", ascending=False).reset_index()


def changes_since(recs: pd.DataFrame, previous: pd.DataFrame | None, top: int = TOP_CHANGES) -> pd.DataFrame:
    """Tickers whose target weight moved most since the previous session's recommendations, and tickers
    that appeared or left (their missing side counts as weight 0 and action ``-``).

    :param recs: today's recommendations.
    :param previous: the previous session's (None on the first session: nothing to compare).
    :param top: rows kept, by absolute change.
    :return: ticker, action_before, action, target_before, target, target_change.
    """
    columns = ["ticker", "action_before", "action", "target_before", "target", "target_change"]
    if previous is None or previous.empty:
        return pd.DataFrame(columns=columns)
    today = recs.set_index("ticker")[["action", "target_weight"]]
    before = previous.set_index("ticker")[["action", "target_weight"]]
    joined = today.join(before, how="outer", rsuffix="_before")
    out = pd.DataFrame(
        {
            "ticker": joined.index,
            "action_before": joined["action_before"].fillna("-").to_numpy(),
            "action": joined["action"].fillna("-").to_numpy(),
            "target_before": joined["target_weight_before"].fillna(0.0).to_numpy(),
            "target": joined["target_weight"].fillna(0.0).to_numpy(),
        }
    )
    out["target_change"] = out["target"] - out["target_before"]
    order = out["target_change"].abs().sort_values(ascending=False, kind="stable").index
    return out.loc[order].head(top).reset_index(drop=True)[columns]


def _sector_figure(weights: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    for column, label, colour in (
        ("current_weight", "Current", BENCHMARK_COLOUR),
        ("target_weight", "Target", PORTFOLIO_COLOUR),
    ):
        figure.add_trace(
            go.Bar(
                x=weights["sector"].tolist(),
                y=(weights[column] * 100).round(4).tolist(),
                name=label,
                marker_color=colour,
            )
        )
    figure.update_layout(title="Weights by sector", yaxis_title="Weight (%)", barmode="group")
    return figure


def _changes_figure(changes: pd.DataFrame) -> go.Figure:
    colours = [PORTFOLIO_COLOUR if v >= 0 else "#cf222e" for v in changes["target_change"]]
    figure = go.Figure(
        go.Bar(
            x=(changes["target_change"] * 100).round(4).tolist(),
            y=changes["ticker"].tolist(),
            orientation="h",
            marker_color=colours,
            name="Target weight change",
        )
    )
    figure.update_layout(
        title="Target weight change since the previous session",
        xaxis_title="Percentage points",
        yaxis={"autorange": "reversed"},
    )
    return figure


WEIGHT_FORMATS = {name: pct for name in ("current_weight", "target_weight", "target_before", "target")} | {
    "delta": lambda v: pct(v, True),
    "target_change": lambda v: pct(v, True),
    "confidence": number,
}


def daily_kpis(recs: pd.DataFrame, performance: pd.DataFrame) -> list[tuple[str, str]]:
    """The headline figures of the day: value, returns vs QQQ, drawdown, Sharpe and the number of calls.

    :param recs: the session's recommendations.
    :param performance: the performance_metrics series up to the session (last row = the session).
    """
    last = performance.iloc[-1]
    counts = recs["action"].value_counts()
    return [
        ("portfolio value", f"${last['value']:,.0f}"),
        ("daily return", pct(last.get("daily_return"), True)),
        ("cumulative return", pct(last.get("cumulative_return"), True)),
        (f"{PRIMARY_BENCHMARK} cumulative return", pct(last.get("benchmark_cumulative_return"), True)),
        ("max drawdown", pct(last.get("max_drawdown"), True)),
        ("Sharpe ratio", number(last.get("sharpe_ratio"))),
        ("BUY / SELL / HOLD", f"{counts.get('BUY', 0)} / {counts.get('SELL', 0)} / {counts.get('HOLD', 0)}"),
    ]


def build_daily_report(
    as_of: dt.date,
    recs: pd.DataFrame,
    previous: pd.DataFrame | None,
    performance: pd.DataFrame,
    sectors: Mapping[str, str],
    health: SystemHealth | None = None,
) -> str:
    """The daily report page.

    :param as_of: the session.
    :param recs: its recommendations (daily_recommendations columns).
    :param previous: the previous session's recommendations, None on the portfolio's first session.
    :param performance: the performance_metrics series up to ``as_of`` (date, value, benchmark, metrics).
    :param sectors: ticker -> sector (``unknown`` where missing).
    :param health: the system-health section's content, when gathered.
    :return: a self-contained HTML document.
    """
    if recs.empty:
        raise ValueError(f"daily report {as_of}: daily_recommendations has no row for that session")
    version = ", ".join(sorted(recs["model_version"].astype(str).unique()))
    calls = with_sectors(recs[recs["action"].isin(CALLS)], sectors).sort_values("rank")[CALL_COLUMNS]
    series = performance.set_index("date")
    parts = [section("Summary", kpis_html(daily_kpis(recs, performance)))]
    if len(series) > 1:
        growth = growth_figure(
            {"Portfolio": series["value"], PRIMARY_BENCHMARK: series["benchmark"]},
            f"Paper portfolio vs {PRIMARY_BENCHMARK}",
        )
        parts.append(section(f"Portfolio vs {PRIMARY_BENCHMARK}", figure_html(growth)))
    else:
        parts.append(
            section(f"Portfolio vs {PRIMARY_BENCHMARK}", "<p class='note'>first session: no curve yet</p>")
        )
    weights = sector_weights(recs, sectors)
    parts.append(
        section(
            "Weights by sector", figure_html(_sector_figure(weights)), table_html(weights, WEIGHT_FORMATS)
        )
    )
    parts.append(section(f"Recommendations ({len(calls)} BUY/SELL calls)", table_html(calls, WEIGHT_FORMATS)))
    changes = changes_since(recs, previous)
    change_parts = (
        [figure_html(_changes_figure(changes)), table_html(changes, WEIGHT_FORMATS)]
        if len(changes)
        else ["<p class='note'>first session of the portfolio: nothing to compare</p>"]
    )
    parts.append(section("Changes since the previous session", *change_parts))
    if health is not None:
        parts.append(health_section(health))
    return render_page(f"TMagikarp daily report {as_of}", f"model {version}", parts)
