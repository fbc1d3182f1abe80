"""Live market data clients against a local fake of each vendor: retries, parsing, isolation, no key leaks."""

from __future__ import annotations

import email.utils
import re
import traceback

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.market_data.alphavantage import AlphaVantageDailySource, choose_outputsize
from magikarp_assets.core.market_data.base import (
    OHLCV_COLUMNS,
    MarketDataError,
    MarketDataSource,
    SourceUnavailableError,
)
from magikarp_assets.core.market_data.fallback import fetch_with_fallback
from magikarp_assets.core.market_data.http import (
    HttpClient,
    RetryPolicy,
    TransportError,
    last_closed_session,
    retry_after_seconds,
)
from magikarp_assets.core.market_data.polygon import PolygonGroupedDailySource
from magikarp_assets.core.market_data.sample import SampleSource
from magikarp_assets.core.market_data.yahoo import YahooChartSource, frame_from_download, session_dates
from magikarp_tests.support.fake_market_api import (
    ALPHAVANTAGE_ERROR,
    ALPHAVANTAGE_INFORMATION,
    ALPHAVANTAGE_NOTE,
    FakeMarketAPI,
    FakeResponse,
    alphavantage_daily_json,
    polygon_grouped_json,
    refused_port,
    yahoo_chart_json,
    yahoo_chart_not_found,
)

SECRET = "sk-live-DO-NOT-LEAK-9f8e7d"
# The evening after the sample's last session: every session up to 2017-02-08 has closed.
NOW = pd.Timestamp("2017-02-08 23:00", tz="UTC")
START, END = pd.Timestamp("2017-01-03").date(), pd.Timestamp("2017-01-05").date()
FAST = {"base_delay": 0.01, "max_delay": 1.0, "timeout": 5.0}
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"


class SleepRecorder:
    """Injected in place of time.sleep: records each requested wait, waits for none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def api():
    with FakeMarketAPI() as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def real_bars(vendor: str, tickers: list[str], start: str, end: str) -> pd.DataFrame:
    """Real daily bars from the bundled sample, used as what the fake vendors serve."""
    return SampleSource(vendor).fetch_ohlcv(tickers, pd.Timestamp(start).date(), pd.Timestamp(end).date())


def client(api: FakeMarketAPI, sleeps: SleepRecorder, max_retries: int = 4, **kw: float) -> HttpClient:
    policy = RetryPolicy(max_retries=max_retries, **{**FAST, **kw})
    return HttpClient("testvendor", policy, sleep=sleeps, rand=lambda: 1.0)


def full_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# ---- shared HTTP client ---------------------------------------------------------------------------


def test_5xx_answers_are_retried_with_growing_backoff_then_succeed(api, sleeps):
    api.script("/data", *(FakeResponse(s) for s in (500, 502, 503, 504)), FakeResponse(json={"ok": 1}))
    resp = client(api, sleeps).get(f"{api.url}/data")
    assert resp.json() == {"ok": 1}
    assert len(api.requests_to("/data")) == 5
    assert sleeps.waits == [0.01, 0.02, 0.04, 0.08]  # cap doubles per retry (jitter pinned at its maximum)


def test_full_jitter_stays_below_the_doubling_cap_and_429_is_retried(api, sleeps):
    api.script("/data", FakeResponse(429), FakeResponse(503), FakeResponse(429), FakeResponse(json={}))
    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=1.0, timeout=5.0)
    HttpClient("testvendor", policy, sleep=sleeps).get(f"{api.url}/data")  # real random jitter
    assert len(api.requests_to("/data")) == 4
    assert len(sleeps.waits) == 3
    assert all(0 <= w <= 0.01 * 2**i for i, w in enumerate(sleeps.waits))


def test_retry_after_is_honoured_and_capped(api, sleeps):
    api.script("/polite", FakeResponse(429, headers={"Retry-After": "2"}), FakeResponse(json={}))
    api.script("/greedy", FakeResponse(503, headers={"Retry-After": "3600"}), FakeResponse(json={}))
    c = client(api, sleeps, max_delay=5.0)
    c.get(f"{api.url}/polite")
    c.get(f"{api.url}/greedy")
    assert sleeps.waits == [2.0, 5.0]
    http_date = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds(http_date, max_delay=60, now=1_000_000) == 10
    assert retry_after_seconds("soon", max_delay=60) is None


def test_exhausted_retries_name_source_path_status_but_never_the_key(api, sleeps):
    api.script("/v2/secret/path", FakeResponse(503))
    with pytest.raises(TransportError) as info:
        client(api, sleeps, max_retries=3).get(
            f"{api.url}/v2/secret/path", {"apiKey": SECRET}, context="session 2017-01-03"
        )
    msg = str(info.value)
    assert "testvendor" in msg and "/v2/secret/path" in msg and "status 503" in msg and "4 attempts" in msg
    assert "session 2017-01-03" in msg
    assert SECRET not in full_traceback(info.value) and "apiKey" not in msg
    assert len(api.requests_to("/v2/secret/path")) == 4


def test_refused_connections_are_retried_and_reported_without_the_key(sleeps):
    with refused_port() as port:
        c = HttpClient("testvendor", RetryPolicy(max_retries=2, **FAST), sleep=sleeps, rand=lambda: 1.0)
        with pytest.raises(TransportError) as info:
            c.get(f"http://127.0.0.1:{port}/query", {"apikey": SECRET})
    assert "ConnectionError" in str(info.value) and "/query" in str(info.value)
    assert SECRET not in full_traceback(info.value)  # requests' own message carries the full URL
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert sleeps.waits == [0.01, 0.02]


def test_timeouts_and_dropped_connections_are_retried(api, sleeps):
    api.script("/slow", FakeResponse(delay=1.0), FakeResponse(json={"ok": 1}))
    api.script("/flaky", FakeResponse(drop=True), FakeResponse(json={"ok": 2}))
    c = client(api, sleeps, timeout=0.2)
    assert c.get(f"{api.url}/slow").json() == {"ok": 1}
    assert c.get(f"{api.url}/flaky").json() == {"ok": 2}
    assert len(api.requests_to("/slow")) == 2 and len(api.requests_to("/flaky")) == 2


def test_unsendable_request_fails_at_once_without_the_key(sleeps):
    c = HttpClient("testvendor", RetryPolicy(max_retries=3, **FAST), sleep=sleeps)
    with pytest.raises(TransportError, match=r"could not be sent \(InvalidSchema\)") as info:
        c.get("htp://misconfigured.example/query", {"apikey": SECRET})
    assert SECRET not in full_traceback(info.value) and info.value.__context__ is None
    assert sleeps.waits == []


def test_rejected_key_is_not_retried(api, sleeps):
    api.script("/query", FakeResponse(401, json={"error": "bad key"}))
    with pytest.raises(SourceUnavailableError, match="status 401"):
        client(api, sleeps).get(f"{api.url}/query", {"apikey": SECRET})
    assert len(api.requests_to("/query")) == 1 and sleeps.waits == []


def test_last_closed_session_excludes_a_session_still_trading():
    assert str(last_closed_session(pd.Timestamp("2017-01-05 15:00", tz="America/New_York"))) == "2017-01-04"
    assert str(last_closed_session(pd.Timestamp("2017-01-05 17:00", tz="America/New_York"))) == "2017-01-05"
    assert str(last_closed_session(pd.Timestamp("2017-01-08 12:00", tz="UTC"))) == "2017-01-06"  # Sunday


# ---- Polygon ---------------------------------------------------------------------------------------


def polygon(api: FakeMarketAPI, sleeps: SleepRecorder, **kw) -> PolygonGroupedDailySource:
    opts = {**FAST, "max_retries": 3, "sleep": sleeps, "rand": lambda: 1.0, "clock": lambda: NOW, **kw}
    return PolygonGroupedDailySource(api_key=SECRET, base_url=api.url, **opts)


def test_polygon_grouped_bars_are_filtered_and_normalised(api, sleeps):
    market = real_bars("iex", ["AAPL", "BRK-B", "BF-B", "MSFT", "XOM"], "2017-01-03", "2017-01-06")
    for day, bars in market.groupby("date"):
        api.script(GROUPED.format(f"{day:%Y-%m-%d}"), FakeResponse(json=polygon_grouped_json(bars)))
    api.script(
        GROUPED.format("2017-01-04"),
        FakeResponse(429, headers={"Retry-After": "0.5"}),
        FakeResponse(json=polygon_grouped_json(market[market["date"] == "2017-01-04"])),
    )
    src = polygon(api, sleeps)
    assert isinstance(src, MarketDataSource)
    out = src.fetch_ohlcv(["BRK-B", "AAPL", "ZZZZ"], START, END)

    assert list(out.columns) == OHLCV_COLUMNS
    assert set(out["ticker"]) == {"AAPL", "BRK-B"} and len(out) == 6
    assert out["date"].max() == pd.Timestamp(END)  # 2017-01-06 is served but never asked for
    assert sorted(r.path for r in api.requests) == [
        GROUPED.format(d) for d in ("2017-01-03", "2017-01-04", "2017-01-04", "2017-01-05")
    ]
    assert api.requests[0].query == {"adjusted": "true", "apiKey": SECRET}
    assert sleeps.waits == [0.5]  # Retry-After honoured
    expected = market[market["ticker"].isin(["AAPL", "BRK-B"]) & (market["date"] <= pd.Timestamp(END))]
    got = out.set_index(["date", "ticker"])
    want = expected.set_index(["date", "ticker"])
    np.testing.assert_allclose(
        got[["open", "high", "low", "close", "volume"]],
        want.loc[got.index, ["open", "high", "low", "close", "volume"]],
    )
    assert out["adj_close"].isna().all()  # split-adjusted only: no dividend-adjusted close
    assert (out["source"] == "polygon").all() and (out["fetched_at"] == NOW).all()
    assert src.last_missing == ["ZZZZ"]


def test_polygon_outage_raises_source_unavailable_without_the_key_and_stops_early(api, sleeps):
    api.script(re.compile(r"/v2/aggs/grouped/.*"), FakeResponse(503))
    src = polygon(api, sleeps, max_retries=1, max_workers=1, breaker_threshold=2)
    with pytest.raises(SourceUnavailableError) as info:
        src.fetch_ohlcv(["AAPL"], pd.Timestamp("2017-01-03").date(), pd.Timestamp("2017-01-10").date())
    msg = str(info.value)
    assert (
        "polygon" in msg
        and "/v2/aggs/grouped/locale/us/market/stocks/2017-01-03" in msg
        and "status 503" in msg
    )
    assert SECRET not in full_traceback(info.value)
    assert len(api.requests) == 4  # 2 sessions x 2 attempts, then the breaker skips the other 4 sessions
    assert sum("skipped" in v for v in src.last_errors.values()) == 4


def test_polygon_malformed_bar_names_session_ticker_and_field(api, sleeps):
    body = polygon_grouped_json(real_bars("iex", ["AAPL", "BRK-B"], "2017-01-03", "2017-01-03"))
    for bar in body["results"]:
        if bar["T"] == "BRK.B":
            del bar["c"]
    api.script(GROUPED.format("2017-01-03"), FakeResponse(json=body))
    with pytest.raises(MarketDataError, match=r"polygon.*session 2017-01-03 ticker BRK-B.*'c'"):
        polygon(api, sleeps).fetch_ohlcv(["BRK-B"], START, START)
    api.script(GROUPED.format("2017-01-03"), FakeResponse(body="<html>gateway</html>"))
    with pytest.raises(MarketDataError, match=r"polygon.*session 2017-01-03.*not JSON"):
        polygon(api, sleeps).fetch_ohlcv(["BRK-B"], START, START)


def test_polygon_requires_a_key_and_never_shows_it():
    with pytest.raises(SourceUnavailableError, match="POLYGON_API_KEY"):
        PolygonGroupedDailySource(api_key="")
    assert SECRET not in repr(PolygonGroupedDailySource(api_key=SECRET))


# ---- Alpha Vantage --------------------------------------------------------------------------------


def alphavantage(api: FakeMarketAPI, sleeps: SleepRecorder, **kw) -> AlphaVantageDailySource:
    opts = {**FAST, "max_retries": 3, "sleep": sleeps, "rand": lambda: 1.0, "clock": lambda: NOW, **kw}
    return AlphaVantageDailySource(api_key=SECRET, base_url=api.url, **opts)


def test_alphavantage_throttle_is_retried_and_error_message_is_a_per_ticker_miss(api, sleeps):
    history = real_bars("yahoo", ["AAPL", "MSFT"], "2016-12-01", "2017-02-07")
    aapl = FakeResponse(json=alphavantage_daily_json("AAPL", history[history["ticker"] == "AAPL"]))
    msft = FakeResponse(json=alphavantage_daily_json("MSFT", history[history["ticker"] == "MSFT"]))
    api.script("/query", FakeResponse(json=ALPHAVANTAGE_NOTE), aapl, query={"symbol": "AAPL"})
    api.script("/query", FakeResponse(json=ALPHAVANTAGE_ERROR), query={"symbol": "ZZZZ"})
    api.script("/query", FakeResponse(json=ALPHAVANTAGE_INFORMATION), msft, query={"symbol": "MSFT"})
    src = alphavantage(api, sleeps)
    out = src.fetch_ohlcv(["AAPL", "ZZZZ", "MSFT"], START, END)

    assert (
        len(api.requests_to("/query", symbol="AAPL")) == 2
        and len(api.requests_to("/query", symbol="MSFT")) == 2
    )
    assert len(api.requests_to("/query", symbol="ZZZZ")) == 1  # a bad symbol is not retried
    assert sleeps.waits == [0.01, 0.01]  # one backoff per throttled ticker
    assert src.last_missing == ["ZZZZ"] and "Invalid API call" in src.last_errors["ZZZZ"]
    first = api.requests[0].query
    assert first == {
        "function": "TIME_SERIES_DAILY_ADJUSTED",
        "symbol": "AAPL",
        "outputsize": "compact",
        "apikey": SECRET,
    }
    assert list(out.columns) == OHLCV_COLUMNS and set(out["ticker"]) == {"AAPL", "MSFT"}
    assert out["date"].min() == pd.Timestamp(START) and out["date"].max() == pd.Timestamp(
        END
    )  # served to 02-07
    want = history.set_index(["date", "ticker"]).loc[out.set_index(["date", "ticker"]).index]
    np.testing.assert_allclose(out["adj_close"], want["adj_close"], rtol=1e-4)
    np.testing.assert_allclose(out["close"], want["close"], rtol=1e-4)
    assert (out["source"] == "alphavantage").all()


def test_alphavantage_output_size_follows_the_start_date():
    today = pd.Timestamp("2017-02-08").date()
    assert choose_outputsize(pd.Timestamp("2017-01-03").date(), today) == "compact"
    assert choose_outputsize(pd.Timestamp("2016-06-01").date(), today) == "full"


def test_alphavantage_persistent_throttle_fails_the_source_without_the_key(api, sleeps):
    # The vendor's text is kept for diagnosis (quota spent vs premium endpoint), with the key blanked.
    echoing = {"Information": f"API key {SECRET} has reached the 25 requests per day limit."}
    api.script("/query", FakeResponse(json=echoing))
    src = alphavantage(api, sleeps, max_retries=1, breaker_threshold=2)
    with pytest.raises(SourceUnavailableError) as info:
        src.fetch_ohlcv(["AAPL", "MSFT", "XOM", "IBM"], START, END)
    msg = str(info.value)
    assert (
        "throttled" in msg and "'Information'" in msg and "API key <key> has reached the 25 requests" in msg
    )
    assert SECRET not in full_traceback(info.value)
    assert "skipped" in src.last_errors["XOM"] and SECRET not in str(src.last_errors)
    assert len(api.requests) == 4  # AAPL and MSFT twice each; XOM and IBM skipped by the breaker


def test_alphavantage_malformed_values_name_ticker_date_and_field(api, sleeps):
    body = alphavantage_daily_json("AAPL", real_bars("yahoo", ["AAPL"], "2017-01-03", "2017-01-05"))
    body["Time Series (Daily)"]["2017-01-04"]["4. close"] = "n/a"
    api.script("/query", FakeResponse(json=body))
    with pytest.raises(MarketDataError, match=r"alphavantage: ticker AAPL date 2017-01-04 field '4. close'"):
        alphavantage(api, sleeps).fetch_ohlcv(["AAPL"], START, END)
    del body["Time Series (Daily)"]["2017-01-04"]["6. volume"]
    body["Time Series (Daily)"]["2017-01-04"]["4. close"] = "1.0"
    api.script("/query", FakeResponse(json=body))
    with pytest.raises(MarketDataError, match=r"ticker AAPL date 2017-01-04 has no field '6. volume'"):
        alphavantage(api, sleeps).fetch_ohlcv(["AAPL"], START, END)


# ---- Yahoo chart endpoint ---------------------------------------------------------------------------


def chart_path(symbol: str) -> str:
    return f"/v8/finance/chart/{symbol}"


def yahoo(api: FakeMarketAPI, sleeps: SleepRecorder, **kw) -> YahooChartSource:
    opts = {**FAST, "max_retries": 3, "sleep": sleeps, "rand": lambda: 1.0, "clock": lambda: NOW, **kw}
    return YahooChartSource(base_url=api.url, **opts)


def test_yahoo_chart_parse_and_unknown_symbol_isolated(api, sleeps):
    served = real_bars("yahoo", ["AAPL", "MSFT"], "2016-12-28", "2017-01-10")  # wider than asked
    for sym in ("AAPL", "MSFT"):
        api.script(chart_path(sym), FakeResponse(json=yahoo_chart_json(sym, served[served["ticker"] == sym])))
    api.script(chart_path("ZZZZ"), yahoo_chart_not_found())
    api.script(
        chart_path("MSFT"),
        FakeResponse(502),
        FakeResponse(json=yahoo_chart_json("MSFT", served[served["ticker"] == "MSFT"])),
    )
    src = yahoo(api, sleeps)
    out = src.fetch_ohlcv(["AAPL", "ZZZZ", "MSFT"], START, END)

    assert list(out.columns) == OHLCV_COLUMNS
    assert sorted(out["ticker"].unique()) == ["AAPL", "MSFT"] and len(out) == 6
    assert out["date"].min() == pd.Timestamp(START) and out["date"].max() == pd.Timestamp(END)
    want = served.set_index(["date", "ticker"]).loc[out.set_index(["date", "ticker"]).index]
    for col in ["open", "high", "low", "close", "adj_close", "volume"]:
        np.testing.assert_allclose(out[col], want[col], err_msg=col)
    assert src.last_missing == ["ZZZZ"] and "No data found" in src.last_errors["ZZZZ"]
    assert len(api.requests_to(chart_path("MSFT"))) == 2 and sleeps.waits == [0.01]
    q = api.requests_to(chart_path("AAPL"))[0].query
    assert q["interval"] == "1d" and q["events"] == "div,split"
    assert int(q["period1"]) == int(pd.Timestamp("2017-01-03", tz="America/New_York").timestamp())
    assert int(q["period2"]) == int(pd.Timestamp("2017-01-06", tz="America/New_York").timestamp())
    assert api.requests_to(chart_path("AAPL"))[0].headers["User-Agent"].startswith("Mozilla/5.0")


def test_yahoo_session_date_is_the_new_york_date():
    # 02:00 UTC on the 4th is 21:00 in New York on the 3rd (a late print still belongs to the 3rd).
    stamps = [int(pd.Timestamp("2017-01-04 02:00", tz="UTC").timestamp()), 1483540200]  # 2nd: 09:30 ET on 4th
    assert list(session_dates(stamps)) == [pd.Timestamp("2017-01-03"), pd.Timestamp("2017-01-04")]


def test_yahoo_never_returns_a_session_still_trading(api, sleeps):
    served = real_bars("yahoo", ["AAPL"], "2017-01-03", "2017-01-06")
    api.script(chart_path("AAPL"), FakeResponse(json=yahoo_chart_json("AAPL", served)))
    midday = pd.Timestamp("2017-01-05 12:00", tz="America/New_York").tz_convert("UTC")
    out = yahoo(api, sleeps, clock=lambda: midday).fetch_ohlcv(["AAPL"], START, END)
    assert out["date"].max() == pd.Timestamp("2017-01-04")


def test_yahoo_chart_malformed_answers_name_ticker_and_field(api, sleeps):
    body = yahoo_chart_json("AAPL", real_bars("yahoo", ["AAPL"], "2017-01-03", "2017-01-05"))
    del body["chart"]["result"][0]["indicators"]["quote"][0]["close"]
    api.script(chart_path("AAPL"), FakeResponse(json=body))
    with pytest.raises(MarketDataError, match=r"yfinance: response for ticker AAPL has no field 'close'"):
        yahoo(api, sleeps).fetch_ohlcv(["AAPL"], START, END)
    api.script(chart_path("AAPL"), FakeResponse(body="{not json"))
    with pytest.raises(
        MarketDataError, match=r"yfinance: GET /v8/finance/chart/AAPL \(ticker AAPL\).*not JSON"
    ):
        yahoo(api, sleeps).fetch_ohlcv(["AAPL"], START, END)


def test_yahoo_chart_outage_is_source_unavailable_and_stops_early(api, sleeps):
    api.script(re.compile(r"/v8/finance/chart/.*"), FakeResponse(503))
    src = yahoo(api, sleeps, max_retries=1, max_workers=1, breaker_threshold=2)
    tickers = ["AAPL", "MSFT", "XOM", "IBM", "GE", "KO"]
    with pytest.raises(
        SourceUnavailableError,
        match=r"yfinance: no rows for AAPL, MSFT, XOM, IBM, GE, KO between 2017-01-03 and 2017-01-05",
    ):
        src.fetch_ohlcv(tickers, START, END)
    assert len(api.requests) == 4


# ---- yfinance library path ----------------------------------------------------------------------


@pytest.fixture
def restore_yfinance_session():
    yield
    from yfinance._http import new_session
    from yfinance.data import YfData

    YfData(session=new_session())  # do not leave the dead proxy in yfinance's process-wide singleton


def offline_yahoo(port: int, sleeps: SleepRecorder, **kw) -> YahooChartSource:
    # A proxy port that refuses connections: yfinance gets no answer and, as when the machine is
    # offline, logs the failures and returns an empty frame instead of raising.
    opts = {"max_retries": 1, "base_delay": 0.01, "timeout": 2.0, "sleep": sleeps, "rand": lambda: 1.0}
    return YahooChartSource(proxy=f"http://127.0.0.1:{port}", clock=lambda: NOW, **{**opts, **kw})


def test_yfinance_offline_fails_fast_on_the_canary_naming_tickers_and_dates(sleeps, restore_yfinance_session):
    tickers = ["AAPL", "MSFT", "XOM"]
    with refused_port() as port:
        src = offline_yahoo(port, sleeps)
        with pytest.raises(SourceUnavailableError) as info:
            src.fetch_ohlcv(tickers, START, END)
    msg = str(info.value)
    assert msg.startswith("yfinance: no data for AAPL, MSFT, XOM between 2017-01-03 and 2017-01-05")
    assert "canary SPY in 2 attempts" in msg and "empty frame" in msg
    assert sleeps.waits == [0.01]  # two canary attempts and no chunk download: no long waits anywhere
    assert src.last_missing == sorted(tickers)


def test_yfinance_offline_without_canary_isolates_chunks_and_stops_early(sleeps, restore_yfinance_session):
    with refused_port() as port:
        src = offline_yahoo(port, sleeps, canary=None, chunk_size=2, max_workers=1, breaker_threshold=2)
        with pytest.raises(SourceUnavailableError) as info:
            src.fetch_ohlcv(["AAPL", "MSFT", "XOM", "IBM", "GE"], START, END)
    msg = str(info.value)
    assert "AAPL, MSFT, XOM, IBM, GE between 2017-01-03 and 2017-01-05" in msg and "empty frame" in msg
    # Chunks (AAPL, MSFT) and (XOM, IBM) fail with one retry each, then the breaker skips (GE,).
    assert sleeps.waits == [0.01, 0.01]
    assert "skipped" in src.last_errors["GE"] and "empty frame" in src.last_errors["AAPL, MSFT"]
    assert src.last_missing == ["AAPL", "GE", "IBM", "MSFT", "XOM"]


def test_frame_from_download_reads_yfinance_layout_and_isolates_empty_tickers():
    # Built the way yfinance 1.7's multi.download assembles its answer: per-ticker frames reindexed to
    # the union of dates, concatenated with keys under column names (Ticker, Price).
    bars = real_bars("yahoo", ["AAPL"], "2017-01-03", "2017-01-06").set_index("date")
    aapl = pd.DataFrame(
        {
            "Adj Close": bars["adj_close"],
            "Close": bars["close"],
            "High": bars["high"],
            "Low": bars["low"],
            "Open": bars["open"],
            "Volume": bars["volume"],
        }
    ).rename_axis("Date")
    gone = pd.DataFrame(np.nan, index=aapl.index, columns=aapl.columns)  # a delisted ticker: all NaN
    raw = pd.concat({"AAPL": aapl, "GONE": gone}, axis=1, names=["Ticker", "Price"])
    out = frame_from_download(raw, ["AAPL", "GONE"], START, END, NOW)
    assert list(out.columns) == OHLCV_COLUMNS
    assert list(out["ticker"].unique()) == ["AAPL"] and len(out) == 3  # 2017-01-06 is after `end`
    np.testing.assert_allclose(out["adj_close"], bars["adj_close"].iloc[:3])
    assert (out["source"] == "yfinance").all()
    with pytest.raises(MarketDataError, match=r"no field\(s\) \['Adj Close'\]"):
        frame_from_download(raw.drop(columns="Adj Close", level=1), ["AAPL"], START, END, NOW)


# ---- the sources in the fallback chain ------------------------------------------------------------


def test_yahoo_outage_is_filled_by_polygon_in_the_fallback_chain(api, sleeps):
    api.script(re.compile(r"/v8/finance/chart/.*"), FakeResponse(503))
    market = real_bars("iex", ["AAPL", "BRK-B"], "2017-01-03", "2017-01-05")
    for day, bars in market.groupby("date"):
        api.script(GROUPED.format(f"{day:%Y-%m-%d}"), FakeResponse(json=polygon_grouped_json(bars)))
    chain = [yahoo(api, sleeps, max_retries=1, max_workers=1), polygon(api, sleeps)]
    rows, report = fetch_with_fallback(chain, ["AAPL", "BRK-B"], START, END)
    assert report.rows_by_source == {"polygon": 6} and report.missing == []
    assert "yfinance" in report.errors and "status 503" in report.errors["yfinance"]
    assert set(rows["source"]) == {"polygon"} and set(rows["ticker"]) == {"AAPL", "BRK-B"}
