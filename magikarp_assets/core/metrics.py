"""How well the paper portfolio and the recommendations did: return, risk and success-rate measures as pure
functions of daily series (definitions in docs/metrics.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days

TRADING_DAYS = 252
SUCCESS_HORIZONS = (30, 90)  # sessions
MONTHLY_HORIZON = 21  # sessions, about one month
MONTHLY_COHORTS = 12

SUCCESS, FAILURE, PENDING, NO_PRICE = "success", "failure", "pending", "no_price"
OUTCOME_COLUMNS = [
    "date",
    "ticker",
    "action",
    "horizon",
    "exit_date",
    "ticker_return",
    "benchmark_return",
    "status",
]

DateLike: TypeAlias = dt.date | str | pd.Timestamp


def _day(value: DateLike) -> pd.Timestamp:
    return pd.Timestamp(value).tz_localize(None).normalize()


def _check_values(values: pd.Series, name: str) -> pd.Series:
    values = pd.Series(values, dtype=np.float64)
    if not values.index.is_monotonic_increasing or values.index.has_duplicates:
        raise ValueError(f"{name} breaks the rule 'index strictly increasing (one value per day)'")
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ValueError(f"{name} breaks the rule 'finite and > 0' on {values.index[bad.to_numpy()][0]!r}")
    return values


def daily_returns(values: pd.Series) -> pd.Series:
    """Simple daily returns ``v_t / v_{t-1} - 1``, indexed by the later day (the first day has none).

    :param values: portfolio (or price) values per day, finite and > 0, index increasing.
    """
    values = _check_values(values, "values")
    return (values / values.shift(1) - 1.0).iloc[1:]


def cumulative_return(values: pd.Series) -> float:
    """``v_last / v_first - 1``; NaN for an empty series.

    :param values: values per day, finite and > 0.
    """
    values = _check_values(values, "values")
    return float(values.iloc[-1] / values.iloc[0] - 1.0) if len(values) else float("nan")


def volatility(returns: pd.Series, periods: int = TRADING_DAYS) -> float:
    """Annualised volatility: sample standard deviation (ddof=1) of daily returns times ``sqrt(periods)``.

    :param returns: daily returns; NaN with fewer than 2.
    :param periods: sessions per year.
    """
    returns = pd.Series(returns, dtype=np.float64)
    return float(returns.std(ddof=1) * np.sqrt(periods)) if len(returns) > 1 else float("nan")


def sharpe_ratio(returns: pd.Series, risk_free_rate: float = 0.0, periods: int = TRADING_DAYS) -> float:
    """Annualised Sharpe ratio ``mean(r - rf / periods) / std(r - rf / periods, ddof=1) * sqrt(periods)``.

    :param returns: daily returns; NaN with fewer than 2 or a zero standard deviation.
    :param risk_free_rate: annual risk-free rate as a simple rate (0.02 = 2 %), spread evenly over sessions.
    :param periods: sessions per year.
    """
    excess = pd.Series(returns, dtype=np.float64) - risk_free_rate / periods
    if len(excess) < 2:
        return float("nan")
    std = float(excess.std(ddof=1))
    return float(excess.mean() / std * np.sqrt(periods)) if std > 0 else float("nan")


def drawdown_series(values: pd.Series) -> pd.Series:
    """Drawdown per day ``v_t / max(v_0..v_t) - 1`` (0 at a new high, negative below it).

    :param values: values per day, finite and > 0.
    """
    values = _check_values(values, "values")
    return values / values.cummax() - 1.0


def max_drawdown(values: pd.Series) -> float:
    """Worst drawdown, a number <= 0 (-0.25 = a 25 % fall from the running peak); NaN for an empty series.

    :param values: values per day, finite and > 0.
    """
    drawdown = drawdown_series(values)
    return float(drawdown.min()) if len(drawdown) else float("nan")


def win_rate(returns: pd.Series) -> float:
    """Share of days with a return strictly above 0 (a flat day is not a win); NaN for no days.

    :param returns: daily returns.
    """
    returns = pd.Series(returns, dtype=np.float64)
    return float((returns > 0).mean()) if len(returns) else float("nan")


def alpha_beta(
    returns: pd.Series, benchmark_returns: pd.Series, periods: int = TRADING_DAYS
) -> tuple[float, float]:
    """OLS of daily portfolio returns on benchmark returns over their common days: ``r = a + b * r_B + e``.

    ``beta = cov(r, r_B) / var(r_B)``, daily ``a = mean(r) - beta * mean(r_B)``, annualised ``alpha = a *
    periods``. NaN for both with fewer than 2 common days or a constant benchmark.

    :param returns: daily portfolio returns.
    :param benchmark_returns: daily benchmark (QQQ) returns.
    :param periods: sessions per year.
    :return: (annualised alpha, beta).
    """
    joined = pd.concat(
        [pd.Series(returns, dtype=np.float64), pd.Series(benchmark_returns, dtype=np.float64)], axis=1
    )
    joined = joined.dropna()
    if len(joined) < 2:
        return float("nan"), float("nan")
    port, bench = joined.iloc[:, 0].to_numpy(), joined.iloc[:, 1].to_numpy()
    spread = bench - bench.mean()
    variance = float(spread @ spread)
    if variance == 0:
        return float("nan"), float("nan")
    beta = float(spread @ (port - port.mean())) / variance
    return float((port.mean() - beta * bench.mean()) * periods), beta


def turnover(traded_value: pd.Series, value_before: pd.Series) -> pd.Series:
    """Daily turnover ``(value bought + value sold) / portfolio value before trading`` (the env's definition).

    :param traded_value: gross value traded per day.
    :param value_before: portfolio value before that day's trades, > 0.
    """
    value_before = _check_values(value_before, "value_before")
    traded = pd.Series(traded_value, dtype=np.float64)
    if not traded.index.equals(value_before.index):
        raise ValueError("traded_value and value_before break the rule 'same days'")
    return traded / value_before


def performance_summary(
    values: pd.Series,
    benchmark_prices: pd.Series,
    risk_free_rate: float = 0.0,
    daily_turnover: pd.Series | None = None,
) -> dict[str, float]:
    """Every portfolio metric of docs/metrics.md at once, the benchmark measured over the same days.

    :param values: portfolio value per session.
    :param benchmark_prices: benchmark (QQQ) total-return price per session, on every day of ``values``.
    :param risk_free_rate: annual simple rate for the Sharpe ratio.
    :param daily_turnover: optional daily turnover series, averaged into ``average_turnover``.
    """
    values = _check_values(values, "values")
    bench = pd.Series(benchmark_prices, dtype=np.float64).reindex(values.index)
    if bench.isna().any():
        missing = list(bench.index[bench.isna().to_numpy()][:5])
        raise ValueError(
            f"benchmark_prices has no price on {len(missing)}+ portfolio day(s), first: {missing}"
        )
    returns, bench_returns = daily_returns(values), daily_returns(bench)
    alpha, beta = alpha_beta(returns, bench_returns)
    summary = {
        "cumulative_return": cumulative_return(values),
        "benchmark_cumulative_return": cumulative_return(bench),
        "volatility": volatility(returns),
        "sharpe_ratio": sharpe_ratio(returns, risk_free_rate),
        "max_drawdown": max_drawdown(values),
        "win_rate": win_rate(returns),
        "alpha": alpha,
        "beta": beta,
    }
    if daily_turnover is not None:
        summary["average_turnover"] = float(pd.Series(daily_turnover, dtype=np.float64).mean())
    return summary


def recommendation_outcomes(
    recommendations: pd.DataFrame,
    prices: pd.DataFrame,
    benchmark: pd.Series,
    horizon: int,
    as_of: DateLike,
) -> pd.DataFrame:
    """Outcome of every BUY / SELL made by ``as_of`` over ``horizon`` sessions, using data up to ``as_of``.

    For a call on session d the exit is session d + horizon (NYSE calendar). A BUY succeeds if the ticker's
    return ``p(exit) / p(d) - 1`` beats the benchmark's over the same window, a SELL if it trails it (a tie
    fails). The exit price is the ticker's last price on or before the exit (a name delisted inside the window
    keeps its last price). Status is ``pending`` while the exit is after ``as_of``, and ``no_price`` when the
    ticker has no price on d. Prices after ``as_of`` are never read.

    :param recommendations: rows with date, ticker, action (others are ignored, as are HOLD rows).
    :param prices: total-return prices (adjusted close), index sessions, one column per ticker.
    :param benchmark: benchmark (QQQ) total-return price per session.
    :param horizon: sessions between the call and its evaluation, >= 1.
    :param as_of: the last session whose data may be used.
    :return: OUTCOME_COLUMNS, one row per BUY / SELL call.
    """
    if horizon < 1:
        raise ValueError(f"horizon={horizon!r} breaks the rule horizon >= 1 session")
    missing = {"date", "ticker", "action"} - set(recommendations.columns)
    if missing:
        raise ValueError(f"recommendations lack column(s) {sorted(missing)}")
    end = _day(as_of)
    calls = recommendations[recommendations["action"].isin(["BUY", "SELL"])]
    calls = calls.assign(date=pd.to_datetime(calls["date"]).dt.normalize())
    calls = calls[calls["date"] <= end].sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"date": calls["date"], "ticker": calls["ticker"], "action": calls["action"]})
    out["horizon"] = np.int64(horizon)
    if calls.empty:
        return out.assign(exit_date=pd.NaT, ticker_return=np.nan, benchmark_return=np.nan, status="")[
            OUTCOME_COLUMNS
        ]
    sessions = trading_days(calls["date"].min(), end)
    entry_pos = sessions.get_indexer(calls["date"])
    if (entry_pos < 0).any():
        raise ValueError(
            f"recommendation date {calls['date'][entry_pos < 0].iloc[0].date()} is not an NYSE session"
        )
    exit_pos = entry_pos + horizon
    resolved = exit_pos < len(sessions)
    exit_pos = np.minimum(exit_pos, len(sessions) - 1)

    # Reindexing on the sessions up to as_of is what drops every price after as_of (no look-ahead).
    known = prices.set_axis(pd.DatetimeIndex(prices.index).normalize()).reindex(sessions)
    col = known.columns.get_indexer(calls["ticker"])
    raw = known.to_numpy(dtype=np.float64)
    filled = known.ffill().to_numpy(dtype=np.float64)
    safe_col = np.maximum(col, 0)
    entry = np.where(col >= 0, raw[entry_pos, safe_col], np.nan)
    exit_price = np.where(col >= 0, filled[exit_pos, safe_col], np.nan)

    bench = pd.Series(benchmark, dtype=np.float64)
    bench.index = pd.DatetimeIndex(bench.index).normalize()
    bench = bench.reindex(sessions).to_numpy()
    needed = np.concatenate([entry_pos, exit_pos[resolved]])
    gaps = needed[~(np.isfinite(bench[needed]) & (bench[needed] > 0))]
    if gaps.size:
        raise ValueError(f"benchmark has no usable price on session {sessions[gaps.min()].date()}")

    priced = np.isfinite(entry) & (entry > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ticker_return = np.where(resolved & priced, exit_price / entry - 1.0, np.nan)
    bench_return = np.where(resolved, bench[exit_pos] / bench[entry_pos] - 1.0, np.nan)
    beat = np.where(
        calls["action"].to_numpy() == "BUY", ticker_return > bench_return, ticker_return < bench_return
    )
    out["exit_date"] = pd.Series(sessions[exit_pos], dtype="datetime64[ns]").where(resolved)
    out["ticker_return"] = ticker_return
    out["benchmark_return"] = bench_return
    out["status"] = np.where(
        ~priced, NO_PRICE, np.where(~resolved, PENDING, np.where(beat, SUCCESS, FAILURE))
    )
    return out[OUTCOME_COLUMNS]


def success_rate(outcomes: pd.DataFrame, as_of: DateLike | None = None) -> float:
    """Successes over resolved calls, counting only calls whose exit is on or before ``as_of``; NaN if none.

    :param outcomes: frame from :func:`recommendation_outcomes`.
    :param as_of: day the rate is reported for (default: every resolved call).
    """
    resolved = outcomes["status"].isin([SUCCESS, FAILURE])
    if as_of is not None:
        resolved &= outcomes["exit_date"] <= _day(as_of)
    count = int(resolved.sum())
    return float((outcomes.loc[resolved, "status"] == SUCCESS).sum() / count) if count else float("nan")


def success_rates(
    recommendations: pd.DataFrame,
    prices: pd.DataFrame,
    benchmark: pd.Series,
    as_of: DateLike,
    horizons: tuple[int, ...] = SUCCESS_HORIZONS,
) -> pd.DataFrame:
    """Success rate per horizon and action (BUY, SELL, ALL) as known on ``as_of``.

    :param recommendations: rows with date, ticker, action.
    :param prices: total-return prices, index sessions, one column per ticker.
    :param benchmark: benchmark total-return price per session.
    :param as_of: last session whose data may be used.
    :param horizons: horizons in sessions.
    :return: columns horizon, action, n_success, n_resolved, n_pending, n_no_price, success_rate.
    """
    rows = []
    for horizon in horizons:
        outcomes = recommendation_outcomes(recommendations, prices, benchmark, horizon, as_of)
        for action in ("BUY", "SELL", "ALL"):
            part = outcomes if action == "ALL" else outcomes[outcomes["action"] == action]
            status = part["status"]
            rows.append(
                {
                    "horizon": horizon,
                    "action": action,
                    "n_success": int((status == SUCCESS).sum()),
                    "n_resolved": int(status.isin([SUCCESS, FAILURE]).sum()),
                    "n_pending": int((status == PENDING).sum()),
                    "n_no_price": int((status == NO_PRICE).sum()),
                    "success_rate": success_rate(part),
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class MonthlySuccess:
    """12-month success rate of monthly signals.

    :param success_rate: successes / resolved calls of the cohorts (NaN if none).
    :param n_success: successful calls.
    :param n_resolved: calls with an outcome (no_price calls excluded).
    :param cohorts: the first sessions of month used, oldest first.
    """

    success_rate: float
    n_success: int
    n_resolved: int
    cohorts: tuple[pd.Timestamp, ...]


def monthly_signal_success_rate(
    recommendations: pd.DataFrame,
    prices: pd.DataFrame,
    benchmark: pd.Series,
    as_of: DateLike,
    months: int = MONTHLY_COHORTS,
    horizon: int = MONTHLY_HORIZON,
) -> MonthlySuccess:
    """Success of the BUY / SELL calls made on the first session of each month, over the last ``months``
    monthly cohorts whose ``horizon``-session window has closed on or before ``as_of``.

    :param recommendations: rows with date, ticker, action.
    :param prices: total-return prices, index sessions, one column per ticker.
    :param benchmark: benchmark total-return price per session.
    :param as_of: last session whose data may be used.
    :param months: number of monthly cohorts (12).
    :param horizon: sessions each call is evaluated over (21).
    """
    end = _day(as_of)
    dates = pd.to_datetime(recommendations["date"]).dt.normalize()
    if dates.empty or dates.min() > end:
        return MonthlySuccess(float("nan"), 0, 0, ())
    first = dates.min()
    sessions = trading_days(pd.Timestamp(first.year, first.month, 1), end)
    month_firsts = pd.Series(sessions, index=sessions).groupby(sessions.to_period("M")).min()
    closed = [d for d in month_firsts if sessions.get_loc(d) + horizon < len(sessions)]
    cohorts = tuple(pd.Timestamp(d) for d in closed[-months:])
    calls = recommendations[dates.isin(cohorts).to_numpy()]
    outcomes = recommendation_outcomes(calls, prices, benchmark, horizon, end)
    resolved = outcomes["status"].isin([SUCCESS, FAILURE])
    n_success = int((outcomes["status"] == SUCCESS).sum())
    rate = n_success / int(resolved.sum()) if resolved.any() else float("nan")
    return MonthlySuccess(float(rate), n_success, int(resolved.sum()), cohorts)
