"""Yahoo Finance daily bars, the production price source: via the yfinance library or Yahoo's chart API."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import (
    MarketDataError,
    SourceUnavailableError,
    conform_ohlcv,
    describe_tickers,
    empty_ohlcv,
)
from magikarp_assets.core.market_data.http import (
    NEW_YORK,
    BatchResult,
    CircuitBreaker,
    HttpClient,
    RetryPolicy,
    TransportError,
    assemble,
    decode_json,
    fetch_isolated,
    last_closed_session,
    require,
    utc_now,
)

SOURCE_NAME = "yfinance"
# Yahoo rejects requests without a browser-like User-Agent (429 or 403).
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)
# yfinance's price columns (group_by="ticker", auto_adjust=False) -> ours.
YF_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}
QUOTE_FIELDS = ["open", "high", "low", "close", "volume"]
# What yfinance answers when Yahoo is unreachable: it logs the failures and returns an empty frame.
EMPTY_ANSWER = "an empty frame (what yfinance returns when Yahoo is unreachable or blocks this client)"


def session_dates(epoch_seconds: Sequence[int]) -> pd.DatetimeIndex:
    """Exchange timestamps -> the New York calendar date of the session (tz-naive midnight).

    :param epoch_seconds: Unix seconds as Yahoo stamps its daily bars (the 09:30 open).
    """
    stamps = pd.to_datetime(np.asarray(epoch_seconds, dtype="int64"), unit="s", utc=True)
    return stamps.tz_convert(NEW_YORK).tz_localize(None).normalize()


def frame_from_download(
    raw: pd.DataFrame | None,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    fetched_at: pd.Timestamp,
) -> pd.DataFrame:
    """Turn yfinance.download(group_by="ticker", auto_adjust=False) output into OHLCV rows in [start, end].

    A ticker whose rows are all empty (yfinance pads every ticker to the union of dates) yields no rows.

    :param raw: the download result: columns (Ticker, Price), one row per date.
    :param tickers: the canonical tickers asked for (yfinance upper-cases them).
    :raises MarketDataError: when the frame lacks a price column or has an unexpected shape.
    """
    if raw is None or raw.empty:
        return empty_ohlcv()
    what = f"{SOURCE_NAME}: download of {describe_tickers(list(tickers))}"
    if not isinstance(raw.columns, pd.MultiIndex) or raw.columns.nlevels != 2:
        raise MarketDataError(
            f"{what} returned columns {list(raw.columns)[:6]} instead of (Ticker, Price) pairs"
        )
    missing = sorted(set(YF_COLUMNS) - set(raw.columns.get_level_values(1)))
    if missing:
        raise MarketDataError(f"{what} has no field(s) {missing} (expected {sorted(YF_COLUMNS)})")
    long = raw.stack(level=0, future_stack=True)[list(YF_COLUMNS)].rename(columns=YF_COLUMNS)
    long.index = long.index.set_names(["date", "ticker"])
    long = long.reset_index()
    if isinstance(long["date"].dtype, pd.DatetimeTZDtype):
        long["date"] = long["date"].dt.tz_convert(NEW_YORK).dt.tz_localize(None)
    by_symbol = {t.upper(): t for t in tickers}
    long["ticker"] = long["ticker"].map(by_symbol)
    long = long.dropna(subset=["ticker", "close"])
    long = long[
        (long["date"] >= pd.Timestamp(start)) & (long["date"] < pd.Timestamp(end) + pd.Timedelta(days=1))
    ]
    return conform_ohlcv(long.assign(source=SOURCE_NAME, fetched_at=fetched_at))


def _float_column(values: Any, field: str, what: str) -> np.ndarray:
    try:
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise MarketDataError(f"{what}: field {field!r} holds a value that is not a number") from None


def parse_chart(body: Any, ticker: str, fetched_at: pd.Timestamp) -> tuple[pd.DataFrame, str | None]:
    """Rows of one Yahoo v8 chart answer, or (no rows, reason) when Yahoo reports the symbol unknown.

    :param body: the decoded JSON.
    :param ticker: the canonical ticker that was requested (rows are labelled with it).
    :raises MarketDataError: naming the ticker and the field when the answer is malformed.
    """
    ctx = f"ticker {ticker}"
    chart = require(body, "chart", SOURCE_NAME, ctx)
    error = chart.get("error") if isinstance(chart, dict) else None
    if error:
        detail = (error.get("description") or error.get("code")) if isinstance(error, dict) else error
        return empty_ohlcv(), f"Yahoo chart error: {detail}"
    results = require(chart, "result", SOURCE_NAME, ctx)
    if not isinstance(results, list) or not results:
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} has no entry in field 'chart.result'")
    result = results[0]
    if isinstance(result, dict) and "timestamp" not in result:
        return empty_ohlcv(), "no bars in the requested range"  # Yahoo omits the arrays when empty
    stamps = require(result, "timestamp", SOURCE_NAME, ctx)
    indicators = require(result, "indicators", SOURCE_NAME, ctx)
    quotes = require(indicators, "quote", SOURCE_NAME, ctx)
    if not isinstance(quotes, list) or not quotes:
        raise MarketDataError(f"{SOURCE_NAME}: response for {ctx} has no entry in field 'indicators.quote'")
    what = f"{SOURCE_NAME}: response for {ctx}"
    cols = {f: _float_column(require(quotes[0], f, SOURCE_NAME, ctx), f, what) for f in QUOTE_FIELDS}
    adj_blocks = indicators.get("adjclose") or [{}]
    adj = adj_blocks[0].get("adjclose") if isinstance(adj_blocks[0], dict) else None
    cols["adj_close"] = _float_column([None] * len(stamps) if adj is None else adj, "adjclose", what)
    for field, values in cols.items():
        if len(values) != len(stamps):
            raise MarketDataError(
                f"{what}: field {field!r} has {len(values)} values for {len(stamps)} timestamps"
            )
    frame = pd.DataFrame({"date": session_dates(stamps), "ticker": ticker, **cols})
    # Yahoo may repeat the latest session (live quote + daily bar): keep its last version.
    frame = frame.dropna(subset=["close"]).drop_duplicates("date", keep="last")
    return conform_ohlcv(frame.assign(source=SOURCE_NAME, fetched_at=fetched_at)), None


def _yfinance_session(proxy: str | None) -> Any:
    # yfinance 1.7 (pinned) builds its curl_cffi session here; one session shared by all chunks keeps
    # its cookie/crumb singleton stable across threads.
    from yfinance._http import new_session

    session = new_session()
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    return session


class YahooChartSource:
    """Daily bars from Yahoo: the yfinance library, or Yahoo's v8 chart endpoint when `base_url` is set.

    Per-ticker isolation: a ticker Yahoo has no bars for is left out and listed in `last_missing`
    (reasons in `last_errors`). If nothing at all arrives (yfinance answers an empty frame when Yahoo
    is unreachable) fetch_ohlcv raises SourceUnavailableError naming the tickers and dates.

    :param base_url: chart API root (e.g. "https://query2.finance.yahoo.com"); None = yfinance library.
    :param chunk_size: tickers per yfinance.download call.
    :param max_retries: retries per request (chart) or per chunk (library); backoff is full jitter
        between 0 and base_delay * 2**retry, capped at max_delay.
    :param max_workers: chunks (library) or tickers (chart) fetched concurrently.
    :param proxy: HTTP(S) proxy for the yfinance library path.
    :param canary: library path: a ticker that always trades, fetched first to tell "Yahoo unreachable"
        (fail fast) from "no rows for these tickers" (a miss); None skips the probe.
    :param breaker_threshold: consecutive failed requests/chunks after which the rest are skipped.
    :param sleep: wait function (inject a recorder in tests); rand: jitter source in [0, 1).
    :param clock: current UTC time; sessions still trading (or just closed) are never requested.
    """

    name = SOURCE_NAME

    def __init__(
        self,
        base_url: str | None = None,
        chunk_size: int = 200,
        max_retries: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 30.0,
        max_workers: int = 4,
        proxy: str | None = None,
        canary: str | None = "SPY",
        breaker_threshold: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], pd.Timestamp] = utc_now,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.base_url = base_url.rstrip("/") if base_url else None
        self.chunk_size = chunk_size
        self.policy = RetryPolicy(max_retries, base_delay, max_delay, timeout)
        self.max_workers = max_workers
        self.proxy = proxy
        self.canary = canary
        self.breaker_threshold = breaker_threshold
        self.sleep, self.rand, self.clock = sleep, rand, clock
        self.last_missing: list[str] = []
        self.last_errors: dict[str, str] = {}

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars for `tickers` on the sessions in [start, end] that have closed; see the class docstring."""
        start, end = (
            pd.Timestamp(start).date(),
            min(pd.Timestamp(end).date(), last_closed_session(self.clock())),
        )
        wanted = list(dict.fromkeys(tickers))
        self.last_missing, self.last_errors = [], {}
        if not wanted or trading_days(start, end).empty:
            return empty_ohlcv()
        self.last_missing = sorted(wanted)  # until rows arrive
        breaker = CircuitBreaker(self.breaker_threshold)
        batch: BatchResult[Any]
        if self.base_url:
            client = HttpClient(SOURCE_NAME, self.policy, {"User-Agent": USER_AGENT}, self.sleep, self.rand)
            batch = fetch_isolated(
                wanted, lambda t: self._chart_one(client, t, start, end), self.max_workers, breaker
            )
        else:
            session = _yfinance_session(self.proxy)
            if self.canary:
                self._require_reachable(self.canary, wanted, start, end, session)
            chunks = [tuple(wanted[i : i + self.chunk_size]) for i in range(0, len(wanted), self.chunk_size)]
            batch = fetch_isolated(
                chunks, lambda c: self._download_chunk(c, start, end, session), self.max_workers, breaker
            )
        for key, reason in {**batch.misses, **batch.failures}.items():
            self.last_errors[key if isinstance(key, str) else describe_tickers(key)] = reason
        out = assemble(SOURCE_NAME, batch, wanted, start, end)
        self.last_missing = sorted(set(wanted) - set(out["ticker"]))
        return out

    def _chart_one(
        self, client: HttpClient, ticker: str, start: dt.date, end: dt.date
    ) -> tuple[pd.DataFrame, str | None]:
        day = pd.Timedelta(days=1)
        period1 = pd.Timestamp(start).tz_localize(NEW_YORK)
        period2 = (pd.Timestamp(end) + day).tz_localize(NEW_YORK)
        params = {
            "period1": str(int(period1.timestamp())),
            "period2": str(int(period2.timestamp())),
            "interval": "1d",
            "events": "div,split",
        }
        url = f"{self.base_url}/v8/finance/chart/{quote(ticker, safe='')}"
        resp = client.get(url, params, context=f"ticker {ticker}", accept=(200, 404))
        return parse_chart(decode_json(resp, SOURCE_NAME, f"ticker {ticker}"), ticker, self.clock())

    def _download(self, symbols: Sequence[str], start: dt.date, end: dt.date, session: Any) -> pd.DataFrame:
        """One yfinance.download call as OHLCV rows (exceptions from yfinance propagate)."""
        import yfinance as yf

        raw = yf.download(
            list(symbols),
            start=start.isoformat(),
            end=(end + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
            group_by="ticker",
            auto_adjust=False,
            actions=False,
            threads=True,
            progress=False,
            timeout=self.policy.timeout,
            session=session,
        )
        return frame_from_download(raw, symbols, start, end, self.clock())

    def _attempt(
        self, symbols: Sequence[str], start: dt.date, end: dt.date, session: Any
    ) -> tuple[pd.DataFrame, str]:
        """(rows, "") or (no rows, what went wrong); only malformed frames raise."""
        try:
            frame = self._download(symbols, start, end, session)
        except MarketDataError:
            raise
        except Exception as exc:  # yfinance raises many types (curl, JSON, its own): all transient here
            return empty_ohlcv(), f"{type(exc).__name__}: {exc}"
        return frame, "" if not frame.empty else EMPTY_ANSWER

    def _require_reachable(
        self, canary: str, wanted: Sequence[str], start: dt.date, end: dt.date, session: Any
    ) -> None:
        """Ask for the canary (a ticker that always trades) first: if even it has no rows, Yahoo is
        unreachable. One small request fails in well under a second; an offline 200-ticker download
        took ~50 s."""
        attempts = self.policy.max_retries + 1
        for attempt in range(attempts):
            frame, last = self._attempt([canary], start, end, session)
            if not frame.empty:
                return
            if attempt + 1 < attempts:
                self.sleep(self.policy.backoff(attempt, self.rand))
        raise SourceUnavailableError(
            f"{SOURCE_NAME}: no data for {describe_tickers(list(wanted))} between {start} and {end}: Yahoo "
            f"returned no rows even for the canary {canary} in {attempts} attempts; last answer: {last}"
        )

    def _download_chunk(
        self, chunk: tuple[str, ...], start: dt.date, end: dt.date, session: Any
    ) -> tuple[pd.DataFrame, str | None]:
        attempts = self.policy.max_retries + 1
        for attempt in range(attempts):
            frame, last = self._attempt(chunk, start, end, session)
            if not frame.empty:
                return frame, None
            if (
                last == EMPTY_ANSWER
                and self.canary
                and not self._attempt([self.canary], start, end, session)[0].empty
            ):
                return frame, "Yahoo has no rows for any ticker of this chunk (the canary answered)"
            if attempt + 1 < attempts:
                self.sleep(self.policy.backoff(attempt, self.rand))
        raise TransportError(
            f"{SOURCE_NAME}: download of {describe_tickers(list(chunk))} for {start}..{end} gave no rows "
            f"in {attempts} attempts; last answer: {last}"
        )
