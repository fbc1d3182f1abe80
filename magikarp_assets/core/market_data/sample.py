"""Replays the bundled real market sample as if each requested day were today (offline source)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd

from magikarp_assets.core.market_data.base import conform_ohlcv, empty_ohlcv
from magikarp_assets.core.tickers import normalize_ticker

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
SAMPLE_LAST_DAY = pd.Timestamp("2017-02-07")
# Reporting lag applied to the annual 10-K file, whose rows carry the fiscal period end but not the
# filing date: large filers must file within 60 days, so 90 days is a conservative public date.
ANNUAL_REPORT_LAG_DAYS = 90
# The replay's simulated fetch time: the 22:00 UTC ingestion run of the session being replayed.
# Making it a function of the date keeps re-materialisations byte-identical.
SIMULATED_FETCH_HOUR_UTC = 22

VENDOR_FILES = {
    "iex": "sp500_prices_5yr.parquet",  # primary: IEX via the Kaggle dataset author
    "yahoo": "sp500_prices_yahoo_adj.parquet",  # backup: Yahoo, with dividend-adjusted close
    "benchmarks": "benchmarks_daily.parquet",
}


@lru_cache(maxsize=4)
def _load_vendor(vendor: str) -> pd.DataFrame:
    df = pd.read_parquet(SAMPLE_DIR / VENDOR_FILES[vendor])
    df["ticker"] = df["ticker"].map(normalize_ticker)
    df["date"] = df["date"].astype("datetime64[ns]")
    if "adj_close" not in df:
        df["adj_close"] = float("nan")
    return df.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)


def simulated_fetch_time(dates: pd.Series) -> pd.Series:
    return (dates + pd.Timedelta(hours=SIMULATED_FETCH_HOUR_UTC)).dt.tz_localize("UTC")


class SampleSource:
    """One vendor file of the bundled sample, served day by day; never returns rows after `end`.

    :param vendor: "iex" (primary prices), "yahoo" (backup prices with adj_close) or "benchmarks".
    """

    def __init__(self, vendor: str = "iex") -> None:
        if vendor not in VENDOR_FILES:
            raise ValueError(f"unknown sample vendor {vendor!r}; expected one of {sorted(VENDOR_FILES)}")
        self.vendor = vendor
        self.name = f"sample:{vendor}"

    def fetch_ohlcv(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        df = _load_vendor(self.vendor)
        start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
        lo, hi = df["date"].searchsorted(start_ts, "left"), df["date"].searchsorted(end_ts, "right")
        rows = df.iloc[lo:hi]
        rows = rows[rows["ticker"].isin(set(tickers))]
        if rows.empty:
            return empty_ohlcv()
        out = rows.assign(source=self.name, fetched_at=simulated_fetch_time(rows["date"]))
        return conform_ohlcv(out)

    def available_tickers(self) -> list[str]:
        return sorted(_load_vendor(self.vendor)["ticker"].unique())

    def first_dates(self) -> pd.Series:
        """First session each ticker trades in this file (its listing date within the sample)."""
        return _load_vendor(self.vendor).groupby("ticker")["date"].min()


def sample_universe() -> pd.DataFrame:
    """The offline universe: every ticker with primary sample prices, with name and GICS sector.

    The bundled constituents list (S&P 500, ~January 2017) gives names and sectors; 26 price
    tickers joined the index later and have no entry there (sector "Unknown"). `listed_from` is the
    first session with prices: the coverage check only expects a ticker from that day on.
    """
    src = SampleSource("iex")
    first = src.first_dates().rename("listed_from").reset_index()
    meta = pd.read_parquet(SAMPLE_DIR / "sp500_constituents_2017.parquet")
    meta["ticker"] = meta["ticker"].map(normalize_ticker)
    meta = meta.rename(columns={"security": "name", "gics_sector": "sector"})[["ticker", "name", "sector"]]
    out = first.merge(meta, on="ticker", how="left")
    out["name"] = out["name"].fillna(out["ticker"])
    out["sector"] = out["sector"].fillna("Unknown")
    out["weight"] = 1.0 / len(out)
    return (
        out[["ticker", "name", "sector", "weight", "listed_from"]]
        .sort_values("ticker")
        .reset_index(drop=True)
    )


def sample_annual_fundamentals() -> pd.DataFrame:
    """The raw annual 10-K file of the sample (mapping to the platform's columns is in core.features)."""
    df = pd.read_parquet(SAMPLE_DIR / "fundamentals_annual.parquet")
    df["ticker"] = df["ticker"].map(normalize_ticker)
    return df
