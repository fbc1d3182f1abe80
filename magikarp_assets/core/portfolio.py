"""The paper portfolio: shares held per ticker, traded at each session's close to the policy's target weights
with the RL environment's own cost maths, and carried unchanged across model and slot-map changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import ensure_trading_day
from magikarp_assets.core.rl.accounting import check_cost_rates, portfolio_value, rebalance_to_weights

# Ticker of the single row that stands for a portfolio holding no shares in the stored frame.
CASH_ONLY_ROW = ""
STATE_COLUMNS = ["date", "ticker", "shares", "cash", "value", "model_version", "slot_map_version"]
TRADE_COLUMNS = [
    "date",
    "ticker",
    "side",
    "shares_before",
    "shares_after",
    "shares_traded",
    "price",
    "gross_value",
    "cost",
]
WEIGHT_SUM_TOLERANCE = 1e-9

DateLike: TypeAlias = dt.date | str | pd.Timestamp


class OutOfOrderError(ValueError):
    """A portfolio was asked to move to a date that is not after its own date."""


class PortfolioPriceError(ValueError):
    """A ticker the portfolio holds or buys has no usable price (missing, NaN, inf or <= 0)."""


def _day(value: DateLike) -> pd.Timestamp:
    return pd.Timestamp(value).tz_localize(None).normalize()


@dataclass(frozen=True)
class PortfolioState:
    """The paper portfolio after the close of ``date``; ``value`` is cash plus shares at that close.

    :param date: session the state describes.
    :param cash: cash balance.
    :param shares: ticker -> shares held (> 0; fractional shares allowed, as in the environment).
    :param value: cash plus holdings at the date's prices.
    :param model_version: model whose targets were last applied ("" before the first trade).
    :param slot_map_version: slot map those targets were aligned on.
    """

    date: pd.Timestamp
    cash: float
    shares: Mapping[str, float]
    value: float
    model_version: str = ""
    slot_map_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "date", _day(self.date))
        object.__setattr__(self, "shares", {t: float(n) for t, n in sorted(self.shares.items())})
        for name in ("cash", "value"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(
                    f"portfolio {name}={getattr(self, name)!r} on {self.date.date()} is not finite"
                )
        bad = [t for t, n in self.shares.items() if not (np.isfinite(n) and n > 0) or not t]
        if bad:
            raise ValueError(
                f"portfolio of {self.date.date()} breaks the rule 'shares > 0 per ticker': {bad[:5]}"
            )

    def to_frame(self) -> pd.DataFrame:
        """One row per held ticker (a single ``CASH_ONLY_ROW`` row with 0 shares when none), STATE_COLUMNS."""
        tickers = list(self.shares) or [CASH_ONLY_ROW]
        frame = pd.DataFrame(
            {
                "date": pd.Series([self.date] * len(tickers), dtype="datetime64[ns]"),
                "ticker": pd.Series(tickers, dtype=object),
                "shares": [self.shares.get(t, 0.0) for t in tickers],
                "cash": self.cash,
                "value": self.value,
                "model_version": self.model_version,
                "slot_map_version": self.slot_map_version,
            }
        )
        return frame[STATE_COLUMNS]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PortfolioState:
        """Rebuild a state written by :meth:`to_frame`, checking it describes exactly one portfolio.

        :param frame: rows with STATE_COLUMNS.
        """
        missing = [c for c in STATE_COLUMNS if c not in frame.columns]
        if missing or frame.empty:
            raise ValueError(
                f"portfolio frame breaks the rule 'non-empty with columns {STATE_COLUMNS}': {missing}"
            )
        for col in ("date", "cash", "value", "model_version", "slot_map_version"):
            if frame[col].nunique(dropna=False) != 1:
                raise ValueError(
                    f"portfolio frame breaks the rule 'one {col} per portfolio': {frame[col].unique()[:5]}"
                )
        if frame["ticker"].duplicated().any():
            dup = frame.loc[frame["ticker"].duplicated(), "ticker"].tolist()
            raise ValueError(f"portfolio frame breaks the rule 'one row per ticker': {dup[:5]}")
        held = frame[frame["ticker"] != CASH_ONLY_ROW]
        if len(held) != len(frame) and (len(frame) != 1 or frame["shares"].iloc[0] != 0):
            raise ValueError(f"portfolio frame: the '{CASH_ONLY_ROW}' row must be alone and hold 0 shares")
        first = frame.iloc[0]
        return cls(
            date=first["date"],
            cash=float(first["cash"]),
            shares=dict(zip(held["ticker"], held["shares"].astype(float), strict=True)),
            value=float(first["value"]),
            model_version=str(first["model_version"]),
            slot_map_version=str(first["slot_map_version"]),
        )


@dataclass(frozen=True)
class RebalanceSummary:
    """What one application of targets did.

    :param date: session traded.
    :param value_before: cash plus holdings at the session's prices before trading.
    :param value_after: the same after trading; ``value_before == value_after + costs``.
    :param costs: proportional costs paid.
    :param traded_value: gross value bought plus sold.
    :param turnover: ``traded_value / value_before`` (the environment's definition).
    """

    date: pd.Timestamp
    value_before: float
    value_after: float
    costs: float
    traded_value: float
    turnover: float


def initial_portfolio(
    cash: float, date: DateLike, model_version: str = "", slot_map_version: str = ""
) -> PortfolioState:
    """An all-cash portfolio dated before its first trading session.

    :param cash: starting cash, finite and > 0.
    :param date: the state's date; the first :func:`apply_targets` must be for a later session.
    :param model_version: optional model version to record.
    :param slot_map_version: optional slot-map version to record.
    """
    if not (np.isfinite(cash) and cash > 0):
        raise ValueError(f"initial cash={cash!r} breaks the rule 'finite and > 0'")
    return PortfolioState(_day(date), float(cash), {}, float(cash), model_version, slot_map_version)


def _prices(
    tickers: list[str], prices_by_ticker: Mapping[str, float], date: pd.Timestamp, why: str
) -> np.ndarray:
    prices = np.array([float(prices_by_ticker.get(t, np.nan)) for t in tickers], dtype=np.float64)
    bad = ~(np.isfinite(prices) & (prices > 0))
    if bad.any():
        shown = ", ".join(f"{tickers[i]}={prices[i]!r}" for i in np.flatnonzero(bad)[:5])
        raise PortfolioPriceError(
            f"{int(bad.sum())} ticker(s) {why} have no usable price on {date.date()} (rule: finite and > 0; "
            f"missing is NaN): {shown}"
        )
    return prices


def _check_order(state: PortfolioState, date: pd.Timestamp, action: str, allow_same_day: bool) -> None:
    if date < state.date or (date == state.date and not allow_same_day):
        raise OutOfOrderError(
            f"cannot {action} for {date.date()} on the portfolio of {state.date.date()}: the date must be "
            "after the state's date; to re-run a day, start again from the previous day's state"
        )


def mark_to_market(
    state: PortfolioState, prices_by_ticker: Mapping[str, float], date: DateLike
) -> PortfolioState:
    """The same holdings valued at the close of ``date`` (no trades).

    :param state: portfolio to value.
    :param prices_by_ticker: last known close per ticker on ``date`` (must cover every held ticker).
    :param date: session of the prices, on or after ``state.date``.
    """
    day = ensure_trading_day(date)
    _check_order(state, day, "mark to market", allow_same_day=True)
    tickers = list(state.shares)
    prices = _prices(tickers, prices_by_ticker, day, "held")
    shares = np.array([state.shares[t] for t in tickers], dtype=np.float64)
    value = portfolio_value(state.cash, shares, prices)
    return PortfolioState(day, state.cash, state.shares, value, state.model_version, state.slot_map_version)


def apply_targets(
    state: PortfolioState,
    target_weights_by_ticker: Mapping[str, float],
    prices_by_ticker: Mapping[str, float],
    buy_cost_pct: float,
    sell_cost_pct: float,
    date: DateLike,
    model_version: str,
    slot_map_version: str,
    locked: Collection[str] = (),
    sell_only: Collection[str] = (),
) -> tuple[PortfolioState, pd.DataFrame, RebalanceSummary]:
    """Trade the portfolio at the close of ``date`` to target weights, net of proportional costs.

    The trade maths is :func:`magikarp_assets.core.rl.accounting.rebalance_to_weights`, the environment's
    own, so the paper portfolio, the backtest and the environment agree. Holdings are keyed by ticker, so a
    new model or slot map simply starts from the current holdings. Cash gets ``1 - sum(targets)``. Pure:
    applying the same inputs to the same state always gives the same result; re-running a day means
    applying again to the previous day's state.

    :param state: portfolio after the previous session (``state.date < date``).
    :param target_weights_by_ticker: ticker -> target weight (>= 0, total <= 1); absent tickers target 0.
    :param prices_by_ticker: today's close per ticker, or the last known close for ``locked`` tickers; needed
        for every held ticker and every ticker with a positive target.
    :param buy_cost_pct: cost rate on value bought.
    :param sell_cost_pct: cost rate on value sold.
    :param date: the session traded.
    :param model_version: version of the model that produced the targets (recorded in the new state).
    :param slot_map_version: version of the slot map the targets came from.
    :param locked: held tickers with no price today: they keep their shares and do not trade.
    :param sell_only: tickers that may only be sold today (archived names): never bought.
    :return: the new state, the trades (TRADE_COLUMNS, one row per ticker traded) and a summary.
    """
    day = ensure_trading_day(date)
    _check_order(state, day, "apply targets", allow_same_day=False)
    check_cost_rates(buy_cost_pct, sell_cost_pct)
    weights = {t: float(w) for t, w in target_weights_by_ticker.items()}
    bad = {t: w for t, w in weights.items() if not (np.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(
            f"target weights on {day.date()} break the rule 'finite and >= 0': {dict(list(bad.items())[:5])}"
        )
    total = sum(weights.values())
    if total > 1.0 + WEIGHT_SUM_TOLERANCE:
        raise ValueError(
            f"target weights on {day.date()} sum to {total!r}; the rule is <= 1 (cash takes the rest)"
        )

    tickers = sorted(set(state.shares) | {t for t, w in weights.items() if w > 0})
    prices = _prices(tickers, prices_by_ticker, day, "held or targeted")
    shares = np.array([state.shares.get(t, 0.0) for t in tickers], dtype=np.float64)
    holdings = shares * prices
    target = np.append([weights.get(t, 0.0) for t in tickers], max(1.0 - total, 0.0))
    locked_mask = np.isin(tickers, list(locked)) & (shares > 0)
    sell_only_mask = np.isin(tickers, list(sell_only))
    value_before = portfolio_value(state.cash, shares, prices)
    result = rebalance_to_weights(
        state.cash, holdings, target, locked_mask, sell_only_mask, buy_cost_pct, sell_cost_pct
    )
    new_shares = np.where(locked_mask, shares, result.positions / prices)
    value_after = portfolio_value(result.cash, new_shares, prices)
    new_state = PortfolioState(
        day,
        result.cash,
        {t: float(n) for t, n in zip(tickers, new_shares, strict=True) if n > 0},
        value_after,
        model_version,
        slot_map_version,
    )

    traded = np.flatnonzero(~locked_mask & (result.positions != holdings))
    delta_value = result.positions[traded] - holdings[traded]
    trades = pd.DataFrame(
        {
            "date": pd.Series([day] * traded.size, dtype="datetime64[ns]"),
            "ticker": pd.Series([tickers[i] for i in traded], dtype=object),
            "side": np.where(delta_value > 0, "BUY", "SELL").astype(object),
            "shares_before": shares[traded],
            "shares_after": new_shares[traded],
            "shares_traded": new_shares[traded] - shares[traded],
            "price": prices[traded],
            "gross_value": np.abs(delta_value),
            "cost": np.where(delta_value > 0, buy_cost_pct * delta_value, -sell_cost_pct * delta_value),
        }
    )[TRADE_COLUMNS]
    summary = RebalanceSummary(
        date=day,
        value_before=value_before,
        value_after=value_after,
        costs=result.costs,
        traded_value=result.traded_value,
        turnover=result.traded_value / value_before if value_before > 0 else 0.0,
    )
    return new_state, trades, summary


def slot_weights(
    state: PortfolioState, tickers: np.ndarray, prices_by_ticker: Mapping[str, float], date: DateLike
) -> np.ndarray:
    """The portfolio's weights aligned on a slot map, as the policy and :func:`signals.recommend` expect.

    :param state: the portfolio.
    :param tickers: object [S] ticker of each slot ("" for padding); every held ticker must have a slot.
    :param prices_by_ticker: last known close per held ticker on ``date``.
    :param date: session of the prices (named in errors).
    :return: float64 [S + 1] weights at those prices, slots then cash, summing to 1.
    """
    slot_of = {t: i for i, t in enumerate(tickers) if isinstance(t, str) and t}
    unmapped = [t for t in state.shares if t not in slot_of]
    if unmapped:
        raise ValueError(
            f"held ticker(s) {unmapped[:5]} have no slot in the slot map on {_day(date).date()}: "
            "a held name must stay active or archived"
        )
    held = list(state.shares)
    day = _day(date)
    prices = _prices(held, prices_by_ticker, day, "held")
    values = np.array([state.shares[t] for t in held], dtype=np.float64) * prices
    total = state.cash + float(values.sum())
    if not total > 0:
        raise ValueError(f"portfolio is worth {total!r} on {day.date()}; weights need a value > 0")
    weights = np.zeros(len(tickers) + 1, dtype=np.float64)
    weights[[slot_of[t] for t in held]] = values / total
    weights[-1] = state.cash / total
    return weights


def weights_by_ticker(weights: np.ndarray, tickers: np.ndarray) -> dict[str, float]:
    """Slot weights (slots then cash, as from ``target_weights``) as ticker -> weight, positive ones only.

    :param weights: float [S + 1] weights, the last entry cash.
    :param tickers: object [S] ticker of each slot ("" for padding).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(tickers) + 1,):
        raise ValueError(
            f"weights has shape {weights.shape}; the rule is ({len(tickers) + 1},): slots then cash"
        )
    out: dict[str, float] = {}
    for slot in np.flatnonzero(weights[:-1] > 0):
        ticker = tickers[slot]
        if not isinstance(ticker, str) or not ticker:
            raise ValueError(f"weights give {weights[slot]!r} to slot {slot}, which has no ticker (padding)")
        out[ticker] = float(weights[slot])
    return out
