"""Backtests: a policy (a model or equal weight) or QQQ buy-and-hold run over past sessions from a starting
portfolio, net of costs, with the very session function paper trading uses, so their numbers agree."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.metrics import performance_summary
from magikarp_assets.core.portfolio import apply_targets, initial_portfolio, mark_to_market
from magikarp_assets.core.spec import PRIMARY_BENCHMARK
from magikarp_assets.core.trading import Book, Policy, TradingCosts, equal_weight_policy, rebalance_session

SERIES_COLUMNS = ["date", "value", "value_before", "traded_value", "turnover", "costs"]
EQUAL_WEIGHT = "equal_weight"
BUY_AND_HOLD = f"{PRIMARY_BENCHMARK}_buy_and_hold"


@dataclass(frozen=True)
class SessionData:
    """One past session as a policy sees it.

    :param day: the session.
    :param tensor: its feature_tensor arrays.
    :param tickers: object [S] ticker per slot, from its slot map.
    :param slot_map_version: the slot map's version.
    """

    day: pd.Timestamp
    tensor: dict[str, np.ndarray]
    tickers: np.ndarray
    slot_map_version: str


@dataclass(frozen=True)
class BacktestResult:
    """A strategy's daily series (the starting portfolio first, then one row per session, SERIES_COLUMNS)
    and its metrics (:func:`~magikarp_assets.core.metrics.performance_summary` against the benchmark)."""

    strategy: str
    version: str
    series: pd.DataFrame
    metrics: dict[str, float]


def starting_book(capital: float, first_session: pd.Timestamp) -> Book:
    """An all-cash book dated the session before ``first_session``, as paper trading starts.

    :param capital: starting cash.
    :param first_session: the first session traded.
    """
    state = initial_portfolio(capital, previous_trading_day(first_session))
    return Book(state, {}, pd.Timestamp(first_session), state.value)


def equal_weight() -> Policy:
    """The equal-weight baseline over each session's tradable slots, as a policy."""
    return Policy(EQUAL_WEIGHT, equal_weight_policy)


def _start_row(book: Book) -> dict[str, object]:
    value = book.state.value
    return dict(zip(SERIES_COLUMNS, [book.state.date, value, value, 0.0, 0.0, 0.0], strict=True))


def _result(
    strategy: str, version: str, rows: list[dict[str, object]], benchmark: pd.Series
) -> BacktestResult:
    series = pd.DataFrame(rows, columns=SERIES_COLUMNS)
    series["date"] = pd.to_datetime(series["date"])
    indexed = series.set_index("date")
    bench = pd.Series(benchmark, dtype=np.float64)
    bench.index = pd.DatetimeIndex(bench.index).normalize()
    metrics = performance_summary(indexed["value"], bench, daily_turnover=indexed["turnover"].iloc[1:])
    return BacktestResult(strategy, version, series, metrics)


def run_policy(
    sessions: Sequence[SessionData],
    policy: Policy,
    start: Book,
    costs: TradingCosts,
    benchmark: pd.Series,
    strategy: str | None = None,
) -> BacktestResult:
    """Trade ``start`` through ``sessions`` in order with ``policy``, each session exactly as paper trading
    does (:func:`~magikarp_assets.core.trading.rebalance_session`).

    :param sessions: the sessions, increasing, all after ``start``'s date.
    :param policy: the model or baseline setting the targets.
    :param start: the portfolio before the first session.
    :param costs: proportional trading costs.
    :param benchmark: benchmark (QQQ) total-return price per session, on every session and the start date.
    :param strategy: label of the result (default: the policy's version).
    """
    if not sessions:
        raise ValueError(f"backtest of {policy.version}: no sessions to run")
    book, rows = start, [_start_row(start)]
    for session in sessions:
        result = rebalance_session(
            book, session.tensor, session.tickers, session.slot_map_version, policy, costs, session.day
        )
        book, summary = result.book, result.summary
        rows.append(
            {
                "date": session.day,
                "value": book.state.value,
                "value_before": summary.value_before,
                "traded_value": summary.traded_value,
                "turnover": summary.turnover,
                "costs": summary.costs,
            }
        )
    return _result(strategy or policy.version, policy.version, rows, benchmark)


def buy_and_hold(
    prices: pd.Series,
    days: Iterable[pd.Timestamp],
    capital: float,
    costs: TradingCosts,
    ticker: str = PRIMARY_BENCHMARK,
) -> BacktestResult:
    """Buy ``ticker`` with all the cash at the first session's close (paying the buy cost, with the same
    accounting as every book) and hold it.

    :param prices: the ticker's total-return (adjusted) close per session, on the start date and every day.
    :param days: the sessions, increasing.
    :param capital: starting cash.
    :param costs: proportional trading costs.
    :param ticker: the instrument bought (QQQ by default).
    """
    sessions = pd.DatetimeIndex(list(days))
    if sessions.empty:
        raise ValueError(f"buy-and-hold of {ticker}: no sessions to run")
    book = starting_book(capital, sessions[0])
    close = pd.Series(prices, dtype=np.float64)
    close.index = pd.DatetimeIndex(close.index).normalize()
    missing = sessions.difference(close.index)
    if len(missing):
        raise ValueError(
            f"buy-and-hold of {ticker}: no price on {len(missing)} session(s), first {missing[0]}"
        )
    state, rows = book.state, [_start_row(book)]
    for i, day in enumerate(sessions):
        price = {ticker: float(close.loc[day])}
        if i == 0:
            state, _, summary = apply_targets(
                state, {ticker: 1.0}, price, costs.buy_cost_pct, costs.sell_cost_pct, day, ticker, ""
            )
            traded, paid, before = summary.traded_value, summary.costs, summary.value_before
        else:
            state = mark_to_market(state, price, day)
            traded, paid, before = 0.0, 0.0, state.value
        rows.append(
            {
                "date": day,
                "value": state.value,
                "value_before": before,
                "traded_value": traded,
                "turnover": traded / before,
                "costs": paid,
            }
        )
    return _result(BUY_AND_HOLD, ticker, rows, close)


class LeakageError(ValueError):
    """A backtest would run on sessions the model was trained on."""


def check_out_of_sample(version: str, training_end: str | pd.Timestamp, sessions: pd.DatetimeIndex) -> None:
    """Refuse a backtest whose first session is not strictly after the model's training window.

    :param version: the model version (named in the error).
    :param training_end: last session of its training window.
    :param sessions: the backtest sessions.
    """
    if len(sessions) and pd.Timestamp(sessions[0]) <= pd.Timestamp(training_end):
        raise LeakageError(
            f"backtest of {version} starts on {pd.Timestamp(sessions[0]).date()}, not after its training "
            f"window ending {pd.Timestamp(training_end).date()}: the backtest must be strictly out of sample"
        )
