"""The one interface every market data source implements, and the frame it returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

# Columns of an OHLCV frame, in order. `date` is a tz-naive midnight timestamp (the session),
# `adj_close` is NaN where the source has no dividend adjustment, `fetched_at` is tz-aware UTC.
OHLCV_COLUMNS = [
    "date",
    "ticker",
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "source",
    "fetched_at",
]
FUNDAMENTAL_COLUMNS = [
    "ticker",
    "period_ending",
    "public_date",
    "public_date_estimated",
    "revenue",
    "net_income",
    "eps",
    "shares_outstanding",
    "total_equity",
    "total_liabilities",
    "long_term_debt",
    "source",
]


class MarketDataError(RuntimeError):
    """A source could not deliver data; the message names the source, tickers and dates."""


class SourceUnavailableError(MarketDataError):
    """A source answered nothing usable at all (outage, offline, auth failure)."""


@runtime_checkable
class MarketDataSource(Protocol):
    """Daily bars for tickers over [start, end] (sessions, inclusive). Never rows after `end`."""

    name: str

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame: ...


def describe_tickers(tickers: Sequence[str], limit: int = 10) -> str:
    """`A, B, C (+12 more)`: for error messages that name tickers without flooding the log."""
    tickers = list(tickers)
    head = ", ".join(tickers[:limit])
    return head + (f" (+{len(tickers) - limit} more)" if len(tickers) > limit else "")


def empty_ohlcv() -> pd.DataFrame:
    return conform_ohlcv(pd.DataFrame(columns=OHLCV_COLUMNS))


def conform_ohlcv(df: pd.DataFrame) -> pd.DataFrame:
    """Cast to the canonical dtypes and column order, sorted by (date, ticker)."""
    out = df.reindex(columns=OHLCV_COLUMNS).copy()
    out["date"] = pd.to_datetime(out["date"]).dt.tz_localize(None).astype("datetime64[ns]").dt.normalize()
    out["ticker"] = out["ticker"].astype(str)
    for col in ["open", "high", "low", "close", "adj_close", "volume"]:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    out["source"] = out["source"].astype(str)
    out["fetched_at"] = pd.to_datetime(out["fetched_at"], utc=True).astype("datetime64[ns, UTC]")
    return out.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
