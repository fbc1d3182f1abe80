"""The pure report builders: the numbers they show equal hand-computed values, history never looks past
its as-of day, and every page is one self-contained HTML document."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.gates import GateResult, RuleOutcome
from magikarp_assets.core.promotion import PointerEvent
from magikarp_assets.core.reports.comparison import build_model_comparison_page
from magikarp_assets.core.reports.daily import changes_since, sector_weights
from magikarp_assets.core.reports.health import (
    CheckFailure,
    JobRun,
    SystemHealth,
    health_section,
    model_age,
    sessions_between,
)
from magikarp_assets.core.reports.history import recommendation_history
from magikarp_assets.core.reports.monthly import (
    last_session_of_month,
    model_switches,
    monthly_summary,
    rolling_sharpe,
)


def test_last_session_of_month_follows_the_nyse_calendar():
    assert last_session_of_month("2016-05-01") == pd.Timestamp("2016-05-31")  # 30 May: Memorial Day
    assert last_session_of_month("2016-07-15") == pd.Timestamp("2016-07-29")
    assert last_session_of_month("2016-12-01") == pd.Timestamp("2016-12-30")


def test_rolling_sharpe_equals_the_hand_computed_value():
    values = pd.Series([100.0, 101.0, 100.0, 102.0, 103.0])
    got = rolling_sharpe(values, window=3)
    returns = np.array([101 / 100 - 1, 100 / 101 - 1, 102 / 100 - 1, 103 / 102 - 1])
    last3 = returns[1:]
    assert got.iloc[4] == pytest.approx(last3.mean() / last3.std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert np.isnan(got.iloc[0]) and np.isnan(got.iloc[1])  # one return is not enough


def test_monthly_summary_measures_from_the_previous_month_end():
    dates = pd.to_datetime(["2016-04-28", "2016-04-29", "2016-05-02", "2016-05-31"])
    perf = pd.DataFrame(
        {
            "date": dates,
            "value": [100.0, 110.0, 99.0, 121.0],
            "benchmark": [50.0, 50.0, 55.0, 60.0],
            "turnover": [0.0, 0.1, 0.2, 0.3],
            "model_version": ["a", "a", "a", "b"],
            "cumulative_return": [0.0, 0.1, -0.01, 0.21],
            "success_rate_30d": [np.nan, np.nan, 0.5, 0.75],
        }
    )
    got = monthly_summary(perf, "2016-05-01")
    assert got["month_return"] == pytest.approx(121 / 110 - 1, rel=1e-12)
    assert got["benchmark_month_return"] == pytest.approx(60 / 50 - 1, rel=1e-12)
    assert got["month_max_drawdown"] == pytest.approx(99 / 110 - 1, rel=1e-12)
    assert got["month_average_turnover"] == pytest.approx(0.2)  # 29 Apr (base), 2 and 31 May
    assert got["sessions"] == 2 and got["model_versions"] == "a, b" and got["success_rate_30d"] == 0.75
    with pytest.raises(ValueError, match="no session in 2016-06"):
        monthly_summary(perf, "2016-06-01")


def test_model_switches_are_labelled_with_the_pointer_events():
    perf = pd.DataFrame(
        {"date": pd.bdate_range("2016-05-02", periods=5), "model_version": ["v1", "v1", "v2", "v2", "v1"]}
    )
    events = [
        PointerEvent("promote", "v1", None, "ann", "first", "2016-05-01T20:00:00+00:00"),
        PointerEvent("force_promote", "v2", "v1", "bob", "FORCED: test", "2016-05-03T20:00:00+00:00"),
        PointerEvent("auto_rollback", "v1", "v2", "sensor", "drawdown", "2016-05-05T20:00:00+00:00"),
    ]
    got = model_switches(perf, events)
    assert got["action"].tolist() == ["promote", "force_promote", "auto_rollback"]
    assert got["date"].tolist() == [perf["date"][0], perf["date"][2], perf["date"][4]]
    assert got["previous"].tolist() == ["-", "v1", "v2"] and got["by"].tolist() == ["ann", "bob", "sensor"]
    assert model_switches(perf, [])["action"].tolist() == ["start", "switch", "switch"]


def _recs(day: str, rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["ticker", "action", "current_weight", "target_weight", "price"])
    return frame.assign(
        date=pd.Timestamp(day), model_version="m1", slot_map_version="s1", rank=np.arange(1, len(rows) + 1),
        confidence=0.5,
    )  # fmt: skip


def test_changes_and_sector_weights():
    today = _recs("2016-06-02", [("AAA", "BUY", 0.1, 0.3, 1.0), ("BBB", "HOLD", 0.2, 0.2, 1.0)])
    before = _recs("2016-06-01", [("BBB", "BUY", 0.0, 0.25, 1.0), ("CCC", "SELL", 0.1, 0.0, 1.0)])
    got = changes_since(today, before)
    assert got["ticker"].tolist() == ["AAA", "BBB", "CCC"]  # |+0.3|, |-0.05|, |0|
    assert got.loc[0, "action_before"] == "-" and got.loc[2, "action"] == "-"
    assert got["target_change"].tolist() == pytest.approx([0.3, -0.05, 0.0])
    assert changes_since(today, None).empty
    weights = sector_weights(today, {"AAA": "Energy"}).set_index("sector")
    assert weights.loc["Energy", "target_weight"] == 0.3 and weights.loc["unknown", "current_weight"] == 0.2


def test_history_returns_and_no_look_ahead():
    recs = pd.concat(
        [
            _recs("2016-06-01", [("AAA", "BUY", 0.0, 0.3, 10.0), ("BBB", "SELL", 0.2, 0.0, 20.0)]),
            _recs("2016-06-02", [("AAA", "HOLD", 0.3, 0.3, 11.0), ("BBB", "HOLD", 0.0, 0.0, 19.0)]),
            _recs("2016-06-03", [("AAA", "SELL", 0.3, 0.0, 12.0), ("BBB", "BUY", 0.0, 0.1, 30.0)]),
        ]
    )
    bench = pd.Series([100.0, 101.0, 99.0], index=pd.to_datetime(["2016-06-01", "2016-06-02", "2016-06-03"]))
    got = recommendation_history(recs, bench, "2016-06-02", horizons=(1,))
    assert set(got["date"]) == {pd.Timestamp("2016-06-01"), pd.Timestamp("2016-06-02")}  # nothing after as_of
    first = got[got["date"] == pd.Timestamp("2016-06-01")].set_index("ticker")
    assert first.loc["AAA", "return_since"] == pytest.approx(11 / 10 - 1)
    assert first.loc["AAA", "benchmark_return_since"] == pytest.approx(101 / 100 - 1)
    assert first.loc["AAA", "status_1s"] == "success" and first.loc["BBB", "status_1s"] == "success"
    assert first.loc["BBB", "return_1s"] == pytest.approx(19 / 20 - 1)
    later = recommendation_history(recs.assign(price=recs["price"].where(recs["date"] < "2016-06-03", 1e6)),
                                   bench, "2016-06-02", horizons=(1,))  # fmt: skip
    pd.testing.assert_frame_equal(got, later)  # prices after as_of change nothing
    with pytest.raises(ValueError, match="no price on session 2016-06-03"):
        recommendation_history(recs, bench.iloc[:2], "2016-06-03")


def test_comparison_page_shows_the_gates_and_both_phases():
    days = pd.bdate_range("2016-05-02", periods=5)
    series = {
        "candidate v2": pd.Series([100, 101, 103, 102, 104.0], days),
        "production v1": pd.Series([100, 100, 101, 101, 102.0], days),
        "QQQ": pd.Series([100, 99, 100, 101, 101.0], days),
        "equal weight": pd.Series([100, 100.5, 101, 100, 101.0], days),
    }
    gate = GateResult("backtest", (RuleOutcome("max drawdown <= limit", 0.25, 0.2, False),))
    html = build_model_comparison_page("v2", series, None, [gate])
    assert html.count("Plotly.newPlot") == 2 and "FAILED: max drawdown" in html and "not run yet" in html
    assert "v2: not approved by the gates" in html
    both = build_model_comparison_page("v2", series, series, [GateResult("shadow", ())])
    assert both.count("Plotly.newPlot") == 4 and "all gates passed" in both


def test_health_section_and_model_age():
    assert sessions_between("2016-05-27", "2016-06-01") == 2 and sessions_between(None, "2016-06-01") is None
    now = dt.datetime(2016, 6, 3, 12, tzinfo=dt.UTC)
    age = model_age("v1", "2016-06-01T12:00:00+00:00", "2016-05-27", dt.date(2016, 6, 1), now)
    assert age.days_since_promotion == pytest.approx(2.0) and age.sessions_since_training == 2
    health = SystemHealth(
        dt.date(2016, 6, 1),
        runs=(JobRun("daily_signals", "FAILURE", "abcdef1234"),),
        failed_checks=(
            CheckFailure("data_is_fresh", "raw_ohlcv", "2016-06-01", "ERROR", "days: 2016-06-01"),
        ),
        model=age,
    )
    html = health_section(health)
    assert "FAILED (FAILURE)" in html and "data_is_fresh" in html and "abcdef12" in html
