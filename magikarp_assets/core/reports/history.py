"""Recommendation history: every past call with the model that made it and what the stock did since, the
very outcomes the 30- and 90-session success rates are computed from, as a table and a searchable page."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from magikarp_assets.core.metrics import SUCCESS_HORIZONS, recommendation_outcomes
from magikarp_assets.core.reports.page import (
    OTHER_COLOURS,
    PORTFOLIO_COLOUR,
    esc,
    figure_html,
    render_page,
    section,
)
from magikarp_assets.core.spec import PRIMARY_BENCHMARK

KEY_COLUMNS = ["date", "ticker", "action", "model_version", "slot_map_version", "rank", "confidence"]
WEIGHT_COLUMNS = ["current_weight", "target_weight", "price"]
PAGE_ROWS = 5000


def history_columns(horizons: tuple[int, ...] = SUCCESS_HORIZONS) -> list[str]:
    """The history table's columns for ``horizons``.

    :param horizons: success horizons in sessions.
    """
    per_horizon = [f"{k}_{h}s" for h in horizons for k in ("return", "benchmark_return", "status")]
    since = ["as_of", "last_price", "return_since", "benchmark_return_since", "excess_return_since"]
    return [*KEY_COLUMNS, *WEIGHT_COLUMNS, *since, *per_horizon]


def recommendation_history(
    recs: pd.DataFrame,
    benchmark: pd.Series,
    as_of: str | dt.date | pd.Timestamp,
    horizons: tuple[int, ...] = SUCCESS_HORIZONS,
) -> pd.DataFrame:
    """Every recommendation up to ``as_of`` with its realised forward returns, using data up to ``as_of``.

    ``return_since`` is the ticker's last price on or before ``as_of`` over its price on the call's session,
    minus 1 (the recommendation rows' own prices: the closes the portfolio traded at); the benchmark's over
    the same dates beside it. For each horizon h, ``return_{h}s``, ``benchmark_return_{h}s`` and
    ``status_{h}s`` are exactly :func:`~magikarp_assets.core.metrics.recommendation_outcomes` (success,
    failure, pending, no_price; empty for HOLD), which the success rates count.

    :param recs: daily_recommendations rows of any number of sessions.
    :param benchmark: QQQ total-return price per session, covering every session of ``recs`` up to as_of.
    :param as_of: the last session whose data may be used.
    :param horizons: success horizons in sessions.
    :return: one row per recommendation, newest session first then by rank; columns history_columns().
    :raises ValueError: when the benchmark lacks a session of the calls.
    """
    end = pd.Timestamp(as_of).normalize()
    recs = recs.assign(date=pd.to_datetime(recs["date"]).dt.normalize())
    recs = recs[recs["date"] <= end].reset_index(drop=True)
    if recs.empty:
        return pd.DataFrame(columns=history_columns(horizons))
    prices = recs.pivot_table(index="date", columns="ticker", values="price", aggfunc="last").sort_index()
    bench = pd.Series(benchmark, dtype=float)
    bench.index = pd.DatetimeIndex(bench.index).normalize()
    missing = sorted(set(prices.index) - set(bench.dropna().index))
    if missing:
        raise ValueError(f"benchmark ({PRIMARY_BENCHMARK}) has no price on session {missing[0].date()}")
    last_prices = prices.ffill().iloc[-1]
    out = recs[[*KEY_COLUMNS, *WEIGHT_COLUMNS]].copy()
    out["as_of"] = end
    out["last_price"] = last_prices.reindex(out["ticker"]).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["return_since"] = np.where(out["price"] > 0, out["last_price"] / out["price"] - 1.0, np.nan)
    bench_end = float(bench.loc[:end].iloc[-1])
    out["benchmark_return_since"] = bench_end / bench.reindex(out["date"]).to_numpy() - 1.0
    out["excess_return_since"] = out["return_since"] - out["benchmark_return_since"]
    for horizon in horizons:
        outcome = recommendation_outcomes(recs, prices, bench, horizon, end)
        outcome = outcome.rename(
            columns={
                "ticker_return": f"return_{horizon}s",
                "benchmark_return": f"benchmark_return_{horizon}s",
                "status": f"status_{horizon}s",
            }
        )[["date", "ticker", f"return_{horizon}s", f"benchmark_return_{horizon}s", f"status_{horizon}s"]]
        out = out.merge(outcome, on=["date", "ticker"], how="left")
        out[f"status_{horizon}s"] = out[f"status_{horizon}s"].fillna("")
    out = out.sort_values(["date", "rank"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return out[history_columns(horizons)]


def _calls_figure(calls: pd.DataFrame) -> go.Figure:
    counts = calls.groupby(["date", "action"]).size().unstack(fill_value=0).sort_index()
    figure = go.Figure()
    for action, colour in (("BUY", PORTFOLIO_COLOUR), ("SELL", OTHER_COLOURS[2])):
        if action in counts:
            figure.add_trace(
                go.Bar(x=list(counts.index), y=counts[action].tolist(), name=action, marker_color=colour)
            )
    figure.update_layout(title="BUY / SELL calls per session", barmode="stack")
    return figure


_FILTER_JS = """
<input id='q' placeholder='ticker or date (e.g. AAPL or 2017-01-05)' style='width:320px;padding:4px'>
<span id='n' class='note'></span><table id='t'><thead><tr>__HEAD__</tr></thead><tbody></tbody></table>
<script>
const rows = __ROWS__, cols = __COLS__;
function show(){const q=document.getElementById('q').value.trim().toUpperCase();
 const hit=rows.filter(r=>!q||r[1].toUpperCase()===q||r[0].startsWith(q)).slice(0,500);
 const cells=r=>'<tr>'+r.map(c=>'<td>'+c+'</td>').join('')+'</tr>';
 document.querySelector('#t tbody').innerHTML=hit.map(cells).join('');
 document.getElementById('n').textContent=hit.length+' shown of '+rows.length+' calls';}
document.getElementById('q').addEventListener('input',show);show();
</script>
"""


def _cell(value: object, column: str) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return ""
        return f"{value:+.2%}" if "return" in column else f"{value:.4f}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d}"
    return esc(value)


def build_history_page(history: pd.DataFrame, as_of: str | dt.date | pd.Timestamp) -> str:
    """The recommendation-history page: calls per session, and the BUY/SELL calls (newest first, the
    latest ``PAGE_ROWS``) searchable by ticker or date; the full table (HOLD too) is the parquet asset.

    :param history: frame from :func:`recommendation_history`.
    :param as_of: the day the returns are measured to.
    :return: a self-contained HTML document.
    """
    calls = history[history["action"].isin(["BUY", "SELL"])]
    shown = [c for c in history.columns if c not in ("slot_map_version", "as_of", "last_price", "price")]
    rows = [
        [_cell(v, c) for c, v in zip(shown, row, strict=True)]
        for row in calls[shown].head(PAGE_ROWS).itertuples(index=False)
    ]
    script = (
        _FILTER_JS.replace("__HEAD__", "".join(f"<th>{esc(c)}</th>" for c in shown))
        .replace("__ROWS__", json.dumps(rows).replace("</", "<\\/"))
        .replace("__COLS__", json.dumps(shown))
    )
    parts = [
        section("Calls per session", figure_html(_calls_figure(calls)) if len(calls) else "<p>none</p>"),
        section(f"BUY / SELL calls with returns to {pd.Timestamp(as_of):%Y-%m-%d}", script),
    ]
    return render_page(
        "TMagikarp recommendation history",
        f"{len(history)} recommendations ({len(calls)} BUY/SELL) up to {pd.Timestamp(as_of):%Y-%m-%d}",
        parts,
    )
