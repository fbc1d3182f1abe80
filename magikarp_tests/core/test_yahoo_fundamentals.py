"""Yahoo quarterly fundamentals against a local fake of its time-series endpoint: pivot, lag, isolation."""

from __future__ import annotations

import copy
import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.features.fundamentals import fundamentals_from_annual_file
from magikarp_assets.core.market_data.base import FUNDAMENTAL_COLUMNS, MarketDataError, SourceUnavailableError
from magikarp_assets.core.market_data.sample import sample_annual_fundamentals
from magikarp_assets.core.market_data.yahoo_fundamentals import (
    YahooFundamentalsSource,
    fetch_quarterly_fundamentals,
)
from magikarp_tests.support.fake_market_api import FakeMarketAPI, FakeResponse, yahoo_fundamentals_json

NOW = pd.Timestamp("2017-02-08 23:00", tz="UTC")
START = dt.date(2015, 10, 1)
FAST = {"base_delay": 0.01, "max_delay": 1.0, "timeout": 5.0}
# Spelled out (not imported from the module) so a wrong mapping in the module fails the tests.
REQUESTED_TYPES = [
    "quarterlyTotalRevenue",
    "quarterlyNetIncome",
    "quarterlyDilutedEPS",
    "quarterlyDilutedAverageShares",
    "quarterlyStockholdersEquity",
    "quarterlyTotalLiabilitiesNetMinorityInterest",
    "quarterlyLongTermDebt",
]
Q = ["2015-12-26", "2016-03-26", "2016-06-25", "2016-09-24", "2016-12-31"]
# Apple's fiscal 2016 quarters and the first of fiscal 2017 as reported in its 10-Qs and 10-K (USD).
# Balance-sheet values only at the fiscal year end (the 10-K, also in the bundled annual file); the
# other quarters are padded with null or absent, as Yahoo does for periods it lacks.
AAPL = {
    "quarterlyTotalRevenue": dict(zip(Q, [75.872e9, 50.557e9, 42.358e9, 46.852e9, 78.351e9], strict=True)),
    "quarterlyNetIncome": dict(zip(Q, [18.361e9, 10.516e9, 7.796e9, 9.014e9, 17.891e9], strict=True)),
    "quarterlyDilutedEPS": dict(zip(Q, [3.28, 1.90, 1.42, 1.67, 3.36], strict=True)),
    "quarterlyBasicEPS": dict(zip(Q, [3.30, 1.91, 1.43, 1.68, 3.38], strict=True)),  # not asked for
    "quarterlyDilutedAverageShares": dict(
        zip(Q, [5_594_127_000, 5_540_886_000, 5_500_281_000, 5_393_333_000, 5_327_995_000], strict=True)
    ),
    "quarterlyStockholdersEquity": {Q[0]: None, Q[3]: 128.249e9},
    "quarterlyTotalLiabilitiesNetMinorityInterest": {Q[3]: 193.437e9},
    "quarterlyLongTermDebt": {Q[3]: 75.427e9},
}
# Microsoft's quarters to 2016-09-30 and 2016-12-31, as first reported (USD).
MSFT = {
    "quarterlyTotalRevenue": {"2016-09-30": 20.453e9, "2016-12-31": 24.090e9},
    "quarterlyNetIncome": {"2016-09-30": 4.690e9, "2016-12-31": 6.267e9},
    "quarterlyDilutedEPS": {"2016-09-30": 0.60, "2016-12-31": 0.80},
}
UNKNOWN = {t: {} for t in REQUESTED_TYPES}  # Yahoo's answer for an unknown symbol: every type, meta only


def ts_path(symbol: str) -> str:
    return f"/ws/fundamentals-timeseries/v1/finance/timeseries/{symbol}"


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


def source(api: FakeMarketAPI, sleeps: SleepRecorder, **kw) -> YahooFundamentalsSource:
    opts = {**FAST, "max_retries": 3, "sleep": sleeps, "rand": lambda: 1.0, "clock": lambda: NOW, **kw}
    return YahooFundamentalsSource(base_url=api.url, **opts)


def serve(api: FakeMarketAPI, symbol: str, series: dict, **kw: str) -> None:
    api.script(ts_path(symbol), FakeResponse(json=yahoo_fundamentals_json(symbol, series, **kw)))


def test_pivot_one_row_per_quarter_with_estimated_public_date(api, sleeps):
    serve(api, "AAPL", AAPL)
    out = source(api, sleeps).fetch(["AAPL"], start=START)

    assert list(out.columns) == FUNDAMENTAL_COLUMNS
    assert list(out["period_ending"]) == [pd.Timestamp(d) for d in Q]
    assert out["period_ending"].dtype == "datetime64[ns]" and out["public_date"].dtype == "datetime64[ns]"
    for col in ["revenue", "net_income", "eps", "shares_outstanding"]:
        assert out[col].dtype == np.float64
    np.testing.assert_array_equal(out["revenue"], list(AAPL["quarterlyTotalRevenue"].values()))
    np.testing.assert_array_equal(out["net_income"], list(AAPL["quarterlyNetIncome"].values()))
    np.testing.assert_array_equal(out["eps"], [3.28, 1.90, 1.42, 1.67, 3.36])  # diluted, not basic
    np.testing.assert_array_equal(
        out["shares_outstanding"], list(AAPL["quarterlyDilutedAverageShares"].values())
    )
    # Missing quarters (null-padded or absent) stay NaN; the fiscal year end has the balance sheet.
    for col, value in [
        ("total_equity", 128.249e9),
        ("total_liabilities", 193.437e9),
        ("long_term_debt", 75.427e9),
    ]:
        assert out[col].isna().tolist() == [True, True, True, False, True] and out[col].iloc[3] == value
    # Yahoo gives no filing date: public 45 days after the quarter end (Apple filed the 10-Q for the
    # quarter to 2016-12-31 on 2017-02-01, so the estimate is later than the truth, never earlier).
    assert (out["public_date"] - out["period_ending"] == pd.Timedelta(days=45)).all()
    assert out["public_date"].iloc[-1] == pd.Timestamp("2017-02-14")
    assert out["public_date_estimated"].all() and (out["source"] == "yahoo").all()
    assert (out["ticker"] == "AAPL").all()

    (req,) = api.requests_to(ts_path("AAPL"))
    assert req.query["symbol"] == "AAPL" and req.query["type"].split(",") == REQUESTED_TYPES
    assert int(req.query["period1"]) == int(pd.Timestamp("2015-10-01", tz="UTC").timestamp())
    assert int(req.query["period2"]) == int(pd.Timestamp("2017-02-09", tz="UTC").timestamp())
    assert req.headers["User-Agent"].startswith("Mozilla/5.0")


def test_quarters_add_up_to_the_annual_report_in_the_bundled_sample(api, sleeps):
    serve(api, "AAPL", AAPL)
    quarters = source(api, sleeps).fetch(["AAPL"], start=START).set_index("period_ending")
    annual = fundamentals_from_annual_file(sample_annual_fundamentals()).set_index(
        ["ticker", "period_ending"]
    )
    fy2016 = annual.loc[("AAPL", pd.Timestamp("2016-09-24"))]
    fiscal_year = quarters.loc["2015-12-26":"2016-09-24"]
    assert len(fiscal_year) == 4
    np.testing.assert_allclose(fiscal_year["revenue"].sum(), fy2016["revenue"])
    np.testing.assert_allclose(fiscal_year["net_income"].sum(), fy2016["net_income"])
    for col in ["total_equity", "total_liabilities", "long_term_debt"]:
        assert quarters.loc["2016-09-24", col] == fy2016[col]
    # The quarter is public earlier than the annual file's 10-K estimate (45 vs 90 days).
    assert quarters.loc["2016-09-24", "public_date"] < fy2016["public_date"]


def test_unknown_symbols_are_isolated_and_a_5xx_is_retried(api, sleeps):
    serve(api, "AAPL", AAPL)
    serve(api, "ZZZZ", UNKNOWN)
    api.script(
        ts_path("NOPE"),
        FakeResponse(404, body="<html>Not Found</html>", headers={"Content-Type": "text/html"}),
    )
    api.script(ts_path("MSFT"), FakeResponse(503), FakeResponse(json=yahoo_fundamentals_json("MSFT", MSFT)))
    error = {"code": "Bad Request", "description": "Invalid symbol"}
    api.script(ts_path("YYYY"), FakeResponse(json={"timeseries": {"result": None, "error": error}}))
    src = source(api, sleeps)
    out = src.fetch(["AAPL", "ZZZZ", "MSFT", "NOPE", "YYYY", "AAPL"], start=START)

    assert list(out.columns) == FUNDAMENTAL_COLUMNS
    assert out.groupby("ticker").size().to_dict() == {"AAPL": 5, "MSFT": 2}
    msft = out[out["ticker"] == "MSFT"]
    np.testing.assert_array_equal(msft["revenue"], [20.453e9, 24.090e9])
    assert msft[["shares_outstanding", "total_equity", "long_term_debt"]].isna().all().all()
    assert src.last_missing == ["NOPE", "YYYY", "ZZZZ"]
    # Misses, not failed requests: they do not count towards the circuit breaker.
    assert src.last_errors == {
        "ZZZZ": "Yahoo has no quarterly values for this symbol",
        "NOPE": "Yahoo answered 404 (unknown symbol)",
        "YYYY": "Yahoo timeseries error: Invalid symbol",
    }
    assert len(api.requests_to(ts_path("MSFT"))) == 2 and sleeps.waits == [0.01]
    assert len(api.requests_to(ts_path("AAPL"))) == 1  # a repeated ticker is asked once
    assert len(api.requests_to(ts_path("ZZZZ"))) == 1  # an unknown symbol is not retried


def test_total_outage_is_source_unavailable_naming_tickers_and_stops_early(api, sleeps):
    api.script(re.compile(r"/ws/fundamentals-timeseries/.*"), FakeResponse(503))
    src = source(api, sleeps, max_retries=1, max_workers=1, breaker_threshold=2)
    with pytest.raises(
        SourceUnavailableError, match=r"yahoo: no quarterly fundamentals for AAPL, MSFT, XOM, IBM"
    ) as info:
        src.fetch(["AAPL", "MSFT", "XOM", "IBM"], start=START)
    assert "2 request(s) failed, 2 skipped" in str(info.value) and "status 503" in str(info.value)
    assert len(api.requests) == 4  # AAPL and MSFT twice each, then the breaker skips XOM and IBM
    assert "skipped" in src.last_errors["IBM"] and src.last_missing == ["AAPL", "IBM", "MSFT", "XOM"]


def test_every_ticker_empty_is_source_unavailable(api, sleeps):
    api.script(
        re.compile(r"/ws/fundamentals-timeseries/.*"),
        FakeResponse(json=yahoo_fundamentals_json("X", UNKNOWN)),
    )
    with pytest.raises(
        SourceUnavailableError, match=r"for ZZZZ, YYYY: 0 request\(s\) failed, 0 skipped after them, 2 ticker"
    ):
        source(api, sleeps).fetch(["ZZZZ", "YYYY"], start=START)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda r: r[1]["quarterlyNetIncome"][2]["reportedValue"].pop("raw"),
            r"yahoo: response for ticker AAPL type quarterlyNetIncome has no field 'raw'",
        ),
        (
            lambda r: r[0]["quarterlyTotalRevenue"][1]["reportedValue"].update(raw="n/a"),
            r"ticker AAPL type quarterlyTotalRevenue on 2016-03-26 field 'reportedValue.raw' holds 'n/a'",
        ),
        (
            lambda r: r[2]["quarterlyDilutedEPS"][0].update(asOfDate="Q1 2016"),
            r"ticker AAPL type quarterlyDilutedEPS field 'asOfDate' holds 'Q1 2016', not a date",
        ),
        (lambda r: r[3]["meta"].pop("type"), r"yahoo: response for ticker AAPL has no field 'type'"),
        (
            lambda r: r[0]["quarterlyTotalRevenue"][2].update(asOfDate="2016-03-26"),
            r"ticker AAPL type quarterlyTotalRevenue gives two values for 2016-03-26",
        ),
    ],
    ids=["no-raw", "raw-not-number", "bad-date", "no-type", "conflicting-duplicate"],
)
def test_malformed_answer_names_ticker_and_field(api, sleeps, corrupt, message):
    body = copy.deepcopy(yahoo_fundamentals_json("AAPL", AAPL))
    corrupt(body["timeseries"]["result"])
    api.script(ts_path("AAPL"), FakeResponse(json=body))
    serve(api, "MSFT", MSFT)
    with pytest.raises(MarketDataError, match=message):
        source(api, sleeps).fetch(["MSFT", "AAPL"], start=START)


def test_body_that_is_not_json_names_ticker_and_path(api, sleeps):
    api.script(ts_path("AAPL"), FakeResponse(body="{not json"))
    with pytest.raises(
        MarketDataError, match=r"yahoo: GET /ws/fundamentals-timeseries/.*/AAPL \(ticker AAPL\).*not JSON"
    ):
        source(api, sleeps).fetch(["AAPL"], start=START)


def test_values_in_another_currency_are_left_nan(api, sleeps):
    body = yahoo_fundamentals_json("AAPL", AAPL)
    body["timeseries"]["result"][1]["quarterlyNetIncome"][4]["currencyCode"] = "EUR"
    api.script(ts_path("AAPL"), FakeResponse(json=body))
    serve(api, "TSM", MSFT, currency="TWD")
    src = source(api, sleeps)
    out = src.fetch(["AAPL", "TSM"], start=START)
    assert out["net_income"].isna().tolist() == [False, False, False, False, True]
    assert out["revenue"].iloc[4] == 78.351e9
    assert src.last_missing == ["TSM"] and "currencies other than USD" in src.last_errors["TSM"]


def test_fetch_quarterly_fundamentals_entry_point(api, sleeps):
    serve(api, "AAPL", AAPL)
    out = fetch_quarterly_fundamentals(["AAPL"], max_retries=0, base_url=api.url, clock=lambda: NOW)
    assert list(out.columns) == FUNDAMENTAL_COLUMNS and len(out) == 5
    period1 = int(api.requests_to(ts_path("AAPL"))[0].query["period1"])
    assert period1 == int(pd.Timestamp("2015-02-08", tz="UTC").timestamp())  # default: two years back
    empty = fetch_quarterly_fundamentals([], base_url=api.url)
    assert list(empty.columns) == FUNDAMENTAL_COLUMNS and empty.empty
