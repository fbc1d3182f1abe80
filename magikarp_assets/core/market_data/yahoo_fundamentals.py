"""Quarterly company fundamentals from Yahoo's fundamentals time series: the live source of reports."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from magikarp_assets.core.market_data.base import (
    FUNDAMENTAL_COLUMNS,
    MarketDataError,
    SourceUnavailableError,
    describe_tickers,
)
from magikarp_assets.core.market_data.http import (
    CircuitBreaker,
    HttpClient,
    RetryPolicy,
    decode_json,
    fetch_isolated,
    require,
    utc_now,
)
from magikarp_assets.core.market_data.yahoo import USER_AGENT

log = logging.getLogger(__name__)

SOURCE_NAME = "yahoo"
DEFAULT_BASE_URL = "https://query2.finance.yahoo.com"
TIMESERIES_PATH = "/ws/fundamentals-timeseries/v1/finance/timeseries/{symbol}"
# Yahoo time-series type (yfinance const.fundamentals_keys with the "quarterly" prefix) -> our column.
# Shares are the diluted weighted average of the quarter, the denominator of the diluted EPS.
TYPE_COLUMNS = {
    "quarterlyTotalRevenue": "revenue",
    "quarterlyNetIncome": "net_income",
    "quarterlyDilutedEPS": "eps",
    "quarterlyDilutedAverageShares": "shares_outstanding",
    "quarterlyStockholdersEquity": "total_equity",
    "quarterlyTotalLiabilitiesNetMinorityInterest": "total_liabilities",
    "quarterlyLongTermDebt": "long_term_debt",
}
VALUE_COLUMNS = list(TYPE_COLUMNS.values())
# Yahoo gives the fiscal period end (asOfDate) but not the filing date. Large accelerated filers must
# file a 10-Q within 40 days (10-K: 60 days); 45 days is a conservative public date for a quarter,
# and `public_date_estimated` is True. A 10-K quarter filed after day 45 is the known residual risk.
QUARTERLY_REPORT_LAG_DAYS = 45
# Yahoo serves about the last five quarters whatever period1 says; asking for two years is enough.
DEFAULT_LOOKBACK = pd.DateOffset(years=2)
# Prices are in US dollars: values reported in another currency would distort every per-price ratio.
REPORTING_CURRENCY = "USD"


def empty_fundamentals() -> pd.DataFrame:
    return conform_fundamentals(pd.DataFrame(columns=FUNDAMENTAL_COLUMNS))


def conform_fundamentals(df: pd.DataFrame) -> pd.DataFrame:
    """Cast to FUNDAMENTAL_COLUMNS dtypes and order, sorted by (ticker, period_ending).

    :param df: rows with (at least) the FUNDAMENTAL_COLUMNS; missing values stay NaN.
    """
    out = df.reindex(columns=FUNDAMENTAL_COLUMNS).copy()
    for col in ("period_ending", "public_date"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[ns]").dt.normalize()
    out["public_date_estimated"] = out["public_date_estimated"].astype(bool)
    for col in VALUE_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    out[["ticker", "source"]] = out[["ticker", "source"]].astype(str)
    return out.sort_values(["ticker", "period_ending"], kind="stable").reset_index(drop=True)


def _entries(item: Any, ctx: str) -> tuple[str, list[Any]]:
    """(Yahoo type, its entries) of one `timeseries.result` item; no entries when Yahoo has no values."""
    types = require(require(item, "meta", SOURCE_NAME, ctx), "type", SOURCE_NAME, ctx)
    if not isinstance(types, list) or not types or not isinstance(types[0], str):
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} has no type name in field 'meta.type'")
    entries = item.get(types[0])  # absent: Yahoo has no value of this type for the symbol
    if entries is not None and not isinstance(entries, list):
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} field {types[0]!r} is not a list")
    return types[0], entries or []


def _value(entry: Any, yahoo_type: str, ctx: str) -> tuple[pd.Timestamp, float, str]:
    """(period end, value, currency) of one entry, or MarketDataError naming the ticker and field."""
    where = f"{ctx} type {yahoo_type}"
    as_of = require(entry, "asOfDate", SOURCE_NAME, where)
    raw = require(require(entry, "reportedValue", SOURCE_NAME, where), "raw", SOURCE_NAME, where)
    try:
        period = pd.Timestamp(as_of) if isinstance(as_of, str) else None
    except ValueError:
        period = None
    if period is None or pd.isna(period):
        raise MarketDataError(
            f"{SOURCE_NAME}: response for {where} field 'asOfDate' holds {as_of!r}, not a date"
        )
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise MarketDataError(
            f"{SOURCE_NAME}: response for {where} on {period.date()} field 'reportedValue.raw' holds "
            f"{raw!r}, not a finite number"
        )
    return period.normalize(), float(raw), str(entry.get("currencyCode") or REPORTING_CURRENCY)


def parse_timeseries(body: Any, ticker: str) -> tuple[pd.DataFrame, str | None]:
    """One row per quarter of one Yahoo fundamentals-timeseries answer, or (no rows, reason) when Yahoo
    has no value at all for the symbol (unknown, delisted, or not a company).

    Values reported in a currency other than USD are left NaN (logged), as are quarters Yahoo lacks.

    :param body: the decoded JSON: ``timeseries.result[]``, each item with ``meta.type[0]`` and a list
        under that type of ``{asOfDate, periodType, reportedValue: {raw, fmt}, currencyCode}`` (or null).
    :param ticker: the canonical ticker that was requested (rows are labelled with it).
    :raises MarketDataError: naming the ticker and the field when the answer is malformed, or when a
        type gives two different values for the same quarter.
    """
    ctx = f"ticker {ticker}"
    series = require(body, "timeseries", SOURCE_NAME, ctx)
    error = series.get("error") if isinstance(series, dict) else None
    if error:
        detail = (error.get("description") or error.get("code")) if isinstance(error, dict) else error
        return empty_fundamentals(), f"Yahoo timeseries error: {detail}"
    results = require(series, "result", SOURCE_NAME, ctx) or []
    if not isinstance(results, list):
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} field 'timeseries.result' is not a list")
    values: dict[tuple[pd.Timestamp, str], float] = {}
    for item in results:
        yahoo_type, entries = _entries(item, ctx)
        column = TYPE_COLUMNS.get(yahoo_type)
        if column is None:
            continue  # a series we did not ask for
        for entry in entries:
            if entry is None:  # Yahoo pads quarters it has no value for with null
                continue
            period, value, currency = _value(entry, yahoo_type, ctx)
            if currency != REPORTING_CURRENCY:
                log.warning(
                    "%s: %s %s on %s is in %s, not %s: left NaN",
                    *(SOURCE_NAME, ctx, yahoo_type, period.date(), currency, REPORTING_CURRENCY),
                )
                value = math.nan
            seen = values.setdefault((period, column), value)
            if seen != value and not (math.isnan(seen) and math.isnan(value)):
                raise MarketDataError(
                    f"{SOURCE_NAME}: response for {ctx} type {yahoo_type} gives two values for "
                    f"{period.date()}: {seen!r} and {value!r}"
                )
    if not values:
        return empty_fundamentals(), "Yahoo has no quarterly values for this symbol"
    long = pd.Series(values).rename_axis(["period_ending", "column"])
    wide = long.unstack("column").reindex(columns=VALUE_COLUMNS).dropna(how="all").reset_index()
    if wide.empty:
        return (
            empty_fundamentals(),
            f"Yahoo reports values only in currencies other than {REPORTING_CURRENCY}",
        )
    wide["ticker"] = ticker
    wide["public_date"] = wide["period_ending"] + pd.Timedelta(days=QUARTERLY_REPORT_LAG_DAYS)
    wide["public_date_estimated"] = True
    wide["source"] = SOURCE_NAME
    return conform_fundamentals(wide), None


class YahooFundamentalsSource:
    """Quarterly fundamentals per ticker from Yahoo's fundamentals-timeseries endpoint (what yfinance uses).

    One request per ticker, `max_workers` at a time, each with the shared HttpClient retry policy.
    Per-ticker isolation: a ticker Yahoo has no values for, or whose request failed for good, is left
    out and listed in `last_missing` (reasons in `last_errors`). If no ticker has a single value,
    `fetch` raises SourceUnavailableError naming the tickers.

    :param base_url: API root; None = DEFAULT_BASE_URL (set it to a local fake in tests).
    :param max_retries: retries per request; backoff is full jitter between 0 and
        base_delay * 2**retry, capped at max_delay.
    :param max_workers: tickers fetched concurrently (keep it small: Yahoo throttles bursts).
    :param breaker_threshold: consecutive failed requests after which the remaining tickers are skipped.
    :param sleep: wait function (inject a recorder in tests); rand: jitter source in [0, 1).
    :param clock: current UTC time, the end of the requested range.
    """

    name = SOURCE_NAME

    def __init__(
        self,
        base_url: str | None = None,
        max_retries: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 30.0,
        max_workers: int = 4,
        breaker_threshold: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], pd.Timestamp] = utc_now,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.policy = RetryPolicy(max_retries, base_delay, max_delay, timeout)
        self.max_workers = max_workers
        self.breaker_threshold = breaker_threshold
        self.sleep, self.rand, self.clock = sleep, rand, clock
        self.last_missing: list[str] = []
        self.last_errors: dict[str, str] = {}

    def fetch(self, tickers: Sequence[str], start: dt.date | None = None) -> pd.DataFrame:
        """FUNDAMENTAL_COLUMNS rows, one per (ticker, quarter end), sorted by (ticker, period_ending).

        :param tickers: canonical tickers (duplicates are asked once).
        :param start: earliest quarter end asked for; None = two years before now (Yahoo serves only
            about the last five quarters whatever the range).
        :raises SourceUnavailableError: no ticker has any value (outage, block, or all unknown).
        :raises MarketDataError: a malformed answer (names the ticker and field).
        """
        wanted = list(dict.fromkeys(tickers))
        self.last_missing, self.last_errors = [], {}
        if not wanted:
            return empty_fundamentals()
        now = self.clock()
        first = (
            pd.Timestamp(start) if start is not None else now.tz_convert(None).normalize() - DEFAULT_LOOKBACK
        )
        period = {
            "period1": str(int(first.tz_localize("UTC").timestamp())),
            "period2": str(int(now.ceil("D").timestamp())),
        }
        client = HttpClient(SOURCE_NAME, self.policy, {"User-Agent": USER_AGENT}, self.sleep, self.rand)
        batch = fetch_isolated(
            wanted,
            lambda t: self._fetch_one(client, t, period),
            self.max_workers,
            CircuitBreaker(self.breaker_threshold),
        )
        self.last_errors = {**batch.misses, **batch.failures}
        if not batch.frames:
            first_reason = next(iter(self.last_errors.values()), "no answer")
            skipped = sum(reason.startswith("skipped") for reason in batch.failures.values())
            self.last_missing = sorted(wanted)
            raise SourceUnavailableError(
                f"{SOURCE_NAME}: no quarterly fundamentals for {describe_tickers(wanted)}: "
                f"{len(batch.failures) - skipped} request(s) failed, {skipped} skipped after them, "
                f"{len(batch.misses)} ticker(s) had no values; first: {first_reason}"
            )
        out = conform_fundamentals(pd.concat(batch.frames, ignore_index=True))
        self.last_missing = sorted(set(wanted) - set(out["ticker"]))
        return out

    def _fetch_one(
        self, client: HttpClient, ticker: str, period: dict[str, str]
    ) -> tuple[pd.DataFrame, str | None]:
        ctx = f"ticker {ticker}"
        params = {"symbol": ticker, "type": ",".join(TYPE_COLUMNS), **period}
        url = self.base_url + TIMESERIES_PATH.format(symbol=quote(ticker, safe=""))
        resp = client.get(url, params, context=ctx, accept=(200, 404))
        if resp.status_code == 404:
            return empty_fundamentals(), "Yahoo answered 404 (unknown symbol)"
        return parse_timeseries(decode_json(resp, SOURCE_NAME, ctx), ticker)


def fetch_quarterly_fundamentals(
    tickers: Sequence[str],
    max_retries: int = 4,
    base_url: str | None = None,
    start: dt.date | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Quarterly fundamentals (FUNDAMENTAL_COLUMNS) of `tickers` from Yahoo, public at quarter end + 45 days.

    :param tickers: canonical tickers.
    :param max_retries: retries per request.
    :param base_url: API root; None = https://query2.finance.yahoo.com.
    :param start: earliest quarter end asked for; None = two years back.
    :param options: further YahooFundamentalsSource settings (max_workers, timeout, sleep, clock, ...).
    :raises SourceUnavailableError: no ticker has any value.
    :raises MarketDataError: a malformed answer, naming the ticker and field.
    """
    return YahooFundamentalsSource(base_url, max_retries, **options).fetch(tickers, start)
