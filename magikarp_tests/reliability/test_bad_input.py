"""Bad input is refused with a clear error or quarantined with its rule, never a crash deep in numpy and
never NaN in the tensor: odd tickers, broken prices, duplicates, zero volume, the real sample's unadjusted
splits and spin-offs, empty or oversized universes, holiday and future partitions, malformed holdings."""

import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.errors import DagsterUnknownPartitionError

from magikarp_assets.core.calendar import NotATradingDayError, ensure_trading_day, trading_days
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.features.tensor import pack_day
from magikarp_assets.core.ingestion import build_day_tables, expected_pairs
from magikarp_assets.core.market_data.base import conform_ohlcv
from magikarp_assets.core.market_data.fallback import fetch_with_fallback
from magikarp_assets.core.market_data.sample import SampleSource
from magikarp_assets.core.quality import split_quarantine
from magikarp_assets.core.slots import InvalidUniverseError, SlotMap, UniverseTooLargeError, update_slot_map
from magikarp_assets.core.spec import MAX_ACTIVE, SLOT_ACTIVE, SLOT_ARCHIVE
from magikarp_assets.core.sql_models import run_model
from magikarp_assets.core.tickers import InvalidTickerError, normalize_ticker
from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_tests.reliability.helpers import step_errors
from magikarp_tests.support.fake_market_api import FakeMarketAPI, FakeResponse

DAY = pd.Timestamp("2016-06-15")
FETCHED_AT = pd.Timestamp("2016-06-16", tz="UTC")
# The real sample's unadjusted splits and spin-offs (close-to-close moves beyond 25 % in the IEX file).
CORPORATE_ACTIONS = {
    ("DISCA", "2014-08-07"): "2-for-1 split (class C dividend), unadjusted",
    ("DISCK", "2014-08-07"): "2-for-1 split (class C dividend), unadjusted",
    ("A", "2014-11-03"): "Keysight spin-off",
    ("BAX", "2015-07-01"): "Baxalta spin-off",
    ("NI", "2015-07-02"): "Columbia Pipeline spin-off",
    ("EBAY", "2015-07-20"): "PayPal spin-off",
    ("ARNC", "2016-11-01"): "Alcoa Corp separation",
    ("YUM", "2016-11-01"): "Yum China spin-off",
    ("CAG", "2016-11-10"): "Lamb Weston spin-off",
}


class FrameSource:
    """A vendor answering a fixed frame (what a misbehaving API would have sent, already parsed)."""

    def __init__(self, name: str, frame: pd.DataFrame) -> None:
        self.name, self.frame = name, frame

    def fetch_ohlcv(self, tickers, start, end) -> pd.DataFrame:
        keep = self.frame["ticker"].isin(tickers)
        keep &= (self.frame["date"] >= pd.Timestamp(start)) & (self.frame["date"] <= pd.Timestamp(end))
        return conform_ohlcv(self.frame[keep])


def bar(ticker: str, close: float = 100.0, **fields) -> dict:
    row = {"date": DAY, "ticker": ticker, "open": close, "high": close * 1.01, "low": close * 0.99}
    row.update(close=close, adj_close=np.nan, volume=1e6, source="bad", fetched_at=FETCHED_AT)
    return {**row, **fields}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("brk.b", "BRK-B"), ("BRK/B", "BRK-B"), (" brk b ", "BRK-B"), ("BRKB", "BRK-B"), ("^gspc", "^GSPC")],
)
def test_ticker_spellings_are_normalised(raw: str, canonical: str) -> None:
    assert normalize_ticker(raw) == canonical


@pytest.mark.parametrize("raw", ["AAPL$", "", "ÄBC", "TOOLONGTICKER", "A..B", "-AB", "AA PL X Y", "DROP;--"])
def test_odd_ticker_characters_are_refused_by_name_everywhere(raw: str) -> None:
    with pytest.raises(InvalidTickerError, match=re.escape(f"ticker {raw!r} is not a valid symbol")):
        normalize_ticker(raw)
    clean, quarantined = split_quarantine(conform_ohlcv(pd.DataFrame([bar(raw), bar("AAPL")])))
    assert clean["ticker"].tolist() == ["AAPL"]
    assert quarantined[["ticker", "rule"]].values.tolist() == [[raw, "invalid_ticker"]]
    with pytest.raises(InvalidUniverseError, match=r"universe on 2016-06-15 has invalid tickers: .*"):
        update_slot_map(None, ["AAPL", raw], DAY)


def test_broken_prices_and_duplicates_are_quarantined_and_refetched_zero_volume_is_kept() -> None:
    bad = pd.DataFrame(
        [
            bar("AAPL", close=np.nan),
            bar("MSFT", high=np.inf),
            bar("XOM", open=-82.0),
            bar("JNJ", close=0.0, open=0.0, low=0.0, high=0.0),
            bar("KO", close=45.0), bar("KO", close=46.0),  # conflicting copies: which one is right?
            bar("PG", close=84.0), bar("PG", close=84.0),  # an identical copy: kept once
            bar("GE", volume=0.0),  # no trades that day (a halt): a real bar, kept
            bar("T", volume=-5.0),
        ]
    )  # fmt: skip
    tickers = ["AAPL", "MSFT", "XOM", "JNJ", "KO", "PG", "GE", "T"]
    rows, report = fetch_with_fallback(
        [FrameSource("bad", bad), SampleSource("yahoo")],
        tickers,
        DAY.date(),
        DAY.date(),
        screen=split_quarantine,
    )
    universe = pd.DataFrame({"ticker": tickers, "listed_from": pd.NaT})
    clean, quarantine, coverage = build_day_tables(
        rows, report, expected_pairs(universe, trading_days(DAY, DAY)), trading_days(DAY, DAY)
    )
    rules = quarantine.groupby("ticker")["rule"].agg(list).to_dict()
    assert rules == {
        "AAPL": ["price_missing_or_infinite"],
        "MSFT": ["price_missing_or_infinite"],
        "XOM": ["price_not_positive"],
        "JNJ": ["price_not_positive"],
        "KO": ["conflicting_duplicate", "conflicting_duplicate"],
        "PG": ["duplicate_row"],  # the second, identical copy is set aside; the first is kept
        "T": ["volume_missing_or_negative"],
    }
    assert all(
        ticker in detail for ticker, detail in zip(quarantine["ticker"], quarantine["detail"], strict=True)
    )
    sources = clean.set_index("ticker")["source"].to_dict()
    assert sources == {"AAPL": "sample:yahoo", "MSFT": "sample:yahoo", "XOM": "sample:yahoo",
                       "JNJ": "sample:yahoo", "KO": "sample:yahoo", "T": "sample:yahoo",
                       "PG": "bad", "GE": "bad"}  # fmt: skip
    assert clean.set_index("ticker").loc["GE", "volume"] == 0.0
    assert coverage[0].ratio == 1.0 and np.isfinite(clean[["open", "high", "low", "close"]]).all().all()


@pytest.mark.parametrize(("ticker", "day"), sorted(CORPORATE_ACTIONS))
def test_real_unadjusted_splits_and_spin_offs_are_kept_and_flagged(ticker: str, day: str) -> None:
    days = trading_days(day, day)
    fetched, report = fetch_with_fallback([SampleSource("iex")], [ticker], "2013-02-08", day)
    fetched = fetched[fetched["date"] >= fetched["date"].max() - pd.Timedelta(days=7)]
    universe = pd.DataFrame({"ticker": [ticker], "listed_from": pd.NaT})
    clean, quarantine, _ = build_day_tables(fetched, report, expected_pairs(universe, days), days)
    assert clean[["ticker", "suspect_return"]].values.tolist() == [[ticker, True]]
    assert quarantine.empty


def test_features_stay_finite_and_masked_through_the_real_corporate_actions() -> None:
    for day in ("2014-08-07", "2015-07-20", "2016-11-01"):
        names = sorted({t for t, d in CORPORATE_ACTIONS if d == day} | {"AAPL", "MSFT", "JNJ"})
        inputs = sample_feature_inputs([day], tickers=names)
        features = run_model("stock_features", inputs, [day])
        slot_map = inputs["slot_map"].drop(columns="date")
        tensor = pack_day(features, slot_map)
        assert np.isfinite(tensor["features"]).all()
        hit = np.isin(slot_map.sort_values("slot")["ticker"].to_numpy(), names)
        assert tensor["tradable"][hit].all() and not tensor["tradable"][~hit].any()
        assert not tensor["features"][~hit].any()  # padding stays zero


def test_empty_and_oversized_universes_are_refused_with_the_count() -> None:
    with pytest.raises(
        UniverseTooLargeError, match=rf"has {MAX_ACTIVE + 1} tickers, more than the MAX_ACTIVE"
    ):
        update_slot_map(None, [f"T{i:05d}" for i in range(MAX_ACTIVE + 1)], DAY)
    before = update_slot_map(None, ["AAPL", "MSFT"], DAY)
    emptied = update_slot_map(before, [], "2016-06-16")  # everyone leaves: archived, still priced and sold
    assert emptied.tickers(SLOT_ACTIVE) == [] and emptied.tickers(SLOT_ARCHIVE) == ["AAPL", "MSFT"]
    assert isinstance(emptied.validate(), SlotMap)


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        ("2016-07-04", "2016-07-04 is not an NYSE trading day: it is an NYSE holiday or closure"),
        ("2016-06-18", "2016-06-18 is not an NYSE trading day: it is a Saturday"),
        (
            "2099-06-15",
            "2099-06-15 is not an NYSE trading day: it is beyond the end of the exchange calendar",
        ),
        ("2016-13-01", "'2016-13-01' is not a date"),
    ],
)
def test_holiday_weekend_future_and_garbage_dates_are_refused_with_the_reason(day: str, reason: str) -> None:
    with pytest.raises(NotATradingDayError, match=reason):
        ensure_trading_day(day)


def test_a_holiday_or_future_partition_cannot_be_run(tmp_path) -> None:
    resources = {
        "market_data": MarketDataResource(),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(tmp_path)),
    }
    for day in ("2016-07-04", "2099-06-15"):
        with pytest.raises(DagsterUnknownPartitionError, match=day):
            dg.materialize(
                [ingestion.universe_constituents, ingestion.raw_ohlcv],
                resources=resources,
                partition_key=day,
                selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE],
            )
    assert not (tmp_path / "raw_ohlcv").exists()


HEADER_ONLY = "Ticker,Name,Sector,Asset Class,Market Value,Weight (%),Quantity,Price,Exchange\n"
NO_HEADER = "Symbol,Description\nAAPL,Apple\n"
BAD_NUMBER = (
    HEADER_ONLY + '"AAPL","APPLE INC","Information Technology","Equity","1,0,0","6.39","3","271","NASDAQ"\n'
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HEADER_ONLY, r"IWV holdings, line 1: no Equity rows after the header"),
        (NO_HEADER, r"IWV holdings: no header row starting with a 'Ticker' column"),
        (BAD_NUMBER, r"IWV holdings, line 2: .*"),
        ("", r"IWV holdings"),
    ],
)
def test_an_empty_or_malformed_holdings_file_fails_the_universe_and_keeps_the_stored_one(
    tmp_path, body: str, message: str
) -> None:
    io_manager = PartitionedParquetIOManager(backend="local", root=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([ingestion.universe_constituents], resources={"market_data": MarketDataResource(),
                   "io_manager": io_manager}, instance=instance)  # fmt: skip
    stored = (tmp_path / "universe_constituents.parquet").read_bytes()
    with FakeMarketAPI() as api:
        api.script("/IWV_holdings.csv", FakeResponse(body=body, headers={"Content-Type": "text/csv"}))
        live = MarketDataResource(provider="live", iwv_holdings_url=f"{api.url}/IWV_holdings.csv")
        resources = {"market_data": live, "io_manager": io_manager}
        result = dg.materialize(
            [ingestion.universe_constituents], resources=resources, instance=instance, raise_on_error=False
        )
    assert not result.success
    errors = step_errors(result)
    assert errors and all(e.startswith("HoldingsFormatError: ") for e in errors)
    assert re.search(message, errors[-1])
    assert (tmp_path / "universe_constituents.parquet").read_bytes() == stored
