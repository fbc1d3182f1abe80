"""Plumbing shared by the live vendors: polite retrying HTTP, key-safe errors, failure isolation per item."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import pandas as pd
import requests

from magikarp_assets.core.calendar import is_trading_day, nyse, previous_trading_day
from magikarp_assets.core.market_data.base import (
    MarketDataError,
    SourceUnavailableError,
    conform_ohlcv,
    describe_tickers,
    empty_ohlcv,
)

log = logging.getLogger(__name__)

# Transport failures worth another attempt; everything else from requests is a programming error.
RETRYABLE_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
AUTH_STATUSES = (401, 403)
NEW_YORK = "America/New_York"
# Vendors finalise a session's bar a little after the close (closing auction prints, corrections).
SETTLE_AFTER_CLOSE = pd.Timedelta(minutes=30)

Item = TypeVar("Item", bound=Hashable)


class TransportError(MarketDataError):
    """A request failed for good (retries exhausted or a non-retryable status): the item is missing,
    but the data that did arrive is fine. Malformed answers raise plain MarketDataError instead."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: `max_retries` retries after the first attempt, delays in seconds.

    :param max_retries: retries after the first attempt (0 = a single attempt).
    :param base_delay: cap of the first backoff; the cap doubles on every retry (full jitter below it).
    :param max_delay: ceiling for any single wait, including a server's Retry-After.
    :param timeout: seconds to wait for the server to connect and to answer.
    """

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 30.0

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Full-jitter delay before retry number `retry` (0-based): uniform in [0, min(max, base * 2**retry)].

        :param retry: 0 for the wait after the first failed attempt.
        :param rand: uniform [0, 1) generator (inject a constant for deterministic tests).
        """
        return min(self.max_delay, self.base_delay * 2**retry) * rand()


def retry_after_seconds(value: str | None, max_delay: float, now: float | None = None) -> float | None:
    """The wait a Retry-After header asks for (delta-seconds or HTTP date), capped at `max_delay`.

    :param value: the header value, or None when absent.
    :param now: current epoch seconds (for HTTP-date values); defaults to the wall clock.
    :return: seconds to wait, or None when the header is absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), max_delay)


def url_path(url: str) -> str:
    """The path of a URL without query string or host: safe to log (keys live in query strings)."""
    return urlsplit(url).path or "/"


class HttpClient:
    """GETs against one vendor with retries on 429, 5xx, timeouts and dropped connections.

    :param source: vendor name used in every error message (e.g. "polygon").
    :param policy: retry counts, delays and timeout.
    :param headers: extra headers sent with every request (e.g. a User-Agent).
    :param sleep: called with each wait in seconds (inject a recorder in tests).
    :param rand: uniform [0, 1) generator for the jitter.
    """

    def __init__(
        self,
        source: str,
        policy: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.source = source
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.rand = rand
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        context: str = "",
        accept: tuple[int, ...] = (200,),
        retry_if: Callable[[requests.Response], str | None] | None = None,
    ) -> requests.Response:
        """GET `url`, retrying transient failures; return the first response with an accepted status.

        :param params: query parameters (may hold an API key: never logged, never in errors).
        :param context: what is being fetched, for messages (e.g. "ticker AAPL", "session 2024-01-02").
        :param accept: statuses handed back to the caller (e.g. 404 when its body names the problem).
        :param retry_if: given an accepted response, returns a reason to retry it (throttle answered
            with HTTP 200) or None to accept it.
        :raises SourceUnavailableError: on 401/403 (credentials or access rejected).
        :raises TransportError: on any other unaccepted status, or when retries run out; the message
            names the source, the URL path (never the query string) and the last status or error.
        """
        path = url_path(url)
        what = f"{self.source}: GET {path}" + (f" ({context})" if context else "")
        last = "no attempt"
        attempts = self.policy.max_retries + 1
        for attempt in range(attempts):
            wait: float | None = None
            unsendable = ""
            try:
                resp = self.session.get(url, params=params, timeout=self.policy.timeout)
            except RETRYABLE_EXCEPTIONS as exc:
                # str(exc) carries the full URL with its query string: keep only the type.
                last = f"error {type(exc).__name__}"
            except requests.exceptions.RequestException as exc:  # bad URL or schema: retrying won't help
                unsendable = type(exc).__name__
            else:
                status = resp.status_code
                if status in accept:
                    reason = retry_if(resp) if retry_if else None
                    if reason is None:
                        return resp
                    last = f"status {status} ({reason})"
                elif status == 429 or status >= 500:
                    last = f"status {status} ({resp.reason})"
                    wait = retry_after_seconds(resp.headers.get("Retry-After"), self.policy.max_delay)
                elif status in AUTH_STATUSES:
                    raise SourceUnavailableError(
                        f"{what} was refused with status {status}: credentials or access rejected"
                    )
                else:
                    raise TransportError(
                        f"{what} answered status {status} ({resp.reason}), which is not retryable"
                    )
            if unsendable:  # raised outside the except block so no exception holding the URL is chained
                raise TransportError(f"{what} could not be sent ({unsendable}): check the base URL")
            if attempt + 1 < attempts:
                if wait is None:
                    wait = self.policy.backoff(attempt, self.rand)
                log.warning("%s: %s; retry %d/%d in %.2fs", what, last, attempt + 1, attempts - 1, wait)
                self.sleep(wait)
        raise TransportError(f"{what} failed after {attempts} attempts; last {last}")


def decode_json(resp: requests.Response, source: str, context: str) -> Any:
    """The JSON body of a response, or MarketDataError naming the source, what was fetched and the path.

    :param context: what was fetched (e.g. "ticker AAPL").
    """
    try:
        return resp.json()
    except (json.JSONDecodeError, ValueError):
        path = url_path(resp.url)
        raise MarketDataError(
            f"{source}: GET {path} ({context}) answered status {resp.status_code} with a body that is not "
            "JSON"
        ) from None


def require(mapping: Any, key: str, source: str, context: str) -> Any:
    """`mapping[key]`, or MarketDataError naming the source, what was fetched and the missing field.

    :param mapping: a decoded JSON object (anything else is also reported as malformed).
    """
    if not isinstance(mapping, dict) or key not in mapping:
        raise MarketDataError(
            f"{source}: response for {context} has no field {key!r} (malformed or changed format)"
        )
    return mapping[key]


def http_get_bytes(url: str, source: str, max_retries: int = 4, policy: RetryPolicy | None = None) -> bytes:
    """The body of one file download (e.g. a holdings CSV), with the standard retries.

    :param source: vendor name for error messages.
    :param max_retries: retries after the first attempt (ignored when `policy` is given).
    """
    client = HttpClient(source, policy or RetryPolicy(max_retries=max_retries))
    return client.get(url, context="download").content


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def last_closed_session(now: pd.Timestamp) -> dt.date:
    """The latest NYSE session whose bar is final at `now` (closed at least SETTLE_AFTER_CLOSE ago).

    Live vendors serve a partial bar for a session still trading; capping requests here keeps it out.

    :param now: a tz-aware timestamp.
    """
    today = now.tz_convert(NEW_YORK).tz_localize(None).normalize()
    if is_trading_day(today) and now >= nyse().session_close(today) + SETTLE_AFTER_CLOSE:
        return today.date()
    return previous_trading_day(today).date()


class CircuitBreaker:
    """Opens after `threshold` consecutive failed items: the vendor is down, so stop asking it.

    :param threshold: consecutive failures that open the breaker (0 disables it).
    """

    def __init__(self, threshold: int = 3) -> None:
        self.threshold = threshold
        self._streak = 0
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        with self._lock:
            self._streak = 0 if ok else self._streak + 1

    @property
    def open(self) -> bool:
        with self._lock:
            return self.threshold > 0 and self._streak >= self.threshold


@dataclass
class BatchResult(Generic[Item]):
    """Per-item outcome of a batch: rows delivered, items the vendor has no data for, items that failed."""

    frames: list[pd.DataFrame] = field(default_factory=list)
    misses: dict[Item, str] = field(default_factory=dict)
    failures: dict[Item, str] = field(default_factory=dict)


def fetch_isolated(
    items: Sequence[Item],
    fetch_one: Callable[[Item], tuple[pd.DataFrame, str | None]],
    max_workers: int = 1,
    breaker: CircuitBreaker | None = None,
) -> BatchResult[Item]:
    """Run `fetch_one` for every item so that one item's failure does not sink the others.

    :param fetch_one: returns (rows, None) on success or (empty rows, reason) when the vendor says it
        has no such item; raises TransportError when the request failed for good. Any other exception
        (malformed answers, auth failures) propagates and aborts the batch.
    :param max_workers: concurrent requests.
    :param breaker: once open, the remaining items are skipped and recorded as failures.
    """
    breaker = breaker or CircuitBreaker()
    result: BatchResult[Item] = BatchResult()

    def run(item: Item) -> tuple[pd.DataFrame | None, str | None, str | None]:
        if breaker.open:
            return None, None, f"skipped: {breaker.threshold} consecutive failures before it"
        try:
            frame, miss = fetch_one(item)
        except TransportError as exc:
            breaker.record(ok=False)
            return None, None, str(exc)
        breaker.record(ok=True)
        return frame, miss, None

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        for item, (frame, miss, failure) in zip(items, pool.map(run, items), strict=True):
            if failure is not None:
                result.failures[item] = failure
            elif miss is not None:
                result.misses[item] = miss
            if frame is not None and not frame.empty:
                result.frames.append(frame)
    return result


def assemble(
    source: str, batch: BatchResult[Any], tickers: Sequence[str], start: dt.date, end: dt.date
) -> pd.DataFrame:
    """One conformed frame with only sessions in [start, end]; SourceUnavailableError if nothing arrived
    and requests failed (an outage, as opposed to a vendor with no data for these tickers).

    :param tickers: what was asked for, named in the error.
    """
    if not batch.frames:
        if batch.failures:
            first = next(iter(batch.failures.values()))
            raise SourceUnavailableError(
                f"{source}: no rows for {describe_tickers(list(tickers))} between {start} and {end}: "
                f"{len(batch.failures)} request(s) failed, first: {first}"
            )
        return empty_ohlcv()
    out = conform_ohlcv(pd.concat(batch.frames, ignore_index=True))
    keep = (out["date"] >= pd.Timestamp(start)) & (out["date"] <= pd.Timestamp(end))
    return out[keep].reset_index(drop=True)
