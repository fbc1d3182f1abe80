"""Page assembly shared by every report: one HTML file embedding plotly.js once, so it opens offline."""

from __future__ import annotations

import datetime as dt
import html
import itertools
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

PORTFOLIO_COLOUR, BENCHMARK_COLOUR, OTHER_COLOURS = "#1f6feb", "#7b8794", ("#2da44e", "#bf8700", "#cf222e")
_STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#1f2328;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}.sub{color:#59636e;margin-top:0}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}.kpis{display:flex;flex-wrap:wrap;gap:12px}
.kpi{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:130px}
.kpi b{display:block;font-size:20px}.kpi span{color:#59636e;font-size:12px}
.bad{color:#cf222e;font-weight:600}.ok{color:#1a7f37}.note{color:#59636e;font-size:12px}
"""
_ids = itertools.count()


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    return get_plotlyjs()


def esc(value: Any) -> str:
    """HTML-escaped text of ``value``.

    :param value: anything printable.
    """
    return html.escape(str(value), quote=True)


def pct(value: Any, signed: bool = False) -> str:
    """A fraction as a percentage (``n/a`` for a missing value).

    :param value: the fraction (0.012 = 1.2 %).
    :param signed: prefix a + to positive values.
    """
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def number(value: Any, digits: int = 2) -> str:
    """A float with ``digits`` decimals (``n/a`` for a missing value).

    :param value: the number.
    :param digits: decimals shown.
    """
    return "n/a" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


def figure_html(figure: go.Figure, height: int = 360) -> str:
    """A plotly figure as a ``<div>`` (its data inline; plotly.js itself comes once with the page).

    :param figure: the figure.
    :param height: pixels.
    """
    figure.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40}, template="plotly_white")
    days = [x for trace in figure.data for x in (trace.x or ()) if isinstance(x, pd.Timestamp | dt.date)]
    if days:  # sessions, not hours: whole days on the axis (one tick each over a month or less), no weekends
        short = (pd.Timestamp(max(days)) - pd.Timestamp(min(days))).days <= 31
        figure.update_xaxes(
            tickformat="%Y-%m-%d",
            rangebreaks=[{"bounds": ["sat", "mon"]}],
            dtick=86_400_000 if short else None,
        )
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{next(_ids)}",
        config={"displaylogo": False, "responsive": True},
    )


def table_html(frame: pd.DataFrame, formats: Mapping[str, Any] | None = None, max_rows: int = 200) -> str:
    """A frame as an escaped HTML table, columns formatted by ``formats`` (column -> callable).

    :param frame: rows to show (the first ``max_rows``).
    :param formats: column -> function turning a value into text.
    :param max_rows: rows shown at most; a note says how many were left out.
    """
    if frame.empty:
        return "<p class='note'>none</p>"
    formats = formats or {}
    shown = frame.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False):
        cells = []
        for column, value in zip(shown.columns, record, strict=True):
            text = formats[column](value) if column in formats else _plain(value)
            css = " class='bad'" if isinstance(text, str) and text.startswith("FAILED") else ""
            cells.append(f"<td{css}>{esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = (
        f"<p class='note'>{len(frame) - max_rows} more row(s) not shown</p>" if len(frame) > max_rows else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _plain(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if pd.isna(value) else f"{value:,.4f}"
    if isinstance(value, pd.Timestamp | dt.date):
        return "n/a" if pd.isna(value) else str(pd.Timestamp(value).date())
    return str(value)


def kpis_html(items: Iterable[tuple[str, str]]) -> str:
    """Headline figures as boxes.

    :param items: (label, formatted value) pairs.
    """
    boxes = "".join(f"<div class='kpi'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in items)
    return f"<div class='kpis'>{boxes}</div>"


def section(title: str, *parts: str) -> str:
    """An ``<h2>`` section from already rendered HTML parts.

    :param title: the heading (escaped).
    :param parts: HTML fragments.
    """
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def render_page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """A complete, self-contained HTML document (plotly.js inline, nothing fetched over the network).

    :param title: page title and heading.
    :param subtitle: one line under the heading (e.g. the as-of date and model version).
    :param sections: rendered sections, in order.
    """
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_STYLE}</style>"
        f"<script type='text/javascript'>{_plotly_js()}</script></head><body>"
        f"<h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>{''.join(sections)}"
        "</body></html>"
    )


def growth_figure(series: Mapping[str, pd.Series], title: str) -> go.Figure:
    """Each series rebased to 100 at its first value, the first one drawn as the portfolio.

    :param series: label -> values per day (index dates), each first value > 0.
    :param title: chart title.
    """
    figure = go.Figure()
    colours = iter((PORTFOLIO_COLOUR, BENCHMARK_COLOUR, *OTHER_COLOURS, *OTHER_COLOURS))
    for label, values in series.items():
        values = pd.Series(values, dtype=float).dropna()
        if values.empty or values.iloc[0] <= 0:
            raise ValueError(f"series {label!r} for {title!r} is empty or starts at a non-positive value")
        figure.add_trace(
            go.Scatter(
                x=list(pd.DatetimeIndex(values.index)),
                y=(values / values.iloc[0] * 100).round(4).tolist(),
                name=label,
                mode="lines",
                line={"color": next(colours)},
            )
        )
    figure.update_layout(title=title, yaxis_title="Growth of 100")
    return figure
