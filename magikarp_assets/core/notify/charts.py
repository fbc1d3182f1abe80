"""Charts embedded in the daily email: the equity curve against QQQ and the largest weight changes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def equity_curve_png(
    dates: Sequence[Any], portfolio_values: Sequence[float], qqq_values: Sequence[float]
) -> bytes:
    """Portfolio against QQQ, both rebased to 100 on the first date.

    :raises ValueError: when lengths differ, fewer than two points, or a first value is not positive.
    """
    portfolio, qqq = np.asarray(portfolio_values, float), np.asarray(qqq_values, float)
    if not len(dates) == len(portfolio) == len(qqq) or len(dates) < 2:
        raise ValueError(f"equity curve needs >= 2 points, got {len(dates)}/{len(portfolio)}/{len(qqq)}")
    if portfolio[0] <= 0 or qqq[0] <= 0:
        raise ValueError(f"equity curve starts at a non-positive value on {dates[0]}")
    figure = _figure((8, 3.5))
    axes = figure.add_subplot()
    when = pd.to_datetime(pd.Series(dates))
    axes.plot(when, portfolio / portfolio[0] * 100, label="Portfolio", color="#1f6feb")
    axes.plot(when, qqq / qqq[0] * 100, label="QQQ", color="#7b8794")
    axes.set_ylabel("Growth of 100")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def weights_bar_png(
    tickers: Sequence[str], current_weights: Sequence[float], target_weights: Sequence[float], top_n: int = 15
) -> bytes:
    """Current against target weight for the ``top_n`` tickers whose weight changes most.

    :raises ValueError: when the sequences have different lengths or are empty.
    """
    if not len(tickers) == len(current_weights) == len(target_weights) or not len(tickers):
        raise ValueError(f"weights chart needs aligned, non-empty inputs; got {len(tickers)} tickers")
    columns = {"ticker": tickers, "current": current_weights, "target": target_weights}
    frame = pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})
    frame = frame.loc[(frame["target"] - frame["current"]).abs().sort_values(ascending=False).index[:top_n]]
    figure = _figure((8, 0.3 * len(frame) + 1.2))
    axes = figure.add_subplot()
    positions = np.arange(len(frame))
    axes.barh(positions - 0.2, frame["current"] * 100, height=0.4, label="Current", color="#9aa5b1")
    axes.barh(positions + 0.2, frame["target"] * 100, height=0.4, label="Target", color="#1f6feb")
    axes.set_yticks(positions, frame["ticker"])
    axes.invert_yaxis()
    axes.set_xlabel("Weight (%)")
    axes.legend()
    return _png(figure)
