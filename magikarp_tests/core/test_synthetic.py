"""Synthetic scale market: deterministic, OHLC-consistent, factor-structured, never leaking the future."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import FUNDAMENTAL_COLUMNS, OHLCV_COLUMNS, MarketDataSource
from magikarp_assets.core.quality import split_quarantine
from magikarp_assets.core.synthetic import (
    REPORT_LAG_DAYS,
    SECTORS,
    SyntheticMarket,
    SyntheticSource,
    cached_synthetic_market,
    generate_synthetic_market,
)
from magikarp_assets.core.tickers import normalize_ticker

N, START, END, SEED = 240, "2019-01-01", "2021-12-31", 5


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_synthetic_market(N, START, END, seed=SEED)


def log_returns(market: SyntheticMarket) -> pd.DataFrame:
    """Daily log returns of the tickers that trade over the whole window."""
    u = market.universe
    full = u[(u["listed_from"] == u["listed_from"].min()) & u["delisted_on"].isna()]["ticker"]
    close = market.ohlcv.pivot(index="date", columns="ticker", values="close")[full]
    return np.log(close).diff().iloc[1:]


def test_same_seed_gives_identical_frames_and_other_seeds_differ(market: SyntheticMarket) -> None:
    again = generate_synthetic_market(N, START, END, seed=SEED)
    pd.testing.assert_frame_equal(again.ohlcv, market.ohlcv)
    pd.testing.assert_frame_equal(again.fundamentals, market.fundamentals)
    pd.testing.assert_frame_equal(again.universe, market.universe)
    other = generate_synthetic_market(N, START, END, seed=SEED + 1)
    first_day = other.ohlcv["date"] == other.ohlcv["date"].min()
    assert not np.allclose(other.ohlcv.loc[first_day, "close"][:N], market.ohlcv.loc[first_day, "close"][:N])


def test_extending_the_end_never_changes_earlier_rows(market: SyntheticMarket) -> None:
    cut = pd.Timestamp("2020-06-30")
    short = generate_synthetic_market(N, START, cut.date(), seed=SEED)
    pd.testing.assert_frame_equal(
        short.ohlcv, market.ohlcv[market.ohlcv["date"] <= cut].reset_index(drop=True)
    )
    known = market.fundamentals[market.fundamentals["public_date"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(short.fundamentals, known)
    long_u = market.universe.set_index("ticker").loc[short.universe["ticker"]]
    assert (long_u["listed_from"].to_numpy() == short.universe["listed_from"].to_numpy()).all()
    gone_by_cut = long_u["delisted_on"] <= cut
    assert (short.universe["delisted_on"].notna().to_numpy() == gone_by_cut.to_numpy()).all()


def test_frame_contract_ohlc_consistency_and_no_missing_prices(market: SyntheticMarket) -> None:
    o = market.ohlcv
    assert list(o.columns) == OHLCV_COLUMNS
    prices = o[["open", "high", "low", "close", "adj_close", "volume"]]
    assert not prices.isna().any().any() and np.isfinite(prices.to_numpy()).all()
    assert (o[["open", "high", "low", "close"]] > 0).all().all() and (o["volume"] > 0).all()
    assert (o["low"] <= o[["open", "close"]].min(axis=1)).all()
    assert (o["high"] >= o[["open", "close"]].max(axis=1)).all()
    assert (o["high"] > o["low"]).mean() > 0.99 and (o["open"] != o["close"]).mean() > 0.9
    assert (o["adj_close"] == o["close"]).all()
    assert (o["source"] == "synthetic").all()
    assert (o["fetched_at"] == (o["date"] + pd.Timedelta(hours=22)).dt.tz_localize("UTC")).all()
    assert set(o["date"]) <= set(trading_days(START, END)) and not o.duplicated(["date", "ticker"]).any()
    tickers = o["ticker"].unique()
    assert all(t.startswith("SYN") and normalize_ticker(t) == t for t in tickers)
    assert split_quarantine(o)[1].empty  # passes every hard data-quality rule of the platform


def test_cross_section_has_market_and_sector_factors_fat_tails_and_heterogeneity(
    market: SyntheticMarket,
) -> None:
    r = log_returns(market)
    corr = r.corr().to_numpy()
    sector = market.universe.set_index("ticker").loc[r.columns, "sector"].to_numpy()
    same = sector[:, None] == sector[None, :]
    off_diagonal = ~np.eye(len(sector), dtype=bool)
    within, across = corr[same & off_diagonal].mean(), corr[~same].mean()
    assert within > across + 0.05, (within, across)
    assert 0.1 < across < 0.5  # a common market factor, but far from perfect co-movement
    assert set(sector) == set(SECTORS)
    vol = r.std()
    assert vol.max() / vol.min() > 3 and 0.01 < vol.median() < 0.04
    assert r.kurt().median() > 1.0  # each ticker's returns have fatter tails than a normal distribution
    level = market.ohlcv.groupby("ticker")["close"].first()
    assert level.max() / level.min() > 50
    volume = market.ohlcv.pivot(index="date", columns="ticker", values="volume")[r.columns].iloc[1:]
    rel_volume = np.log(volume / volume.median())
    assert np.corrcoef(rel_volume.stack(), r.abs().stack())[0, 1] > 0.3


def test_listings_and_delistings_happen_and_bars_follow_them(market: SyntheticMarket) -> None:
    u = market.universe
    first, sessions = u["listed_from"].min(), trading_days(START, END)
    new, gone = u[u["listed_from"] > first], u[u["delisted_on"].notna()]
    years = len(sessions) / 252
    assert 0.01 < len(new) / N / years < 0.1 and 0.01 < len(gone) / N / years < 0.1
    per_session = market.ohlcv.groupby("date")["ticker"].nunique()
    assert per_session.max() == N and per_session.min() < N  # replacements keep at most N trading
    bars = market.ohlcv.groupby("ticker")["date"].agg(["min", "max", "count"])
    assert set(bars.index) == set(u["ticker"])
    u = u.set_index("ticker").loc[bars.index]
    assert (bars["min"] == u["listed_from"]).all()
    stop = u["delisted_on"].fillna(sessions[-1] + pd.Timedelta(days=1))
    assert (bars["max"] < stop).all()
    expected = [
        int(((sessions >= a) & (sessions < b)).sum()) for a, b in zip(u["listed_from"], stop, strict=True)
    ]
    assert (bars["count"].to_numpy() == np.array(expected)).all()  # no gaps between listing and delisting


def test_quarterly_reports_are_public_45_days_after_the_period_and_stop_at_delisting(
    market: SyntheticMarket,
) -> None:
    f = market.fundamentals
    assert list(f.columns) == FUNDAMENTAL_COLUMNS and len(f)
    assert (f["public_date"] == f["period_ending"] + pd.Timedelta(days=REPORT_LAG_DAYS)).all()
    assert not f["public_date_estimated"].any() and (f["source"] == "synthetic").all()
    assert f["period_ending"].dt.is_quarter_end.all() and f["public_date"].max() <= pd.Timestamp(END)
    assert not f.duplicated(["ticker", "period_ending"]).any()
    assert not f[FUNDAMENTAL_COLUMNS[4:-1]].isna().any().any() and (f["shares_outstanding"] > 0).all()
    assert (
        (f["eps"] * f["shares_outstanding"] - f["net_income"]).abs() <= f["shares_outstanding"] * 1e-4
    ).all()
    u = market.universe.set_index("ticker").loc[f["ticker"]]
    assert (f["public_date"].to_numpy() < u["delisted_on"].fillna(pd.Timestamp.max).to_numpy()).all()
    late = u["listed_from"].to_numpy() > u["listed_from"].min()
    assert (f["period_ending"].to_numpy()[late] >= u["listed_from"].to_numpy()[late]).all()


def test_source_implements_the_protocol_and_never_returns_rows_after_end(market: SyntheticMarket) -> None:
    src = market.source()
    assert isinstance(src, MarketDataSource) and isinstance(src, SyntheticSource) and src.name == "synthetic"
    tickers = ["SYN00003", "SYN00010", "NOPE"]
    got = src.fetch_ohlcv(tickers, dt.date(2020, 3, 2), dt.date(2020, 3, 31))
    assert list(got.columns) == OHLCV_COLUMNS
    assert got["date"].min() == pd.Timestamp("2020-03-02") and got["date"].max() == pd.Timestamp("2020-03-31")
    assert set(got["ticker"]) <= set(tickers[:2]) and len(got) > 0
    o = market.ohlcv
    want = o[o["date"].between("2020-03-02", "2020-03-31") & o["ticker"].isin(tickers)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    listed = market.universe_frame()["ticker"].iloc[0]
    beyond = src.fetch_ohlcv([listed], dt.date(2021, 12, 1), dt.date(2030, 1, 1))
    assert beyond["date"].max() == o["date"].max() == pd.Timestamp(END)
    one_day = src.fetch_ohlcv([listed], dt.date(2021, 1, 4), dt.date(2021, 1, 4))
    assert list(one_day["date"]) == [pd.Timestamp("2021-01-04")]
    empty = src.fetch_ohlcv(["NOPE"], dt.date(2020, 1, 2), dt.date(2020, 1, 31))
    assert empty.empty and list(empty.columns) == OHLCV_COLUMNS


def test_fetch_fundamentals_only_returns_reports_public_by_as_of(market: SyntheticMarket) -> None:
    as_of = dt.date(2020, 5, 14)
    got = market.source().fetch_fundamentals(as_of)
    assert len(got) and got["public_date"].max() <= pd.Timestamp(as_of)
    f = market.fundamentals
    assert len(got) == int((f["public_date"] <= pd.Timestamp(as_of)).sum())
    assert pd.Timestamp("2020-03-31") not in set(got["period_ending"])  # public 2020-05-15, one day later


def test_universe_frame_lists_current_members_like_the_sample_universe(market: SyntheticMarket) -> None:
    frame = market.universe_frame()
    assert list(frame.columns) == ["ticker", "name", "sector", "weight", "listed_from"]
    assert set(frame["ticker"]) == set(market.universe.loc[market.universe["delisted_on"].isna(), "ticker"])
    assert frame["weight"].sum() == pytest.approx(1.0)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="n_tickers=0"):
        generate_synthetic_market(0, START, END)
    with pytest.raises(ValueError, match="seed must be non-negative, got -1"):
        generate_synthetic_market(5, START, END, seed=-1)
    with pytest.raises(ValueError, match=r"no NYSE session in \[2021-01-02, 2021-01-03\]"):
        generate_synthetic_market(5, "2021-01-02", "2021-01-03")


def test_cached_market_is_reused() -> None:
    a = cached_synthetic_market(20, "2021-01-04", "2021-03-31", 1)
    assert cached_synthetic_market(20, "2021-01-04", "2021-03-31", 1) is a
    assert a.ohlcv["ticker"].nunique() >= 20


def test_benchmarks_follow_the_market_on_every_session_and_are_served_like_stocks(
    market: SyntheticMarket,
) -> None:
    b = market.benchmarks
    assert list(b.columns) == OHLCV_COLUMNS and set(b["ticker"]) == {"QQQ", "SPY"}
    sessions = pd.DatetimeIndex(sorted(market.ohlcv["date"].unique()))
    for ticker in ("QQQ", "SPY"):
        assert pd.DatetimeIndex(b.loc[b["ticker"] == ticker, "date"]).equals(sessions)
    clean, quarantined = split_quarantine(b)
    assert quarantined.empty and len(clean) == len(b)
    index = b.pivot(index="date", columns="ticker", values="close")
    index_ret = np.log(index).diff().iloc[1:]
    stocks = log_returns(market).mean(axis=1)
    assert index_ret["SPY"].corr(stocks) > 0.7  # driven by the market factor the stocks load on
    assert index_ret["QQQ"].std() > index_ret["SPY"].std()  # QQQ has the higher market loading
    src = market.source()
    got = src.fetch_ohlcv(["QQQ", "SPY", "SYN00003"], dt.date(2020, 3, 2), dt.date(2020, 3, 6))
    assert sorted(set(got["ticker"])) == ["QQQ", "SPY", "SYN00003"] and got["date"].max() <= pd.Timestamp(
        "2020-03-06"
    )
    short = generate_synthetic_market(N, START, "2020-06-30", seed=SEED).benchmarks
    pd.testing.assert_frame_equal(short, b[b["date"] <= pd.Timestamp("2020-06-30")].reset_index(drop=True))
