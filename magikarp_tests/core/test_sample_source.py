import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.market_data.base import OHLCV_COLUMNS
from magikarp_assets.core.market_data.sample import SAMPLE_LAST_DAY, SampleSource, sample_universe


@pytest.mark.parametrize("vendor", ["iex", "yahoo", "benchmarks"])
@pytest.mark.parametrize("end", ["2013-03-01", "2015-03-12", "2016-06-15", "2017-02-07"])
def test_replay_never_returns_rows_after_the_requested_day(vendor, end):
    tickers = ["AAPL", "DHR", "MSFT", "QQQ", "SPY", "BRK-B"]
    rows = SampleSource(vendor).fetch_ohlcv(tickers, "2013-01-01", end)
    assert len(rows) > 0
    assert rows["date"].max() <= pd.Timestamp(end)
    assert list(rows.columns) == OHLCV_COLUMNS
    # the simulated fetch happens on the session itself, never later
    assert (rows["fetched_at"].dt.tz_localize(None).dt.normalize() == rows["date"]).all()


def test_replay_serves_real_values_and_class_share_tickers():
    rows = SampleSource("iex").fetch_ohlcv(["AAPL", "BRK-B"], "2016-06-15", "2016-06-15").set_index("ticker")
    assert rows.loc["AAPL", "close"] == pytest.approx(97.14)
    assert rows.loc["BRK-B", "close"] > 100
    assert np.isnan(rows.loc["AAPL", "adj_close"])  # the IEX file has no dividend adjustment
    yahoo = SampleSource("yahoo").fetch_ohlcv(["AAPL"], "2016-06-15", "2016-06-15")
    assert yahoo["adj_close"].iloc[0] > 0 and yahoo["source"].iloc[0] == "sample:yahoo"


def test_sample_universe_has_sectors_and_listing_dates():
    uni = sample_universe()
    assert len(uni) == 500 and uni["ticker"].is_unique
    assert uni.set_index("ticker").loc["FTV", "listed_from"] == pd.Timestamp("2016-07-01")
    assert uni.set_index("ticker").loc["AAPL", "sector"] == "Information Technology"
    assert uni["listed_from"].max() <= SAMPLE_LAST_DAY
