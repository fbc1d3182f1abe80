"""Date windows of the monthly model cycle: training strictly before the backtest, both before the month."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from magikarp_assets.core.calendar import previous_trading_day, trading_day_window, trading_days


@dataclass(frozen=True)
class ModelWindows:
    """For the candidate of month M: train on `training_sessions` sessions ending before the backtest,
    backtest on the `backtest_months` months right before M (out of sample), shadow from M's start."""

    training: pd.DatetimeIndex
    backtest: pd.DatetimeIndex


def model_windows(
    month_start: str | pd.Timestamp, training_sessions: int, backtest_months: int
) -> ModelWindows:
    month = pd.Timestamp(month_start).to_period("M").to_timestamp()
    backtest_start = month - pd.DateOffset(months=backtest_months)
    backtest = trading_days(backtest_start, month - pd.Timedelta(days=1))
    if backtest.empty:
        raise ValueError(f"no sessions in the backtest window before {month.date()}")
    training_end = previous_trading_day(backtest[0])
    training = trading_day_window(training_end, training_sessions)
    if len(training) < training_sessions:
        raise ValueError(
            f"only {len(training)} sessions before {training_end.date()}, {training_sessions} needed"
        )
    return ModelWindows(training=training, backtest=backtest)
