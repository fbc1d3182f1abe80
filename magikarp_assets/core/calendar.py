"""NYSE trading calendar (exchange_calendars' XNYS), the one source of truth for trading days."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

CALENDAR_NAME = "XNYS"
# First session of the bundled sample; daily partitions start here.
FIRST_TRADING_DAY = "2013-02-08"


class NotATradingDayError(ValueError):
    """Raised for a date on which NYSE has no regular session."""


@lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    return xcals.get_calendar(CALENDAR_NAME, start="2005-01-03")


def _ts(day: str | dt.date | pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(day).normalize().tz_localize(None)


def trading_days(start: str | dt.date | pd.Timestamp, end: str | dt.date | pd.Timestamp) -> pd.DatetimeIndex:
    """All NYSE sessions in [start, end], as tz-naive midnight timestamps."""
    cal = nyse()
    start_ts, end_ts = _ts(start), min(_ts(end), cal.last_session)
    if start_ts > end_ts:
        return pd.DatetimeIndex([])
    return pd.DatetimeIndex(cal.sessions_in_range(start_ts, end_ts)).tz_localize(None)


def is_trading_day(day: str | dt.date | pd.Timestamp) -> bool:
    cal = nyse()
    ts = _ts(day)
    return bool(cal.first_session <= ts <= cal.last_session and cal.is_session(ts))


def non_trading_weekdays(
    start: str | dt.date | pd.Timestamp, end: str | dt.date | pd.Timestamp
) -> list[pd.Timestamp]:
    """Weekdays in [start, end] with no NYSE session: exchange holidays and ad-hoc closures."""
    weekdays = pd.bdate_range(_ts(start), min(_ts(end), nyse().last_session))
    return sorted(set(weekdays) - set(trading_days(start, end)))


def ensure_trading_day(day: str | dt.date | pd.Timestamp) -> pd.Timestamp:
    """Return the day as a timestamp, or raise with the reason it is not a trading day."""
    try:
        ts = _ts(day)
    except (ValueError, TypeError) as exc:
        raise NotATradingDayError(f"{day!r} is not a date (expected YYYY-MM-DD)") from exc
    if is_trading_day(ts):
        return ts
    if ts.weekday() >= 5:
        reason = f"a {ts.day_name()}"
    elif ts > nyse().last_session:
        reason = "beyond the end of the exchange calendar"
    else:
        reason = "an NYSE holiday or closure"
    raise NotATradingDayError(f"{ts.date()} is not an NYSE trading day: it is {reason}")


def previous_trading_day(day: str | dt.date | pd.Timestamp, n: int = 1) -> pd.Timestamp:
    """The n-th session strictly before `day` (which need not be a session itself)."""
    cal = nyse()
    ts = _ts(day)
    prior = cal.sessions[cal.sessions < ts]
    if len(prior) < n:
        raise ValueError(f"no trading day {n} sessions before {ts.date()} in the calendar")
    return pd.Timestamp(prior[-n]).tz_localize(None)


def trading_day_window(end: str | dt.date | pd.Timestamp, sessions: int) -> pd.DatetimeIndex:
    """The `sessions` trading days ending at `end` (inclusive)."""
    cal = nyse()
    ts = ensure_trading_day(end)
    sess = cal.sessions[cal.sessions <= ts]
    return pd.DatetimeIndex(sess[-sessions:]).tz_localize(None)
