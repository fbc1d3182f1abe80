import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.ingestion import build_day_tables, expected_pairs
from magikarp_assets.core.market_data.base import MarketDataError, SourceUnavailableError, conform_ohlcv
from magikarp_assets.core.market_data.fallback import fetch_with_fallback
from magikarp_assets.core.market_data.sample import SampleSource, _load_vendor
from magikarp_assets.core.quality import split_quarantine, validate_raw_ohlcv

# The 22 rows of the real primary file that break `low <= open, close <= high` or have NaN prices
# (listed in the data README): each must be quarantined with its ticker, date and rule.
KNOWN_BAD = {
    ("LNT", "2016-05-19"): "low_above_open_or_close",
    ("CHD", "2014-05-19"): "low_above_open_or_close",
    ("SPG", "2014-05-28"): "low_above_open_or_close",
    ("UA", "2016-04-07"): "price_missing_or_infinite",
    ("FTV", "2016-07-01"): "price_missing_or_infinite",
}


@pytest.fixture(scope="module")
def whole_primary_file():
    raw = _load_vendor("iex")
    return conform_ohlcv(raw.assign(source="sample:iex", fetched_at=pd.Timestamp("2017-02-08", tz="UTC")))


def test_real_sample_bad_rows_are_quarantined_with_rule(whole_primary_file):
    clean, quarantined = split_quarantine(whole_primary_file)
    assert len(quarantined) == 22
    assert len(clean) + len(quarantined) == len(whole_primary_file)
    found = {(r.ticker, r.date.strftime("%Y-%m-%d")): r.rule for r in quarantined.itertuples()}
    for key, rule in KNOWN_BAD.items():
        assert found[key] == rule
    assert set(quarantined["ticker"]) == {
        "AOS",
        "BBY",
        "CHD",
        "CHK",
        "DHR",
        "ES",
        "FTV",
        "IP",
        "LNT",
        "O",
        "REGN",
        "SPG",
        "UA",
        "VRTX",
        "WRK",
    }
    assert quarantined["detail"].str.contains("LNT 2016-05-19 broke low_above_open_or_close").any()
    validate_raw_ohlcv(clean.assign(suspect_return=False))  # what is left passes the schema


def _row(**kw):
    base = dict(
        date="2016-06-15",
        ticker="AAA",
        open=10.0,
        high=11.0,
        low=9.0,
        close=10.5,
        adj_close=np.nan,
        volume=1000.0,
        source="t",
        fetched_at=pd.Timestamp("2016-06-15 22:00", tz="UTC"),
    )
    return {**base, **kw}


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (_row(close=np.inf), "price_missing_or_infinite"),
        (_row(close=-1.0, low=-2.0), "price_not_positive"),
        (_row(volume=-5.0), "volume_missing_or_negative"),
        (_row(high=10.2), "high_below_open_or_close"),
        (_row(ticker="BAD$"), "invalid_ticker"),
    ],
)
def test_each_hard_rule_names_itself(row, rule):
    clean, quarantined = split_quarantine(conform_ohlcv(pd.DataFrame([_row(ticker="OK"), row])))
    assert list(clean["ticker"]) == ["OK"]
    assert quarantined["rule"].tolist() == [rule]


def test_duplicates_identical_kept_once_conflicting_quarantined():
    rows = [_row(), _row(), _row(ticker="BBB"), _row(ticker="BBB", close=10.6)]
    clean, quarantined = split_quarantine(conform_ohlcv(pd.DataFrame(rows)))
    assert clean["ticker"].tolist() == ["AAA"]
    assert sorted(quarantined["rule"]) == ["conflicting_duplicate", "conflicting_duplicate", "duplicate_row"]


class _FailingSource:
    name = "down"

    def fetch_ohlcv(self, tickers, start, end):
        raise MarketDataError("down: connection refused for /v8/finance/chart")


def test_fallback_fills_missing_days_from_backup_and_records_source():
    # DHR, O and ES have no rows in the primary file from 2015-03-09 to 2015-03-20; Yahoo has them.
    tickers = ["AAPL", "DHR", "O", "ES"]
    rows, report = fetch_with_fallback(
        [_FailingSource(), SampleSource("iex"), SampleSource("yahoo")], tickers, "2015-03-09", "2015-03-20"
    )
    assert report.missing == []
    assert "down" in report.errors
    by_source = rows.groupby("ticker")["source"].agg(set)
    assert by_source["AAPL"] == {"sample:iex"}
    assert by_source["DHR"] == {"sample:yahoo"} and by_source["ES"] == {"sample:yahoo"}
    assert report.rows_by_source == {"sample:iex": 10, "sample:yahoo": 30}


def test_quarantined_primary_rows_are_requested_from_the_backup():
    rows, report = fetch_with_fallback(
        [SampleSource("iex"), SampleSource("yahoo")],
        ["LNT", "AAPL"],
        "2016-05-19",
        "2016-05-19",
        screen=split_quarantine,
    )
    q = pd.concat(report.quarantined)
    assert q[["ticker", "rule", "source"]].values.tolist() == [
        ["LNT", "low_above_open_or_close", "sample:iex"]
    ]
    lnt = rows.set_index("ticker").loc["LNT"]
    assert lnt["source"] == "sample:yahoo" and 30 < lnt["close"] < 40


def test_total_outage_is_a_clear_error_naming_tickers_and_dates():
    with pytest.raises(SourceUnavailableError, match=r"AAPL, MSFT between 2016-06-15 and 2016-06-15.*down"):
        fetch_with_fallback([_FailingSource()], ["AAPL", "MSFT"], "2016-06-15", "2016-06-15")


def test_day_tables_flag_suspect_gaps_and_measure_coverage():
    # EBAY's PayPal spin-off: -57% on 2015-07-20 in the unadjusted primary file.
    universe = pd.DataFrame(
        {
            "ticker": ["EBAY", "AAPL", "FTV"],
            "listed_from": pd.to_datetime(["2013-02-08"] * 2 + ["2016-07-01"]),
        }
    )
    days = trading_days("2015-07-20", "2015-07-20")
    expected = expected_pairs(universe, days)
    assert len(expected) == 2  # FTV was not listed yet
    fetched, report = fetch_with_fallback([SampleSource("iex")], ["EBAY", "AAPL"], "2015-07-17", "2015-07-20")
    clean, quarantine, coverage = build_day_tables(fetched, report, expected, days)
    assert clean["date"].unique().tolist() == [pd.Timestamp("2015-07-20")]
    assert clean.set_index("ticker")["suspect_return"].to_dict() == {"AAPL": False, "EBAY": True}
    assert coverage[0].ratio == 1.0 and quarantine.empty
