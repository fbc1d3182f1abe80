"""Data-quality rules for market data: pandera schemas, quarantine of hard-rule breaks, soft flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from magikarp_assets.core.market_data.base import OHLCV_COLUMNS
from magikarp_assets.core.tickers import InvalidTickerError, normalize_ticker

# OHLC consistency tolerance: vendors round adjusted prices, so allow a relative 1e-6 slack.
OHLC_REL_TOLERANCE = 1e-6
# A close-to-close move beyond this is flagged as a suspect gap (unadjusted split or spin-off).
SUSPECT_RETURN_ABS = 0.25

QUARANTINE_COLUMNS = ["date", "ticker", "rule", "detail", "source", "open", "high", "low", "close", "volume"]

_PRICE = pa.Column(float, [pa.Check.gt(0), pa.Check(np.isfinite, element_wise=False)])
RAW_OHLCV_SCHEMA = pa.DataFrameSchema(
    {
        "date": pa.Column("datetime64[ns]"),
        "ticker": pa.Column(str, pa.Check.str_matches(r"^[A-Z0-9][A-Z0-9\-]{0,9}$")),
        "open": _PRICE,
        "high": _PRICE,
        "low": _PRICE,
        "close": _PRICE,
        "adj_close": pa.Column(float, pa.Check.gt(0), nullable=True),
        "volume": pa.Column(float, [pa.Check.ge(0), pa.Check(np.isfinite, element_wise=False)]),
        "source": pa.Column(str),
        "fetched_at": pa.Column("datetime64[ns, UTC]"),
        "suspect_return": pa.Column(bool),
    },
    checks=[
        pa.Check(
            lambda d: d["low"] <= d[["open", "close"]].min(axis=1) * (1 + OHLC_REL_TOLERANCE),
            name="low<=open,close",
        ),
        pa.Check(
            lambda d: d["high"] >= d[["open", "close"]].max(axis=1) * (1 - OHLC_REL_TOLERANCE),
            name="high>=open,close",
        ),
    ],
    unique=["date", "ticker"],
    strict=True,
    ordered=True,
    name="raw_ohlcv",
)

BENCHMARK_SCHEMA = pa.DataFrameSchema(
    {
        "date": pa.Column("datetime64[ns]"),
        "ticker": pa.Column(str),
        "close": _PRICE,
        "adj_close": _PRICE,
        "source": pa.Column(str),
    },
    unique=["date", "ticker"],
    name="benchmark_prices",
)


def _rule_masks(df: pd.DataFrame) -> dict[str, pd.Series]:
    """Each hard rule as a boolean 'broken' mask; the first broken rule names the quarantine reason."""
    prices = df[["open", "high", "low", "close"]]
    finite = np.isfinite(prices.to_numpy(dtype=float))
    lo, hi = df[["open", "close"]].min(axis=1), df[["open", "close"]].max(axis=1)
    tol = OHLC_REL_TOLERANCE
    return {
        "invalid_ticker": ~df["ticker"].map(_ticker_ok).astype(bool),
        "price_missing_or_infinite": pd.Series(~finite.all(axis=1), index=df.index),
        "price_not_positive": (prices <= 0).any(axis=1),
        "low_above_open_or_close": df["low"] > lo * (1 + tol),
        "high_below_open_or_close": df["high"] < hi * (1 - tol),
        "volume_missing_or_negative": ~(df["volume"] >= 0) | ~np.isfinite(df["volume"]),
        "adj_close_not_positive": df["adj_close"].notna() & ~(df["adj_close"] > 0),
    }


def _ticker_ok(t: object) -> bool:
    try:
        return normalize_ticker(t) == t  # type: ignore[arg-type]
    except InvalidTickerError:
        return False


def split_quarantine(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (clean, quarantined). Quarantined rows carry the rule they broke and why.

    Duplicated (ticker, date) rows: identical copies keep one; conflicting copies are all quarantined,
    since we cannot tell which vendor row is right.
    """
    df = df.reset_index(drop=True)
    reasons = pd.Series("", index=df.index, dtype=object)
    for rule, broken in _rule_masks(df).items():
        reasons = reasons.mask((reasons == "") & broken.fillna(True), rule)
    key = ["ticker", "date"]
    dup_any = df.duplicated(key, keep=False)
    if dup_any.any():
        value_cols = ["open", "high", "low", "close", "adj_close", "volume"]
        n_variants = df[dup_any].groupby(key)[value_cols].nunique(dropna=False).max(axis=1)
        conflicting = df.set_index(key).index.isin(n_variants[n_variants > 1].index)
        reasons = reasons.mask((reasons == "") & conflicting, "conflicting_duplicate")
        reasons = reasons.mask((reasons == "") & df.duplicated(key, keep="first"), "duplicate_row")
    bad = reasons != ""
    quarantined = df[bad].assign(rule=reasons[bad])
    quarantined["detail"] = quarantined.apply(_describe, axis=1)
    return df[~bad].reset_index(drop=True), quarantined.reindex(columns=QUARANTINE_COLUMNS).reset_index(
        drop=True
    )


def _describe(row: pd.Series) -> str:
    return (
        f"{row['ticker']} {pd.Timestamp(row['date']).date()} broke {row['rule']}: open={row['open']} "
        f"high={row['high']} low={row['low']} close={row['close']} volume={row['volume']}"
    )


def flag_suspect_returns(close: pd.Series, previous_close: pd.Series) -> pd.Series:
    """True where |close / previous close - 1| exceeds SUSPECT_RETURN_ABS (row kept, but flagged)."""
    ret = close / previous_close - 1.0
    return (ret.abs() > SUSPECT_RETURN_ABS).fillna(False).astype(bool)


def validate_raw_ohlcv(df: pd.DataFrame) -> pd.DataFrame:
    """Validate the clean table; raises pandera SchemaErrors listing every failing row and rule."""
    return RAW_OHLCV_SCHEMA.validate(df.reindex(columns=[*OHLCV_COLUMNS, "suspect_return"]), lazy=True)


def empty_quarantine() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    out["date"] = out["date"].astype("datetime64[ns]")
    for c in ["open", "high", "low", "close", "volume"]:
        out[c] = out[c].astype(float)
    return out
