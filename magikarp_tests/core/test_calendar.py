import pandas as pd
import pytest

from magikarp_assets.core.calendar import (
    NotATradingDayError,
    ensure_trading_day,
    is_trading_day,
    previous_trading_day,
    trading_day_window,
    trading_days,
)
from magikarp_assets.core.market_data.sample import SampleSource, _load_vendor


def test_sample_sessions_are_exactly_the_nyse_calendar():
    sample_days = pd.DatetimeIndex(sorted(_load_vendor("iex")["date"].unique()))
    assert sample_days.equals(trading_days(sample_days[0], sample_days[-1]))
    assert len(sample_days) == 1007


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        ("2016-06-18", "Saturday"),
        ("2016-07-04", "holiday"),
        ("2015-12-25", "holiday"),
        ("2016-13-01", "not a date"),
    ],
)
def test_non_sessions_are_rejected_with_the_reason(day, reason):
    with pytest.raises(NotATradingDayError, match=reason):
        ensure_trading_day(day)


def test_sessions_and_neighbours():
    assert is_trading_day("2016-06-15")
    assert not is_trading_day("2016-11-24")  # Thanksgiving
    assert previous_trading_day("2016-07-05") == pd.Timestamp("2016-07-01")
    window = trading_day_window("2016-07-05", 3)
    assert list(window.strftime("%Y-%m-%d")) == ["2016-06-30", "2016-07-01", "2016-07-05"]
    assert SampleSource("iex").fetch_ohlcv(["AAPL"], "2016-07-04", "2016-07-04").empty
