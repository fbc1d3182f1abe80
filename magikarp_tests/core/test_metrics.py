"""Every metric equals a value computed by hand, and success rates never use data past the reporting day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.metrics import (
    FAILURE,
    NO_PRICE,
    PENDING,
    SUCCESS,
    alpha_beta,
    cumulative_return,
    daily_returns,
    drawdown_series,
    max_drawdown,
    monthly_signal_success_rate,
    performance_summary,
    recommendation_outcomes,
    sharpe_ratio,
    success_rate,
    success_rates,
    turnover,
    volatility,
    win_rate,
)

SAMPLE = Path(__file__).resolve().parents[2] / "magikarp_assets" / "data" / "sample"
DAYS = pd.DatetimeIndex(["2016-01-04", "2016-01-05", "2016-01-06", "2016-01-07", "2016-01-08"])
S0, S1, S2, S3, S4 = DAYS
# 100 -> 110 -> 99 -> 108.9: returns +10 %, -10 %, +10 %.
VALUES = pd.Series([100.0, 110.0, 99.0, 108.9], index=DAYS[:4])


def test_returns_cumulative_drawdown_and_win_rate_by_hand() -> None:
    returns = daily_returns(VALUES)
    assert returns.index.equals(DAYS[1:4])
    np.testing.assert_allclose(returns, [0.1, -0.1, 0.1])
    assert cumulative_return(VALUES) == pytest.approx(0.089)  # 108.9 / 100 - 1
    # running peak 100, 110, 110, 110 -> drawdowns 0, 0, 99/110 - 1 = -0.1, 108.9/110 - 1 = -0.01
    np.testing.assert_allclose(drawdown_series(VALUES), [0.0, 0.0, -0.1, -0.01], atol=1e-15)
    assert max_drawdown(VALUES) == pytest.approx(-0.1)
    assert win_rate(returns) == pytest.approx(2 / 3)
    assert win_rate(pd.Series([0.0, 0.01, -0.01, 0.0])) == 0.25  # a flat day is not a win


def test_volatility_and_sharpe_by_hand() -> None:
    # r = 0.1, -0.1, 0.1: mean 1/30; deviations 1/15, -2/15, 1/15 -> sample var (6/225) / 2 = 1/75.
    # volatility = sqrt(252 / 75) = sqrt(3.36); Sharpe = (1/30) / sqrt(1/75) * sqrt(252) = sqrt(21).
    returns = daily_returns(VALUES)
    assert volatility(returns) == pytest.approx(np.sqrt(3.36))
    assert sharpe_ratio(returns) == pytest.approx(4.58257569, abs=1e-8)
    # rf = 2.52 % a year = 0.0001 a day: mean excess 1/30 - 0.0001 = 0.997 / 30, same deviation.
    assert sharpe_ratio(returns, risk_free_rate=0.0252) == pytest.approx(4.58257569 * 0.997, abs=1e-8)
    assert np.isnan(sharpe_ratio(pd.Series([0.01, 0.01])))  # zero deviation
    assert np.isnan(sharpe_ratio(pd.Series([0.01])))


def test_alpha_beta_by_hand() -> None:
    # exact line r = 0.01 + 2 r_B: beta 2, daily alpha 0.01, annual 2.52
    bench = pd.Series([0.01, 0.02, 0.03], index=DAYS[:3])
    alpha, beta = alpha_beta(pd.Series([0.03, 0.05, 0.07], index=DAYS[:3]), bench)
    assert (alpha, beta) == (pytest.approx(2.52), pytest.approx(2.0))
    # r_B = .01, -.01, .02, 0 (mean .005), r = .02, -.01, .03, 0 (mean .01):
    # deviations b = .005, -.015, .015, -.005 and r = .01, -.02, .02, -.01; sum(db*dr) = .0007,
    # sum(db^2) = .0005 -> beta 1.4; daily alpha .01 - 1.4 * .005 = .003 -> annual .756.
    bench = pd.Series([0.01, -0.01, 0.02, 0.0], index=DAYS[:4])
    port = pd.Series([0.02, -0.01, 0.03, 0.0, 0.5], index=DAYS)  # S4 has no benchmark: ignored
    alpha, beta = alpha_beta(port, bench)
    assert beta == pytest.approx(1.4) and alpha == pytest.approx(0.756)
    assert all(np.isnan(alpha_beta(port, pd.Series(0.01, index=DAYS))))  # constant benchmark


def test_turnover_and_summary_by_hand() -> None:
    daily = turnover(
        pd.Series([100.0, 0.0, 50.0], index=DAYS[:3]), pd.Series([1000.0, 1100.0, 1000.0], index=DAYS[:3])
    )
    np.testing.assert_allclose(daily, [0.1, 0.0, 0.05])
    # benchmark returns .01, -.01, .02 against .1, -.1, .1: deviations b = (.01, -.05, .04) / 3 and
    # r = (.2, -.4, .2) / 3 -> beta = .03 / .0042 = 50/7; daily alpha 1/30 - (50/7)(.02/3) = -1/70,
    # annual -252/70 = -3.6
    bench = pd.Series([100.0, 101.0, 99.99, 101.9898], index=DAYS[:4])
    summary = performance_summary(VALUES, bench, daily_turnover=daily)
    assert summary["beta"] == pytest.approx(50 / 7)
    assert summary["alpha"] == pytest.approx(-3.6)
    assert summary["cumulative_return"] == pytest.approx(0.089)
    assert summary["benchmark_cumulative_return"] == pytest.approx(0.019898)
    assert summary["max_drawdown"] == pytest.approx(-0.1)
    assert summary["sharpe_ratio"] == pytest.approx(np.sqrt(21))
    assert summary["average_turnover"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="benchmark_prices has no price"):
        performance_summary(VALUES, bench.iloc[:3])


def test_bad_value_series_are_refused() -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        daily_returns(pd.Series([100.0, np.nan], index=DAYS[:2]))
    with pytest.raises(ValueError, match="strictly increasing"):
        daily_returns(pd.Series([100.0, 101.0], index=[S1, S0]))


# Prices on S0..S4 (sessions), benchmark Q = 100, 101, 102, 103, 104.
PRICES = pd.DataFrame(
    {
        "AAA": [10.0, 10.2, 10.5, 10.4, 10.0],
        "BBB": [20.0, 20.1, 20.2, 20.0, 20.0],
        "DDD": [50.0, 52.0, np.nan, np.nan, np.nan],  # delisted after S1
        "EEE": [np.nan, 30.0, 30.0, 30.0, 30.0],  # listed on S1
    },
    index=DAYS,
)
QQQ = pd.Series([100.0, 101.0, 102.0, 103.0, 104.0], index=DAYS)
RECS = pd.DataFrame(
    [
        (S0, "AAA", "BUY"),  # 10 -> 10.5 = +5 % vs +2 %: success
        (S0, "BBB", "SELL"),  # 20 -> 20.2 = +1 % vs +2 %: success
        (S0, "CCC", "HOLD"),  # ignored
        (S0, "DDD", "BUY"),  # 50 -> last price 52 = +4 % vs +2 %: success
        (S0, "EEE", "BUY"),  # no price on S0: no_price
        (S0, "ZZZ", "BUY"),  # unknown ticker: no_price
        (S1, "BBB", "BUY"),  # 20.1 -> 20.0 = -0.5 % vs 103/101 - 1 = +2 %: failure
        (S2, "AAA", "SELL"),  # exit S4: 10.5 -> 10.0 = -4.8 % vs 104/102 - 1 = +2 %: success
    ],
    columns=["date", "ticker", "action"],
)


def test_recommendation_outcomes_by_hand() -> None:
    out = recommendation_outcomes(RECS, PRICES, QQQ, horizon=2, as_of=S3).set_index(["date", "ticker"])
    assert len(out) == 7  # HOLD dropped
    expected = {
        (S0, "AAA"): SUCCESS,
        (S0, "BBB"): SUCCESS,
        (S0, "DDD"): SUCCESS,
        (S0, "EEE"): NO_PRICE,
        (S0, "ZZZ"): NO_PRICE,
        (S1, "BBB"): FAILURE,
        (S2, "AAA"): PENDING,  # its exit S4 is after S3
    }
    assert out["status"].to_dict() == expected
    assert out.loc[(S0, "AAA"), "ticker_return"] == pytest.approx(0.05)
    assert out.loc[(S0, "AAA"), "benchmark_return"] == pytest.approx(0.02)
    assert out.loc[(S0, "AAA"), "exit_date"] == S2
    assert out.loc[(S0, "DDD"), "ticker_return"] == pytest.approx(0.04)
    assert pd.isna(out.loc[(S2, "AAA"), "exit_date"]) and np.isnan(out.loc[(S2, "AAA"), "ticker_return"])
    assert success_rate(out) == pytest.approx(3 / 4)
    final = recommendation_outcomes(RECS, PRICES, QQQ, horizon=2, as_of=S4)
    assert success_rate(final) == pytest.approx(4 / 5)


def test_success_rate_uses_no_data_after_the_reporting_day() -> None:
    at_s2 = recommendation_outcomes(RECS, PRICES, QQQ, horizon=2, as_of=S2)
    # the S1 and S2 calls end after S2: pending; only the S0 calls (3 successes) count
    assert (at_s2.loc[at_s2["date"] > S0, "status"] == PENDING).all()
    assert success_rate(at_s2) == 1.0
    garbage_prices, garbage_qqq = PRICES.copy(), QQQ.copy()
    garbage_prices.loc[[S3, S4]] = 1e6
    garbage_qqq.loc[[S3, S4]] = np.nan
    pd.testing.assert_frame_equal(
        recommendation_outcomes(RECS, garbage_prices, garbage_qqq, horizon=2, as_of=S2), at_s2
    )
    # a later frame filtered at S2 reports what was known at S2
    later = recommendation_outcomes(RECS, PRICES, QQQ, horizon=2, as_of=S4)
    assert success_rate(later, as_of=S2) == success_rate(at_s2) == 1.0
    assert success_rate(later, as_of=S3) == pytest.approx(3 / 4)
    long = recommendation_outcomes(RECS, PRICES, QQQ, horizon=30, as_of=S4)
    assert set(long["status"]) == {PENDING, NO_PRICE} and np.isnan(success_rate(long))


def test_success_rate_table_by_hand() -> None:
    table = success_rates(RECS, PRICES, QQQ, as_of=S3, horizons=(2,)).set_index("action")
    assert table.loc["BUY", ["n_success", "n_resolved", "n_pending", "n_no_price"]].tolist() == [2, 3, 0, 2]
    assert table.loc["SELL", ["n_success", "n_resolved", "n_pending", "n_no_price"]].tolist() == [1, 1, 1, 0]
    assert table.loc["BUY", "success_rate"] == pytest.approx(2 / 3)
    assert table.loc["ALL", "success_rate"] == pytest.approx(3 / 4)
    assert (table["horizon"] == 2).all()
    assert success_rates(RECS, PRICES, QQQ, as_of=S3)["horizon"].unique().tolist() == [30, 90]


def test_outcome_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="2016-01-01 is not an NYSE session"):
        recommendation_outcomes(
            pd.DataFrame({"date": [pd.Timestamp("2016-01-01")], "ticker": ["AAA"], "action": ["BUY"]}),
            PRICES,
            QQQ,
            2,
            S4,
        )
    with pytest.raises(ValueError, match="benchmark has no usable price on session 2016-01-06"):
        recommendation_outcomes(RECS, PRICES, QQQ.drop(S2), 2, S3)
    with pytest.raises(ValueError, match="horizon"):
        recommendation_outcomes(RECS, PRICES, QQQ, 0, S3)


def _monthly_market(end: str) -> tuple[pd.DataFrame, pd.Series]:
    sessions = trading_days("2016-01-04", end)
    steps = np.arange(len(sessions))
    # AAA gains 0.2 % a session, QQQ 0.1 %: every BUY of AAA succeeds, every SELL fails.
    return pd.DataFrame({"AAA": 100 * 1.002**steps}, index=sessions), pd.Series(
        100 * 1.001**steps, index=sessions
    )


def test_twelve_month_success_of_monthly_signals_by_hand() -> None:
    # First sessions of the months (NYSE): 2016-01-04, 02-01, 03-01, 04-01, 05-02, 06-01, 07-01, 08-01,
    # 09-01, 10-03, 11-01, 12-01, 2017-01-03, 02-01, 03-01. 21 sessions after 2017-02-01 is 2017-03-03
    # (02-20 is a holiday), so on 2017-03-15 the Feb-2017 cohort is closed and Mar-2017 is not: the last 12
    # closed cohorts are 2016-03-01 .. 2017-02-01.
    firsts = pd.to_datetime(
        [
            "2016-01-04",
            "2016-02-01",
            "2016-03-01",
            "2016-04-01",
            "2016-05-02",
            "2016-06-01",
            "2016-07-01",
            "2016-08-01",
            "2016-09-01",
            "2016-10-03",
            "2016-11-01",
            "2016-12-01",
            "2017-01-03",
            "2017-02-01",
            "2017-03-01",
        ]
    )
    recs = pd.DataFrame({"date": firsts, "ticker": "AAA", "action": "BUY"})
    sells = pd.to_datetime(["2016-01-04", "2016-02-01", "2016-03-01", "2016-03-02"])  # 03-02: not a first
    recs = pd.concat([recs, pd.DataFrame({"date": sells, "ticker": "AAA", "action": "SELL"})])
    prices, qqq = _monthly_market("2017-03-15")
    result = monthly_signal_success_rate(recs, prices, qqq, as_of="2017-03-15")
    assert result.cohorts == tuple(firsts[2:14])
    # 12 BUY successes + the 2016-03-01 SELL failure
    assert (result.n_success, result.n_resolved) == (12, 13)
    assert result.success_rate == pytest.approx(12 / 13)
    assert monthly_signal_success_rate(recs, prices, qqq, as_of="2017-03-03").cohorts == tuple(firsts[2:14])
    # one session earlier the Feb-2017 window is still open: cohorts 2016-02-01 .. 2017-01-03, two SELLs
    earlier = monthly_signal_success_rate(recs, prices, qqq, as_of="2017-03-02")
    assert earlier.cohorts == tuple(firsts[1:13])
    assert (earlier.n_success, earlier.n_resolved) == (12, 14)


def test_real_sample_call_is_evaluated_on_the_nyse_calendar() -> None:
    # BUY on 2016-06-01, 30 sessions: 21 more in June, then Jul 1, 5 (Jul 4 holiday), 6, 7, 8, 11, 12, 13, 14.
    prices = pd.read_parquet(
        SAMPLE / "sp500_prices_yahoo_adj.parquet", filters=[("ticker", "in", ["AAPL", "MSFT"])]
    ).pivot(index="date", columns="ticker", values="adj_close")
    bench = pd.read_parquet(SAMPLE / "benchmarks_daily.parquet", filters=[("ticker", "==", "QQQ")])
    qqq = bench.set_index("date")["adj_close"]
    recs = pd.DataFrame(
        {
            "date": [pd.Timestamp("2016-06-01")] * 3,
            "ticker": ["AAPL", "MSFT", "AAPL"],
            "action": ["BUY", "BUY", "SELL"],
        }
    )
    out = recommendation_outcomes(recs, prices, qqq, 30, "2017-02-07")
    assert (out["exit_date"] == pd.Timestamp("2016-07-14")).all()
    # adj closes from the file: AAPL 97.429278 -> 97.755828 (+0.34 %), MSFT 52.170205 -> 53.048760
    # (+1.68 %), QQQ 109.458121 -> 111.370776 (+1.75 %): both BUYs trail QQQ, the AAPL SELL succeeds.
    aapl, msft = 97.755828 / 97.429278 - 1, 53.048760 / 52.170205 - 1
    assert out["ticker"].tolist() == ["AAPL", "AAPL", "MSFT"]  # sorted by date, ticker
    assert out["ticker_return"].tolist() == pytest.approx([aapl, aapl, msft], abs=1e-7)
    assert out["benchmark_return"].iloc[0] == pytest.approx(111.370776 / 109.458121 - 1, abs=1e-7)
    assert out.sort_values(["ticker", "action"])["status"].tolist() == [FAILURE, SUCCESS, FAILURE]
