"""Alpha Vantage adjusted daily bars (last-resort backup): one request per ticker, heavily rate-limited."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import requests

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import (
    MarketDataError,
    SourceUnavailableError,
    conform_ohlcv,
    empty_ohlcv,
)
from magikarp_assets.core.market_data.http import (
    NEW_YORK,
    CircuitBreaker,
    HttpClient,
    RetryPolicy,
    assemble,
    decode_json,
    fetch_isolated,
    last_closed_session,
    require,
    utc_now,
)

SOURCE_NAME = "alphavantage"
DEFAULT_BASE_URL = "https://www.alphavantage.co"
FUNCTION = "TIME_SERIES_DAILY_ADJUSTED"
SERIES_KEY = "Time Series (Daily)"
FIELDS = {
    "1. open": "open",
    "2. high": "high",
    "3. low": "low",
    "4. close": "close",
    "5. adjusted close": "adj_close",
    "6. volume": "volume",
}
# Rate limiting is answered with HTTP 200 and one of these fields instead of the series.
THROTTLE_FIELDS = ("Note", "Information")
# outputsize=compact returns the latest 100 data points; keep a margin for the vendor's publishing lag.
COMPACT_POINTS = 100
COMPACT_MARGIN = 5


def choose_outputsize(start: dt.date, today: dt.date) -> str:
    """ "compact" (latest 100 points) when `start` is within ~100 sessions of `today`, else "full".

    :param today: the New York calendar date now.
    """
    return "compact" if len(trading_days(start, today)) <= COMPACT_POINTS - COMPACT_MARGIN else "full"


def throttle_reason(resp: requests.Response) -> str | None:
    """Why a 200 answer is really "slow down" (it carries Note/Information instead of data), else None."""
    try:
        body = resp.json()
    except ValueError:
        return None  # not JSON: the caller reports it as malformed
    if isinstance(body, dict) and SERIES_KEY not in body:
        for key in THROTTLE_FIELDS:
            if key in body:
                return f"throttled: answer has field {key!r} instead of data: {str(body[key])[:160]}"
    return None


def parse_daily(body: Any, ticker: str, fetched_at: pd.Timestamp) -> tuple[pd.DataFrame, str | None]:
    """Rows of one TIME_SERIES_DAILY_ADJUSTED answer, or (no rows, reason) for an "Error Message" answer.

    :raises MarketDataError: naming the ticker, date and field when the answer is malformed.
    """
    ctx = f"ticker {ticker}"
    if isinstance(body, dict) and "Error Message" in body:
        return empty_ohlcv(), f"Alpha Vantage error: {body['Error Message']}"
    series = require(body, SERIES_KEY, SOURCE_NAME, ctx)
    if not isinstance(series, dict):
        raise MarketDataError(
            f"{SOURCE_NAME}: response for {ctx} has field {SERIES_KEY!r} that is not an object"
        )
    rows = []
    for day, values in series.items():
        where = f"{ctx} date {day}"
        try:
            row: dict[str, Any] = {"date": pd.Timestamp(day), "ticker": ticker}
        except ValueError:
            raise MarketDataError(
                f"{SOURCE_NAME}: response for {ctx} has key {day!r} that is not a date"
            ) from None
        for key, col in FIELDS.items():
            raw = require(values, key, SOURCE_NAME, where)
            try:
                row[col] = float(raw)
            except (TypeError, ValueError):
                raise MarketDataError(
                    f"{SOURCE_NAME}: {where} field {key!r} = {raw!r} is not a number"
                ) from None
        rows.append(row)
    if not rows:
        return empty_ohlcv(), "empty time series"
    return conform_ohlcv(pd.DataFrame(rows).assign(source=SOURCE_NAME, fetched_at=fetched_at)), None


class AlphaVantageDailySource:
    """Daily adjusted bars from Alpha Vantage, one ticker at a time.

    Throttle answers (HTTP 200 with Note/Information) are retried with backoff; an "Error Message"
    answer (unknown symbol) leaves the ticker in `last_missing`. After `breaker_threshold` tickers
    in a row fail for good (e.g. the daily quota is spent) the remaining tickers are skipped.

    :param api_key: Alpha Vantage key (sent as the documented `apikey` query parameter, never logged).
    :param base_url: API root; tests point it at a local server.
    :param max_retries: retries per ticker; backoff starts at base_delay (throttling lasts ~a minute).
    :param sleep: wait function (inject a recorder in tests); rand: jitter source in [0, 1).
    :param clock: current UTC time: picks compact vs full output and caps `end` at the last closed session.
    """

    name = SOURCE_NAME

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        max_retries: int = 4,
        base_delay: float = 4.0,
        max_delay: float = 60.0,
        timeout: float = 30.0,
        breaker_threshold: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], pd.Timestamp] = utc_now,
    ) -> None:
        if not api_key or not api_key.strip():
            raise SourceUnavailableError(f"{SOURCE_NAME}: no API key configured (set ALPHAVANTAGE_API_KEY)")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(max_retries, base_delay, max_delay, timeout)
        self.breaker_threshold = breaker_threshold
        self.sleep, self.rand, self.clock = sleep, rand, clock
        self.last_missing: list[str] = []
        self.last_errors: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AlphaVantageDailySource(base_url={self.base_url!r}, api_key=<hidden>)"

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars for `tickers` on the sessions in [start, end] that have closed (one request per ticker)."""
        now = self.clock()
        start, end = pd.Timestamp(start).date(), min(pd.Timestamp(end).date(), last_closed_session(now))
        requested = list(dict.fromkeys(tickers))
        self.last_missing, self.last_errors = [], {}
        if not requested or trading_days(start, end).empty:
            return empty_ohlcv()
        outputsize = choose_outputsize(start, now.tz_convert(NEW_YORK).date())
        client = HttpClient(SOURCE_NAME, self.policy, sleep=self.sleep, rand=self.rand)
        batch = fetch_isolated(
            requested,
            lambda t: self._daily_one(client, t, outputsize),
            max_workers=1,  # the vendor allows a handful of requests a minute: never in parallel
            breaker=CircuitBreaker(self.breaker_threshold),
        )
        self.last_errors = {**batch.misses, **batch.failures}
        self.last_missing = sorted(requested)
        out = assemble(SOURCE_NAME, batch, requested, start, end)
        self.last_missing = sorted(set(requested) - set(out["ticker"]))
        return out

    def _throttled(self, resp: requests.Response) -> str | None:
        reason = throttle_reason(resp)
        return reason.replace(self._api_key, "<key>") if reason else None  # the vendor text goes in errors

    def _daily_one(self, client: HttpClient, ticker: str, outputsize: str) -> tuple[pd.DataFrame, str | None]:
        params = {"function": FUNCTION, "symbol": ticker, "outputsize": outputsize, "apikey": self._api_key}
        ctx = f"ticker {ticker}"
        resp = client.get(f"{self.base_url}/query", params, context=ctx, retry_if=self._throttled)
        return parse_daily(decode_json(resp, SOURCE_NAME, ctx), ticker, self.clock())
