import pandas as pd
import pytest

from magikarp_assets.core.windows import model_windows


@pytest.mark.parametrize("month", ["2016-03-01", "2016-12-01", "2017-02-01"])
def test_training_window_ends_before_the_backtest_which_ends_before_the_month(month):
    w = model_windows(month, training_sessions=252, backtest_months=2)
    assert len(w.training) == 252
    assert w.training[-1] < w.backtest[0]  # no overlap: no label of the backtest leaks into training
    assert w.backtest[-1] < pd.Timestamp(month)
    assert w.backtest[0] >= pd.Timestamp(month) - pd.DateOffset(months=2)
    assert not set(w.training) & set(w.backtest)


def test_backtest_covers_the_two_whole_months_before():
    w = model_windows("2016-12-01", 252, 2)
    assert w.backtest[0] == pd.Timestamp("2016-10-03") and w.backtest[-1] == pd.Timestamp("2016-11-30")
    assert w.training[-1] == pd.Timestamp("2016-09-30")
