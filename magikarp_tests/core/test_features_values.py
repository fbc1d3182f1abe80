"""Raw feature values on the real sample equal an independent pandas computation written from the spec's
definitions (rolling windows on a session-indexed series instead of DuckDB windows), within 1e-9 relative."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.features.fundamentals import fundamentals_from_annual_file
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.features.spec import FUNDAMENTAL_FEATURES, TECHNICAL_FEATURES
from magikarp_assets.core.market_data.base import FUNDAMENTAL_COLUMNS
from magikarp_assets.core.market_data.sample import SampleSource, sample_annual_fundamentals
from magikarp_assets.core.sql_models import run_model

REL_TOL = 1e-9

BAR_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
MAX_STALE = 5
STALE_DAYS = 550


def as_of_bars(raw_ohlcv: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """The ticker's bars on every session of the input, a missing session repeating the last bar (<= 5)."""
    sessions = pd.DatetimeIndex(sorted(raw_ohlcv["date"].unique()))
    bars = raw_ohlcv[raw_ohlcv["ticker"] == ticker].set_index("date")[BAR_COLUMNS].reindex(sessions)
    present = pd.Series(np.where(bars["close"].notna(), np.arange(len(bars)), np.nan), index=sessions)
    source = present.ffill(limit=MAX_STALE)
    out = pd.DataFrame(index=sessions, columns=BAR_COLUMNS, dtype=float)
    ok = source.notna().to_numpy()
    out.loc[ok] = bars.iloc[source[ok].astype(int).to_numpy()].to_numpy()
    out["stale"] = np.where(ok, np.arange(len(bars)) - source.fillna(0).to_numpy(), np.nan)
    return out


def _total_return(cur: pd.DataFrame, ref: pd.DataFrame) -> pd.Series:
    use_adj = cur["adj_close"].notna() & ref["adj_close"].notna()
    return pd.Series(
        np.where(use_adj, cur["adj_close"] / ref["adj_close"], cur["close"] / ref["close"]) - 1,
        index=cur.index,
    )


def technical_reference(raw_ohlcv: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """The 15 raw technical features of `ticker` on every session (NaN where a window is incomplete)."""
    b = as_of_bars(raw_ohlcv, ticker)
    c, h, lo = b["close"], b["high"], b["low"]
    prev = b.shift(1)
    out = pd.DataFrame(index=b.index)
    r1 = _total_return(b, prev)
    out["ret_1d"] = r1
    for k in (5, 21, 63):
        complete = c.rolling(k + 1).count() == k + 1
        out[f"ret_{k}d"] = _total_return(b, b.shift(k)).where(complete)
    out["volatility_21d"] = r1.rolling(21).std(ddof=1) * np.sqrt(252)
    diff = c - prev["close"]
    gains, losses = diff.clip(lower=0).rolling(14).sum(), (-diff).clip(lower=0).rolling(14).sum()
    out["rsi_14"] = (100 * gains / (gains + losses)).where(gains + losses > 0, 50.0).where(gains.notna())
    macd = (c.rolling(12).mean() - c.rolling(26).mean()) / c
    out["macd"] = macd
    out["macd_signal"] = macd.rolling(9).mean()
    mean20, sd20 = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bollinger_pct_b"] = (c - (mean20 - 2 * sd20)) / (4 * sd20)
    pc = prev["close"]
    true_range = pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1).where(pc.notna())
    out["atr_ratio_14"] = true_range.rolling(14).mean() / c
    log_volume = np.log1p(b["volume"])
    out["volume_zscore_21"] = (log_volume - log_volume.rolling(21).mean()) / log_volume.rolling(21).std(
        ddof=1
    )
    out["price_vs_sma50"] = c / c.rolling(50).mean() - 1
    out["price_vs_sma200"] = c / c.rolling(200).mean() - 1
    up, down = h - prev["high"], prev["low"] - lo
    plus_dm = pd.Series(np.where((up > down) & (up > 0), up, 0.0), index=b.index).where(pc.notna())
    minus_dm = pd.Series(np.where((down > up) & (down > 0), down, 0.0), index=b.index).where(pc.notna())
    sp, sm = plus_dm.rolling(14).sum(), minus_dm.rolling(14).sum()
    dx = (100 * (sp - sm).abs() / (sp + sm)).where(sp + sm > 0, 0.0).where(sp.notna())
    out["adx_14"] = dx.rolling(14).mean()
    typical = (h + lo + c) / 3
    mean_tp = typical.rolling(20).mean()
    mean_dev = typical.rolling(20).apply(lambda x: np.abs(x - x.mean()).mean(), raw=True)
    out["cci_20"] = (typical - mean_tp) / (0.015 * mean_dev)
    out["close"] = c
    out["stale_sessions"] = b["stale"]
    return out


def fundamental_reference(fundamentals: pd.DataFrame, ticker: str, day: pd.Timestamp, close: float) -> dict:
    """The 10 raw fundamental features of `ticker` on `day`, from the reports public by then."""
    reports = fundamentals[(fundamentals["ticker"] == ticker) & (fundamentals["public_date"] <= day)]
    nan = float("nan")
    if reports.empty:
        return dict.fromkeys(FUNDAMENTAL_FEATURES, nan)
    last = reports.sort_values(["public_date", "period_ending"]).iloc[-1]
    if last["period_ending"] < day - pd.Timedelta(days=STALE_DAYS):
        return dict.fromkeys(FUNDAMENTAL_FEATURES, nan)
    gap = (last["period_ending"] - reports["period_ending"]).dt.days
    earlier = reports[(gap >= 300) & (gap <= 430)].sort_values("period_ending")
    prev = earlier.iloc[-1] if len(earlier) else None
    eps, equity, revenue = last["eps"], last["total_equity"], last["revenue"]
    cap = close * last["shares_outstanding"]
    return {
        "pe_ratio": close / eps if eps > 0 else nan,
        "pb_ratio": cap / equity if equity > 0 else nan,
        "ps_ratio": cap / revenue if revenue > 0 else nan,
        "eps_ttm": eps,
        "eps_growth": (eps - prev["eps"]) / abs(prev["eps"])
        if prev is not None and prev["eps"] != 0
        else nan,
        "roe": last["net_income"] / equity if equity > 0 else nan,
        "debt_to_equity": last["long_term_debt"] / equity if equity > 0 else nan,
        "profit_margin": last["net_income"] / revenue if revenue > 0 else nan,
        "revenue_growth": revenue / prev["revenue"] - 1 if prev is not None and prev["revenue"] > 0 else nan,
        "log_market_cap": float(np.log(cap)) if cap > 0 else nan,
    }


def _assert_close(actual: pd.Series, expected: pd.Series | dict, names: tuple[str, ...], where: str) -> None:
    for name in names:
        got, want = actual[name], expected[name]
        if pd.isna(want):
            assert pd.isna(got), f"{where} {name}: SQL {got!r}, reference missing"
        else:
            assert got == pytest.approx(want, rel=REL_TOL, abs=0), (
                f"{where} {name}: SQL {got!r}, reference {want!r}"
            )


def _check_day(inputs: dict[str, pd.DataFrame], day: str, tickers: list[str]) -> pd.DataFrame:
    ts = pd.Timestamp(day)
    tech = run_model("technical_features", inputs, [ts]).set_index("ticker")
    fund = run_model("fundamental_features", inputs, [ts]).set_index("ticker")
    for ticker in tickers:
        ref = technical_reference(inputs["raw_ohlcv"], ticker).loc[ts]
        _assert_close(
            tech.loc[ticker], ref, ("close", "stale_sessions", *TECHNICAL_FEATURES), f"{ticker} {day}"
        )
        fund_ref = fundamental_reference(inputs["raw_fundamentals"], ticker, ts, ref["close"])
        _assert_close(fund.loc[ticker], fund_ref, FUNDAMENTAL_FEATURES, f"{ticker} {day}")
    return tech


def test_aapl_2016_06_15_matches_the_independent_computation() -> None:
    inputs = sample_feature_inputs(["2016-06-15"])
    tech = _check_day(inputs, "2016-06-15", ["AAPL", "MSFT", "BRK-B", "WLTW"])
    aapl = tech.loc["AAPL"]
    # by hand from the raw file: closes 97.14 (2016-06-15) and 97.46 (2016-06-14); every window complete
    assert aapl["ret_1d"] == pytest.approx(97.14 / 97.46 - 1, rel=1e-12)
    assert aapl[list(TECHNICAL_FEATURES)].notna().all()
    # WLTW listed 2016-01-05, 112 sessions earlier: the 200-session average is missing, 63 sessions are there
    assert pd.isna(tech.loc["WLTW", "price_vs_sma200"]) and pd.notna(tech.loc["WLTW", "ret_63d"])


def test_dhr_around_its_gaps_matches_the_independent_computation() -> None:
    # DHR's 2016-01-12 bar is quarantined (NaN open): 01-12 repeats 01-11's bar, 01-13 is a fresh bar.
    inputs = sample_feature_inputs(["2016-01-13"])
    assert not (
        (inputs["raw_ohlcv"]["ticker"] == "DHR") & (inputs["raw_ohlcv"]["date"] == "2016-01-12")
    ).any()
    tech = _check_day(inputs, "2016-01-13", ["DHR", "O", "AAPL"])
    assert tech.loc["DHR", "ret_1d"] == pytest.approx(86.52 / 88.45 - 1, rel=1e-12)  # against 01-11's close
    # 2015-03-23: DHR comes back after 10 missing sessions; windows restart (missing until whole again).
    later = sample_feature_inputs(["2015-04-07"])
    tech = _check_day(later, "2015-04-07", ["DHR", "ES"])
    assert pd.notna(tech.loc["DHR", "ret_5d"]) and pd.isna(tech.loc["DHR", "ret_21d"])


def test_returns_use_adj_close_only_when_both_bars_have_it() -> None:
    inputs = sample_feature_inputs(["2016-06-15"])
    raw = inputs["raw_ohlcv"]
    # The backup source filled AAPL's last 10 sessions: those bars carry a dividend-adjusted close.
    yahoo = SampleSource("yahoo").fetch_ohlcv(
        ["AAPL"], pd.Timestamp("2016-06-02").date(), pd.Timestamp("2016-06-15").date()
    )
    mixed = pd.concat(
        [raw[~((raw["ticker"] == "AAPL") & (raw["date"] >= "2016-06-02"))], yahoo], ignore_index=True
    )
    inputs = {**inputs, "raw_ohlcv": mixed}
    tech = _check_day(inputs, "2016-06-15", ["AAPL"]).loc["AAPL"]
    bars = yahoo.set_index("date")
    assert tech["ret_5d"] == pytest.approx(
        bars.loc["2016-06-15", "adj_close"] / bars.loc["2016-06-08", "adj_close"] - 1
    )
    close_21 = raw[(raw["ticker"] == "AAPL") & (raw["date"] == "2016-05-16")]["close"].item()
    assert tech["ret_21d"] == pytest.approx(bars.loc["2016-06-15", "close"] / close_21 - 1)  # no adj on 05-16


def test_annual_file_maps_to_point_in_time_fundamentals() -> None:
    raw = sample_annual_fundamentals()
    out = fundamentals_from_annual_file(raw)
    assert list(out.columns) == FUNDAMENTAL_COLUMNS and len(out) == len(raw)
    assert (out["public_date"] - out["period_ending"] == pd.Timedelta(days=90)).all()
    assert out["public_date_estimated"].all()
    aapl = out[(out["ticker"] == "AAPL") & (out["period_ending"] == "2015-09-26")].iloc[0]
    src = raw[(raw["ticker"] == "AAPL") & (raw["period_ending"] == "2015-09-26")].iloc[0]
    assert (aapl["revenue"], aapl["eps"], aapl["shares_outstanding"]) == (
        src["total_revenue"],
        src["earnings_per_share"],
        src["estimated_shares_outstanding"],
    )
    with pytest.raises(ValueError, match="total_equity"):
        fundamentals_from_annual_file(raw.drop(columns="total_equity"))
    with pytest.raises(ValueError, match="repeats ticker AAPL period_ending 2015-09-26"):
        fundamentals_from_annual_file(pd.concat([raw, raw[(raw["ticker"] == "AAPL")].iloc[[2]]]))


def test_a_session_without_any_bar_is_a_missing_session() -> None:
    inputs = sample_feature_inputs(["2016-06-14", "2016-06-15"])
    raw = inputs["raw_ohlcv"]
    outage = {**inputs, "raw_ohlcv": raw[raw["date"] != "2016-06-14"]}  # the whole feed missed a day
    stg = run_model("stg_prices", outage, ["2016-06-14", "2016-06-15"]).set_index(["date", "ticker"])
    assert stg.loc[(pd.Timestamp("2016-06-14"), "AAPL"), "stale_sessions"] == 1
    tech = run_model("technical_features", outage, ["2016-06-15"]).set_index("ticker")
    closes = raw[raw["ticker"] == "AAPL"].set_index("date")["close"]
    assert tech.loc["AAPL", "ret_1d"] == pytest.approx(
        closes["2016-06-15"] / closes["2016-06-13"] - 1, rel=1e-12
    )
    assert tech.loc["AAPL", "ret_5d"] == pytest.approx(
        closes["2016-06-15"] / closes["2016-06-08"] - 1, rel=1e-12
    )
