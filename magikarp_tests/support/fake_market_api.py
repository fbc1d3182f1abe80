"""A scriptable local HTTP server that answers like the market data vendors, for offline and fault tests.

Usage::

    with FakeMarketAPI() as api:
        path = "/v2/aggs/grouped/locale/us/market/stocks/2017-01-03"
        api.script(path, FakeResponse(429, headers={"Retry-After": "1"}),
                   FakeResponse(json=polygon_grouped_json(bars)))
        source = PolygonGroupedDailySource(api_key="k", base_url=api.url)
        ...
        assert len(api.requests_to(path)) == 2

A scripted route answers its responses in order and repeats the last one forever. A response may be a
callable taking the RecordedRequest (for answers computed from the query). Unscripted paths answer 404.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from magikarp_assets.core.tickers import to_polygon

NEW_YORK = "America/New_York"


@dataclass
class FakeResponse:
    """One canned answer.

    :param status: HTTP status code.
    :param json: body serialised as JSON (ignored when `body` is given).
    :param body: raw body (e.g. malformed JSON, HTML).
    :param headers: extra headers (e.g. Retry-After; a Content-Type here replaces application/json).
    :param delay: seconds to wait before answering (provokes client read timeouts).
    :param drop: close the connection without answering (provokes connection errors).
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received: path without query, query as a dict, headers, monotonic arrival time."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


Answer = FakeResponse | Callable[[RecordedRequest], FakeResponse]


@dataclass
class _Route:
    path: str | re.Pattern[str]
    query: dict[str, str]
    answers: list[Answer]
    served: int = 0

    def matches(self, req: RecordedRequest) -> bool:
        path_ok = (
            self.path.fullmatch(req.path) if isinstance(self.path, re.Pattern) else self.path == req.path
        )
        return bool(path_ok) and all(req.query.get(k) == v for k, v in self.query.items())

    def next_answer(self) -> Answer:
        answer = self.answers[min(self.served, len(self.answers) - 1)]
        self.served += 1
        return answer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind a socket, read its port, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection (bound, never listening) while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class FakeMarketAPI:
    """Threaded HTTP server on 127.0.0.1 with per-path scripted answers and a log of every request."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeMarketAPI is not running: use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeMarketAPI:
        handler = _make_handler(self)
        for _ in range(20):  # the port found free may be taken by someone else before we bind it
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("FakeMarketAPI could not bind a free port on 127.0.0.1 after 20 tries")
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="fake-market-api", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        if self._server is not None:
            self._server.serve_forever(poll_interval=0.02)  # short poll: stop() returns promptly

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeMarketAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(
        self, path: str | re.Pattern[str], *answers: Answer, query: dict[str, str] | None = None
    ) -> None:
        """Answer requests to `path` (exact, or a regex matched in full) with `answers`, last one repeated.

        :param query: only requests whose query string has these values match (e.g. {"symbol": "AAPL"}).
            Routes are tried in the order they were scripted; re-scripting the same path and query
            replaces the old answers.
        """
        if not answers:
            raise ValueError(f"script({path!r}) needs at least one answer")
        wanted = dict(query or {})
        with self._lock:
            self._routes = [r for r in self._routes if not (r.path == path and r.query == wanted)]
            self._routes.append(_Route(path, wanted, list(answers)))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, **query: str) -> list[RecordedRequest]:
        """Requests received on `path` whose query has the given values."""
        return [
            r for r in self.requests if r.path == path and all(r.query.get(k) == v for k, v in query.items())
        ]

    def _answer(self, req: RecordedRequest) -> FakeResponse:
        with self._lock:
            self._requests.append(req)
            route = next((r for r in self._routes if r.matches(req)), None)
            answer = route.next_answer() if route else None
        if answer is None:
            return FakeResponse(404, json={"error": f"fake server: no route for {req.path}"})
        return answer(req) if callable(answer) else answer


def _make_handler(api: FakeMarketAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            req = RecordedRequest(
                method="GET",
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers=dict(self.headers.items()),
                at=time.monotonic(),
            )
            resp = api._answer(req)
            if resp.delay:
                time.sleep(resp.delay)
            if resp.drop:
                self.close_connection = True
                return
            body = resp.body if resp.body is not None else json.dumps(resp.json).encode()
            payload = body.encode() if isinstance(body, str) else body
            try:
                self.send_response(resp.status)
                if "Content-Type" not in resp.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in resp.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


# ---- canned bodies in each vendor's documented JSON format, built from OHLCV frames ----------------


def _at_new_york(dates: pd.Series, hour: int, minute: int = 0) -> pd.Series:
    local = pd.to_datetime(dates) + pd.Timedelta(hours=hour, minutes=minute)
    return local.dt.tz_localize(NEW_YORK).dt.tz_convert("UTC")


def _num(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def yahoo_chart_json(symbol: str, bars: pd.DataFrame) -> dict[str, Any]:
    """Yahoo v8 chart answer for one symbol: bars stamped at the 09:30 New York open, like Yahoo does."""
    bars = bars.sort_values("date")
    stamps = (_at_new_york(bars["date"], 9, 30).astype("int64") // 10**9).tolist()
    quote = {col: [_num(v) for v in bars[col]] for col in ["open", "high", "low", "close", "volume"]}
    adj = bars["adj_close"] if "adj_close" in bars else bars["close"]
    return {
        "chart": {
            "result": [
                {
                    "meta": {
                        "currency": "USD",
                        "symbol": symbol,
                        "exchangeTimezoneName": NEW_YORK,
                        "dataGranularity": "1d",
                    },
                    "timestamp": stamps,
                    "indicators": {"quote": [quote], "adjclose": [{"adjclose": [_num(v) for v in adj]}]},
                }
            ],
            "error": None,
        }
    }


def yahoo_chart_not_found() -> FakeResponse:
    """What Yahoo answers for an unknown or delisted symbol."""
    error = {"code": "Not Found", "description": "No data found, symbol may be delisted"}
    return FakeResponse(404, json={"chart": {"result": None, "error": error}})


def polygon_grouped_json(bars: pd.DataFrame) -> dict[str, Any]:
    """Polygon grouped daily answer for ONE session: every row of `bars` (all the same date)."""
    stamps = (_at_new_york(bars["date"], 16).astype("int64") // 10**6).tolist()
    results = [
        {
            "T": to_polygon(row.ticker),
            "o": row.open,
            "h": row.high,
            "l": row.low,
            "c": row.close,
            "v": row.volume,
            "vw": round((row.high + row.low + row.close) / 3, 4),
            "t": stamp,
            "n": 1000,
        }
        for row, stamp in zip(bars.itertuples(index=False), stamps, strict=True)
    ]
    return {
        "queryCount": len(results),
        "resultsCount": len(results),
        "adjusted": True,
        "results": results,
        "status": "OK",
        "request_id": "fake-request",
    }


def alphavantage_daily_json(symbol: str, bars: pd.DataFrame) -> dict[str, Any]:
    """Alpha Vantage TIME_SERIES_DAILY_ADJUSTED answer: newest date first, every value a string."""
    series = {}
    for row in bars.sort_values("date", ascending=False).itertuples(index=False):
        adj = row.adj_close if "adj_close" in bars and not pd.isna(row.adj_close) else row.close
        series[pd.Timestamp(row.date).strftime("%Y-%m-%d")] = {
            "1. open": f"{row.open:.4f}",
            "2. high": f"{row.high:.4f}",
            "3. low": f"{row.low:.4f}",
            "4. close": f"{row.close:.4f}",
            "5. adjusted close": f"{adj:.4f}",
            "6. volume": str(int(row.volume)),
            "7. dividend amount": "0.0000",
            "8. split coefficient": "1.0",
        }
    meta = {
        "1. Information": "Daily Time Series with Splits and Dividend Events",
        "2. Symbol": symbol,
        "3. Last Refreshed": next(iter(series), ""),
        "4. Output Size": "Compact",
        "5. Time Zone": "US/Eastern",
    }
    return {"Meta Data": meta, "Time Series (Daily)": series}


ALPHAVANTAGE_NOTE = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute "
    "and 500 calls per day."
}
ALPHAVANTAGE_INFORMATION = {
    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."
}
ALPHAVANTAGE_ERROR = {
    "Error Message": "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/"
    "documentation/) for TIME_SERIES_DAILY_ADJUSTED."
}


def _yahoo_fmt(value: float) -> str:
    return f"{value / 1e9:.2f}B" if abs(value) >= 1e9 else f"{value:.2f}"


def yahoo_fundamentals_json(
    symbol: str, series: dict[str, dict[str, float | None]], currency: str = "USD"
) -> dict[str, Any]:
    """Yahoo fundamentals-timeseries answer: one result per type (e.g. "quarterlyTotalRevenue"), its values
    keyed by asOfDate "YYYY-MM-DD". None is a quarter Yahoo pads with null; a type without values gets only
    its meta, which is also what Yahoo answers for every type of an unknown symbol."""
    results: list[dict[str, Any]] = []
    for yahoo_type, values in series.items():
        item: dict[str, Any] = {"meta": {"symbol": [symbol], "type": [yahoo_type]}}
        if values:
            dates = sorted(values)
            item["timestamp"] = [int(pd.Timestamp(d, tz="UTC").timestamp()) for d in dates]
            item[yahoo_type] = [
                None
                if values[d] is None
                else {
                    "dataId": 20000 + i,
                    "asOfDate": d,
                    "periodType": "3M",
                    "currencyCode": currency,
                    "reportedValue": {"raw": values[d], "fmt": _yahoo_fmt(float(values[d]))},
                }
                for i, d in enumerate(dates)
            ]
        results.append(item)
    return {"timeseries": {"result": results, "error": None}}
