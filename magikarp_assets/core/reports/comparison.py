"""The model comparison page: a candidate's backtest and shadow runs against the production model and the
baselines (QQQ, equal weight), with the gates' verdicts and reasons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import pandas as pd
import plotly.graph_objects as go

from magikarp_assets.core.metrics import drawdown_series, performance_summary
from magikarp_assets.core.reports.page import (
    figure_html,
    growth_figure,
    number,
    pct,
    render_page,
    section,
    table_html,
)
from magikarp_assets.core.spec import PRIMARY_BENCHMARK

METRIC_FORMATS = {
    "cumulative_return": lambda v: pct(v, True),
    "sharpe_ratio": number,
    "max_drawdown": lambda v: pct(v, True),
    "volatility": pct,
    "average_turnover": pct,
}


class GateVerdict(Protocol):
    """What the page needs of a gate's result (core.gates.GateResult has it)."""

    @property
    def gate(self) -> str: ...

    @property
    def passed(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...


def comparison_metrics(
    series: Mapping[str, pd.Series], benchmark_label: str = PRIMARY_BENCHMARK
) -> pd.DataFrame:
    """Cumulative return, Sharpe, max drawdown and volatility per strategy over the same sessions.

    :param series: strategy label -> value per session (index dates).
    :param benchmark_label: the key of the benchmark series (alpha/beta are measured against it).
    :return: one row per strategy.
    """
    bench = series.get(benchmark_label)
    rows = []
    for label, values in series.items():
        values = pd.Series(values, dtype=float)
        reference = values if bench is None else pd.Series(bench, dtype=float).reindex(values.index)
        summary = performance_summary(values, reference)
        rows.append({"strategy": label, **{k: summary[k] for k in METRIC_FORMATS if k in summary}})
    return pd.DataFrame(rows)


def _drawdown_figure(series: Mapping[str, pd.Series], title: str) -> go.Figure:
    figure = go.Figure()
    for label, values in series.items():
        drawdown = drawdown_series(pd.Series(values, dtype=float)) * 100
        figure.add_trace(
            go.Scatter(x=list(drawdown.index), y=drawdown.round(4).tolist(), name=label, mode="lines")
        )
    figure.update_layout(title=title, yaxis_title="%")
    return figure


def _phase(name: str, series: Mapping[str, pd.Series], benchmark_label: str) -> str:
    if not series:
        return section(f"{name}", "<p class='note'>not run yet</p>")
    return section(
        name,
        figure_html(growth_figure(series, f"{name}: growth of 100")),
        figure_html(_drawdown_figure(series, f"{name}: drawdown"), height=280),
        table_html(comparison_metrics(series, benchmark_label), METRIC_FORMATS),
    )


def build_model_comparison_page(
    candidate: str,
    backtest: Mapping[str, pd.Series],
    shadow: Mapping[str, pd.Series] | None = None,
    gates: Sequence[GateVerdict] = (),
    benchmark_label: str = PRIMARY_BENCHMARK,
) -> str:
    """A candidate's comparison page.

    :param candidate: the candidate's version (page title).
    :param backtest: strategy label -> portfolio value per session over the backtest window, e.g.
        ``{"candidate ppo-v7": ..., "production ppo-v6": ..., "QQQ": ..., "equal weight": ...}``; the
        first is drawn as the portfolio, every series must be > 0 on the same sessions.
    :param shadow: the same for the shadow (live paper) window; None or empty when not run yet.
    :param gates: each gate's verdict with ``gate``, ``passed`` and ``reasons`` (core.gates.GateResult).
    :param benchmark_label: which key of the series is the benchmark (alpha/beta reference).
    :return: a self-contained HTML document.
    """
    verdicts = pd.DataFrame(
        [
            (g.gate, "passed" if g.passed else "FAILED", "; ".join(g.reasons) or "no rule evaluated")
            for g in gates
        ],
        columns=["gate", "verdict", "reasons"],
    )
    parts = [
        section(
            "Gates", table_html(verdicts) if len(verdicts) else "<p class='note'>no gate evaluated yet</p>"
        ),
        _phase("Backtest", backtest, benchmark_label),
        _phase("Shadow", shadow or {}, benchmark_label),
    ]
    overall = "all gates passed" if gates and all(g.passed for g in gates) else "not approved by the gates"
    return render_page(f"Model comparison: {candidate}", f"{candidate}: {overall}", parts)
