"""Polygon.io grouped daily bars (backup source): one request per session returns every US stock."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import (
    MarketDataError,
    SourceUnavailableError,
    conform_ohlcv,
    empty_ohlcv,
)
from magikarp_assets.core.market_data.http import (
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
from magikarp_assets.core.tickers import to_polygon

SOURCE_NAME = "polygon"
DEFAULT_BASE_URL = "https://api.polygon.io"
GROUPED_PATH = "/v2/aggs/grouped/locale/us/market/stocks/{date}"
# Polygon's bar keys -> ours. "adjusted=true" adjusts for splits only, so adj_close stays NaN.
BAR_FIELDS = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
OK_STATUSES = ("OK", "DELAYED")


def parse_grouped(
    body: Any, day: pd.Timestamp, wanted: Mapping[str, str], fetched_at: pd.Timestamp
) -> tuple[pd.DataFrame, str | None]:
    """Rows of one grouped-daily answer for the tickers in `wanted`, dated `day`.

    :param wanted: Polygon symbol (BRK.B) -> canonical ticker (BRK-B); other symbols are dropped.
    :return: (rows, None), or (no rows, reason) when Polygon has no bars for the session.
    :raises MarketDataError: naming the session, ticker and field when the answer is malformed.
    """
    ctx = f"session {day:%Y-%m-%d}"
    status = require(body, "status", SOURCE_NAME, ctx)
    if status not in OK_STATUSES:
        raise MarketDataError(f"{SOURCE_NAME}: grouped bars for {ctx} answered status {status!r}, not OK")
    results = body.get("results")
    if results is None and not body.get("resultsCount"):
        return empty_ohlcv(), "no bars for this session"
    results = require(body, "results", SOURCE_NAME, ctx)
    if not isinstance(results, list):
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} has field 'results' that is not a list")
    rows = []
    for i, bar in enumerate(results):
        ticker = wanted.get(require(bar, "T", SOURCE_NAME, f"{ctx} result #{i}"))
        if ticker is None:
            continue
        row: dict[str, Any] = {"ticker": ticker}
        for key, col in BAR_FIELDS.items():
            value = require(bar, key, SOURCE_NAME, f"{ctx} ticker {ticker}")
            if not isinstance(value, Real) or isinstance(value, bool):
                raise MarketDataError(
                    f"{SOURCE_NAME}: {ctx} ticker {ticker} field {key!r} = {value!r} is not a number"
                )
            row[col] = value
        rows.append(row)
    if not rows:
        return empty_ohlcv(), "none of the requested tickers in this session's bars"
    frame = pd.DataFrame(rows).assign(
        date=day, adj_close=float("nan"), source=SOURCE_NAME, fetched_at=fetched_at
    )
    return conform_ohlcv(frame), None


class PolygonGroupedDailySource:
    """Daily bars from Polygon's grouped-daily endpoint, filtered to the requested tickers.

    A session whose request fails for good is recorded in `last_errors` and skipped; tickers with no
    rows at all are in `last_missing`. A rejected key raises SourceUnavailableError at once.

    :param api_key: Polygon key (sent as the documented `apiKey` query parameter, never logged).
    :param base_url: API root; tests point it at a local server.
    :param max_retries: retries per session request (429, 5xx, timeouts); Retry-After is honoured.
    :param max_workers: sessions fetched concurrently (the free tier allows 5 requests a minute).
    :param breaker_threshold: consecutive failed sessions after which the rest are skipped.
    :param sleep: wait function (inject a recorder in tests); rand: jitter source in [0, 1).
    :param clock: current UTC time; sessions still trading (or just closed) are never requested.
    """

    name = SOURCE_NAME

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        max_retries: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 30.0,
        max_workers: int = 2,
        breaker_threshold: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], pd.Timestamp] = utc_now,
    ) -> None:
        if not api_key or not api_key.strip():
            raise SourceUnavailableError(f"{SOURCE_NAME}: no API key configured (set POLYGON_API_KEY)")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(max_retries, base_delay, max_delay, timeout)
        self.max_workers = max_workers
        self.breaker_threshold = breaker_threshold
        self.sleep, self.rand, self.clock = sleep, rand, clock
        self.last_missing: list[str] = []
        self.last_errors: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PolygonGroupedDailySource(base_url={self.base_url!r}, api_key=<hidden>)"

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars for `tickers` on the sessions in [start, end] that have closed (one request per session)."""
        start, end = (
            pd.Timestamp(start).date(),
            min(pd.Timestamp(end).date(), last_closed_session(self.clock())),
        )
        requested = list(dict.fromkeys(tickers))
        wanted = {to_polygon(t): t for t in requested}
        self.last_missing, self.last_errors = [], {}
        sessions = list(trading_days(start, end))
        if not requested or not sessions:
            return empty_ohlcv()
        client = HttpClient(SOURCE_NAME, self.policy, sleep=self.sleep, rand=self.rand)
        batch = fetch_isolated(
            sessions,
            lambda day: self._grouped_one(client, day, wanted),
            self.max_workers,
            CircuitBreaker(self.breaker_threshold),
        )
        for day, reason in {**batch.misses, **batch.failures}.items():
            self.last_errors[f"{day:%Y-%m-%d}"] = reason
        self.last_missing = sorted(requested)
        out = assemble(SOURCE_NAME, batch, requested, start, end)
        self.last_missing = sorted(set(requested) - set(out["ticker"]))
        return out

    def _grouped_one(
        self, client: HttpClient, day: pd.Timestamp, wanted: Mapping[str, str]
    ) -> tuple[pd.DataFrame, str | None]:
        ctx = f"session {day:%Y-%m-%d}"
        url = self.base_url + GROUPED_PATH.format(date=f"{day:%Y-%m-%d}")
        resp = client.get(url, {"adjusted": "true", "apiKey": self._api_key}, context=ctx)
        return parse_grouped(decode_json(resp, SOURCE_NAME, ctx), day, wanted, self.clock())
