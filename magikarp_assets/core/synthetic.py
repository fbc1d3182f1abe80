"""Synthetic market for scale work only: a factor-model price panel, quarterly reports and listing history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import FUNDAMENTAL_COLUMNS, conform_ohlcv, empty_ohlcv
from magikarp_assets.core.market_data.sample import simulated_fetch_time
from magikarp_assets.core.spec import BENCHMARK_TICKERS

SYNTHETIC_SOURCE = "synthetic"
TICKER_PREFIX = "SYN"
TICKER_DIGITS = 5
MAX_TICKER_NUMBER = 10**TICKER_DIGITS - 1
UNIVERSE_COLUMNS = ["ticker", "name", "sector", "listed_from", "delisted_on"]
# GICS sectors with roughly their share of Russell 3000 names, and each sector factor's daily volatility.
SECTORS = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
SECTOR_SHARE = np.array([0.04, 0.12, 0.04, 0.04, 0.17, 0.16, 0.15, 0.13, 0.05, 0.07, 0.03])
SECTOR_VOL = np.array([0.008, 0.007, 0.005, 0.012, 0.007, 0.008, 0.006, 0.009, 0.008, 0.007, 0.005])
MARKET_VOL = 0.010  # daily volatility of the market factor
MARKET_DRIFT = 0.0003  # daily mean log return of the market factor
MAX_ABS_LOG_RETURN = 0.3  # daily log returns are clipped to +-30%
# Delisting hazard per ticker-year. Each block's delistings are replaced by as many new listings in the
# next block (like an index reconstitution), so at most n_tickers names trade on any session.
DELISTING_RATE = 0.04
SESSIONS_PER_YEAR = 252
REPORT_LAG_DAYS = 45  # public_date = period_ending + 45 days
# Random numbers are drawn in blocks of sessions counted from `start`, each block from its own seed, so a
# session's data depends only on the blocks up to it: extending `end` never changes earlier rows.
BLOCK = 63
# Benchmark indices (spec.BENCHMARK_TICKERS): first level, loading on the market factor (QQQ the higher).
BENCHMARK_INDICES = {"QQQ": (100.0, 1.15), "SPY": (200.0, 1.0)}
BENCHMARK_VOLUME = 5e7
_PARAMS, _EVENTS, _PARAMS_LISTED, _RETURNS, _REPORTS = range(5)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _fat_tails(rng: np.random.Generator, df: int, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(df, size=shape) * np.sqrt((df - 2) / df)


def _draw_params(rng: np.random.Generator, k: int) -> pd.DataFrame:
    """Per-ticker model parameters: factor loadings, volatility, price level, size and accounting ratios."""
    return pd.DataFrame(
        {
            "sector": rng.choice(len(SECTORS), size=k, p=SECTOR_SHARE),
            "beta": np.clip(rng.normal(1.0, 0.3, k), 0.2, 2.2),
            "loading": np.clip(rng.normal(1.0, 0.3, k), 0.2, 2.0),
            "idio_vol": np.clip(np.exp(rng.normal(np.log(0.015), 0.4, k)), 0.004, 0.06),
            "drift": rng.normal(0.0, 0.0003, k),
            "price0": np.round(np.clip(np.exp(rng.normal(np.log(40.0), 1.0, k)), 1.0, 3000.0), 2),
            "shares": np.round(np.exp(rng.normal(np.log(1.5e8), 1.2, k)), -3),
            "turnover": np.exp(rng.normal(np.log(0.008), 0.5, k)),
            "sales_yield": np.exp(rng.normal(np.log(0.05), 0.6, k)),
            "margin": rng.normal(0.07, 0.08, k),
            "book_to_price": np.exp(rng.normal(np.log(0.4), 0.6, k)),
            "leverage": np.exp(rng.normal(np.log(1.5), 0.6, k)),
            "debt_share": rng.uniform(0.2, 0.6, k),
        }
    )


def _listing_history(n_tickers: int, n_blocks: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Listing and delisting session index per ticker number (delisting = first session without a bar).

    Returns (listed, delisted, count after each block); tickers are numbered in listing order, the
    n_tickers initial ones listed at session 0. Never-delisted tickers have delisted = a huge index.
    Block b lists as many new tickers as block b-1 delisted.
    """
    never = np.iinfo(np.int64).max
    listed, delisted = [np.zeros(n_tickers, np.int64)], [np.full(n_tickers, never)]
    counts: list[int] = []
    p_delist = 1.0 - np.exp(-DELISTING_RATE * BLOCK / SESSIONS_PER_YEAR)
    k = 0  # delistings of the previous block, replaced in this one
    for b in range(n_blocks):
        rng = _rng(seed, _EVENTS, b)
        first, lo = b * BLOCK, 1 if b == 0 else 0  # nothing delists on the very first session
        old = np.concatenate(delisted)
        hit = (rng.random(len(old)) < p_delist) & (old == never)
        old[hit] = first + rng.integers(lo, BLOCK, len(old))[hit]
        listed.append(first + np.sort(rng.integers(0, BLOCK, k)))
        delisted = [old, np.full(k, never)]
        counts.append(len(old) + k)
        k = int(hit.sum())
    if counts[-1] > MAX_TICKER_NUMBER:
        raise ValueError(f"synthetic market would number {counts[-1]} tickers, more than {MAX_TICKER_NUMBER}")
    return np.concatenate(listed), np.concatenate(delisted), counts


def _round_price(x: np.ndarray) -> np.ndarray:
    """Cents above $1, 4 decimals below, never below $0.0001 (monotone, so OHLC order survives)."""
    return np.maximum(np.where(x >= 1.0, np.round(x, 2), np.round(x, 4)), 1e-4)


def _simulate_prices(
    params: pd.DataFrame, listed: np.ndarray, counts: list[int], n_sessions: int, seed: int
) -> dict[str, np.ndarray]:
    """(sessions x tickers) open/high/low/close/volume, and "market": the market factor's log return per
    session; NaN before a ticker's listing block, and cells outside [listing, delisting) are not bars (the
    caller masks them)."""
    n = len(params)
    sector = params["sector"].to_numpy()
    beta, loading = params["beta"].to_numpy(), params["loading"].to_numpy()
    idio, drift = params["idio_vol"].to_numpy(), params["drift"].to_numpy()
    total_vol = np.sqrt((beta * MARKET_VOL) ** 2 + (loading * SECTOR_VOL[sector]) ** 2 + idio**2)
    base_volume = params["shares"].to_numpy() * params["turnover"].to_numpy()
    out: dict[str, np.ndarray] = {
        k: np.full((n_sessions, n), np.nan) for k in ("open", "high", "low", "close", "volume")
    }
    out["market"] = np.zeros(n_sessions)
    log_close = np.log(params["price0"].to_numpy())
    for b, m in enumerate(counts):
        rng = _rng(seed, _RETURNS, b)
        market = MARKET_DRIFT + MARKET_VOL * _fat_tails(rng, 5, (BLOCK, 1))
        sectors = SECTOR_VOL * _fat_tails(rng, 5, (BLOCK, len(SECTORS)))
        eps = _fat_tails(rng, 4, (BLOCK, m))
        gap, wick_hi, wick_lo, vol_noise = rng.standard_normal((4, BLOCK, m))
        rows = slice(b * BLOCK, min((b + 1) * BLOCK, n_sessions))
        span = rows.stop - rows.start
        session = np.arange(rows.start, rows.stop)[:, None]
        out["market"][rows] = market[:span, 0]
        r = (
            drift[:m]
            + beta[:m] * market[:span]
            + loading[:m] * sectors[:span, sector[:m]]
            + idio[:m] * eps[:span]
        )
        r = np.where(session > listed[:m], np.clip(r, -MAX_ABS_LOG_RETURN, MAX_ABS_LOG_RETURN), 0.0)
        lc = log_close[:m] + np.cumsum(r, axis=0)
        log_close[:m] = lc[-1]
        vol = total_vol[:m]
        # Overnight gap: 30% of the day's move plus noise; the intraday move is the rest.
        close, opn = np.exp(lc), np.exp(lc - 0.7 * r + 0.25 * vol * gap[:span])
        out["close"][rows, :m] = _round_price(close)
        out["open"][rows, :m] = _round_price(opn)
        out["high"][rows, :m] = _round_price(
            np.maximum(opn, close) * np.exp(0.6 * vol * np.abs(wick_hi[:span]))
        )
        out["low"][rows, :m] = _round_price(
            np.minimum(opn, close) * np.exp(-0.6 * vol * np.abs(wick_lo[:span]))
        )
        shock = np.abs(r - drift[:m]) / vol
        out["volume"][rows, :m] = np.round(
            base_volume[:m] * np.exp(0.5 * shock + 0.35 * vol_noise[:span] - 0.4)
        )
    return out


def _quarterly_reports(
    params: pd.DataFrame,
    tickers: np.ndarray,
    sessions: pd.DatetimeIndex,
    listed: np.ndarray,
    delisted: np.ndarray,
    close: np.ndarray,
    seed: int,
) -> pd.DataFrame:
    """Quarterly reports published by `end` (the last session), from a year before the first session."""
    first, last = sessions[0], sessions[-1]
    frames = []
    for period in pd.date_range(first - pd.DateOffset(years=1), last, freq="QE"):
        public = period + pd.Timedelta(days=REPORT_LAG_DAYS)
        if public > last:
            break
        t = int(sessions.searchsorted(period, "right")) - 1  # last session on or before the period end
        count = int(np.searchsorted(listed, max(t, 0), "right")) if t >= 0 else int((listed == 0).sum())
        j = np.arange(count)
        gone = delisted[:count] < len(sessions)
        gone[gone] = sessions[delisted[:count][gone]] <= public
        z_revenue, z_margin = _rng(seed, _REPORTS, period.year * 4 + period.quarter).standard_normal(
            (2, count)
        )
        p = params.iloc[:count]
        price = close[t, j] if t >= 0 else p["price0"].to_numpy()
        cap = p["shares"].to_numpy() * price
        revenue = np.round(cap * p["sales_yield"].to_numpy() * np.exp(0.1 * z_revenue))
        net_income = np.round(revenue * (p["margin"].to_numpy() + 0.03 * z_margin))
        equity = np.round(cap * p["book_to_price"].to_numpy())
        liabilities = np.round(equity * p["leverage"].to_numpy())
        frame = pd.DataFrame(
            {
                "ticker": tickers[:count],
                "period_ending": period,
                "public_date": public,
                "public_date_estimated": False,
                "revenue": revenue,
                "net_income": net_income,
                "eps": np.round(net_income / p["shares"].to_numpy(), 4),
                "shares_outstanding": p["shares"].to_numpy(),
                "total_equity": equity,
                "total_liabilities": liabilities,
                "long_term_debt": np.round(liabilities * p["debt_share"].to_numpy()),
                "source": SYNTHETIC_SOURCE,
            }
        )
        frames.append(frame[~gone])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FUNDAMENTAL_COLUMNS}).pipe(_conform_reports)
    return _conform_reports(pd.concat(frames, ignore_index=True))


def _benchmark_bars(sessions: pd.DatetimeIndex, market: np.ndarray) -> pd.DataFrame:
    """Daily bars of the benchmark indices: each compounds its loading times the market factor's log return
    from its first level (open = high = low = close, no dividends), so a session depends on earlier ones only.
    """
    frames = []
    for ticker in BENCHMARK_TICKERS:
        level, loading = BENCHMARK_INDICES[ticker]
        close = _round_price(level * np.exp(np.cumsum(loading * market)))
        frames.append(
            pd.DataFrame(
                {
                    "date": sessions,
                    "ticker": ticker,
                    **{col: close for col in ("open", "high", "low", "close", "adj_close")},
                    "volume": BENCHMARK_VOLUME,
                    "source": SYNTHETIC_SOURCE,
                }
            )
        )
    out = pd.concat(frames, ignore_index=True).sort_values(["date", "ticker"], kind="stable")
    out["fetched_at"] = simulated_fetch_time(out["date"])
    return conform_ohlcv(out.reset_index(drop=True))


def _conform_reports(df: pd.DataFrame) -> pd.DataFrame:
    out = df[FUNDAMENTAL_COLUMNS].copy()
    for col in ("period_ending", "public_date"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[ns]")
    out["public_date_estimated"] = out["public_date_estimated"].astype(bool)
    for col in FUNDAMENTAL_COLUMNS[4:-1]:
        out[col] = out[col].astype(np.float64)
    out[["ticker", "source"]] = out[["ticker", "source"]].astype(str)
    return out.sort_values(["public_date", "ticker"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class SyntheticMarket:
    """A generated market (SYNTHETIC, for scale work only); treat the frames as read-only.

    `ohlcv` has OHLCV_COLUMNS with source "synthetic"; `fundamentals` has FUNDAMENTAL_COLUMNS;
    `universe` lists every ticker that traded in the window with listed_from (first bar) and
    delisted_on (first session without a bar, NaT if still listed); `benchmarks` has the OHLCV_COLUMNS
    bars of the benchmark indices QQQ and SPY (driven by the market factor) on every session.
    """

    ohlcv: pd.DataFrame
    fundamentals: pd.DataFrame
    universe: pd.DataFrame
    seed: int
    benchmarks: pd.DataFrame

    def source(self) -> SyntheticSource:
        return SyntheticSource(self)

    def universe_frame(self) -> pd.DataFrame:
        """Current members (not delisted), shaped like sample_universe: ticker, name, sector, weight
        (equal), listed_from."""
        members = self.universe[self.universe["delisted_on"].isna()]
        out = members.assign(weight=1.0 / len(members))
        return out[["ticker", "name", "sector", "weight", "listed_from"]].reset_index(drop=True)


class SyntheticSource:
    """MarketDataSource over a SyntheticMarket (name "synthetic"); never returns rows after `end`.

    :param market: the generated market to serve.
    """

    name = SYNTHETIC_SOURCE

    def __init__(self, market: SyntheticMarket) -> None:
        self.market = market

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars of `tickers` (stocks, or the benchmark indices QQQ and SPY) for sessions in [start, end] that
        the synthetic market has.

        :param tickers: symbols to return (unknown ones are simply absent).
        :param start: first session (inclusive).
        :param end: last session (inclusive); nothing later is ever returned.
        """
        wanted = set(tickers)
        frames = []
        for df in (self.market.ohlcv, self.market.benchmarks):
            lo = df["date"].searchsorted(pd.Timestamp(start), "left")
            hi = df["date"].searchsorted(pd.Timestamp(end), "right")
            rows = df.iloc[lo:hi]
            rows = rows[rows["ticker"].isin(wanted)]
            if len(rows):
                frames.append(rows)
        if not frames:
            return empty_ohlcv()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)

    def fetch_fundamentals(self, as_of: dt.date) -> pd.DataFrame:
        """Quarterly reports public on or before `as_of` (FUNDAMENTAL_COLUMNS).

        :param as_of: the day of the question; later reports are not yet known.
        """
        reports = self.market.fundamentals
        return reports[reports["public_date"] <= pd.Timestamp(as_of)].reset_index(drop=True)


def generate_synthetic_market(
    n_tickers: int, start: dt.date | str, end: dt.date | str, seed: int = 0
) -> SyntheticMarket:
    """Generate a SYNTHETIC market over the NYSE sessions in [start, end] (scale work only, never real).

    Daily log returns follow a market factor, 11 sector factors and fat-tailed idiosyncratic noise with
    heterogeneous betas and volatilities; volumes are lognormal and rise with |return|; names delist at
    a few % per year and are replaced by new listings, so at most n_tickers trade on any session.
    Deterministic for (n_tickers, start, seed), and extending `end` keeps every earlier row unchanged.

    :param n_tickers: tickers on the first session, and the most trading on any session (replacements
        for delisted names are numbered after them).
    :param start: first day of the window.
    :param end: last day of the window.
    :param seed: non-negative random seed.
    """
    if n_tickers < 1:
        raise ValueError(f"synthetic market needs at least 1 ticker, got n_tickers={n_tickers}")
    if seed < 0:
        raise ValueError(f"synthetic market seed must be non-negative, got {seed}")
    sessions = trading_days(start, end)
    if len(sessions) == 0:
        raise ValueError(f"no NYSE session in [{start}, {end}]: cannot generate a synthetic market")
    n_blocks = -(-len(sessions) // BLOCK)
    listed, delisted, counts = _listing_history(n_tickers, n_blocks, seed)
    batches = [_draw_params(_rng(seed, _PARAMS, 0), n_tickers)]
    for b, (before, after) in enumerate(zip([n_tickers, *counts[:-1]], counts, strict=True)):
        batches.append(_draw_params(_rng(seed, _PARAMS_LISTED, b), after - before))
    params = pd.concat(batches, ignore_index=True)
    tickers = np.array(
        [f"{TICKER_PREFIX}{i:0{TICKER_DIGITS}d}" for i in range(1, len(params) + 1)], dtype=object
    )
    prices = _simulate_prices(params, listed, counts, len(sessions), seed)

    t_idx, j_idx = np.nonzero(np.arange(len(sessions))[:, None] >= listed[None, :])  # row-major: by date
    alive = t_idx < delisted[j_idx]
    t_idx, j_idx = t_idx[alive], j_idx[alive]
    dates = pd.Series(sessions[t_idx])
    cells = {col: prices[col][t_idx, j_idx] for col in ("open", "high", "low", "close", "volume")}
    ohlcv = pd.DataFrame(
        {
            "date": dates,
            "ticker": tickers[j_idx],
            **{col: cells[col] for col in ("open", "high", "low", "close")},
            "adj_close": cells["close"],  # no dividends or splits: the close is fully adjusted
            "volume": cells["volume"],
            "source": SYNTHETIC_SOURCE,
            "fetched_at": simulated_fetch_time(dates),
        }
    )

    traded = listed < len(sessions)
    universe = pd.DataFrame(
        {
            "ticker": tickers[traded],
            "name": [f"Synthetic Company {t[len(TICKER_PREFIX) :]}" for t in tickers[traded]],
            "sector": np.array(SECTORS, dtype=object)[params["sector"].to_numpy()[traded]],
            "listed_from": sessions[listed[traded]],
            "delisted_on": pd.DatetimeIndex(
                [sessions[d] if d < len(sessions) else pd.NaT for d in delisted[traded]]
            ).astype("datetime64[ns]"),
        }
    )
    reports = _quarterly_reports(params, tickers, sessions, listed, delisted, prices["close"], seed)
    return SyntheticMarket(
        ohlcv=conform_ohlcv(ohlcv),
        fundamentals=reports,
        universe=universe,
        seed=seed,
        benchmarks=_benchmark_bars(sessions, prices["market"]),
    )


@lru_cache(maxsize=2)
def cached_synthetic_market(n_tickers: int, start: str, end: str, seed: int = 0) -> SyntheticMarket:
    """generate_synthetic_market, memoised per process (the frames are shared: never mutate them).

    :param n_tickers: tickers listed on the first session.
    :param start: first day (YYYY-MM-DD).
    :param end: last day (YYYY-MM-DD).
    :param seed: non-negative random seed.
    """
    return generate_synthetic_market(n_tickers, start, end, seed)
