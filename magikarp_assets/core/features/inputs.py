"""Builds the frames the feature SQL models read: slot membership per day, and the offline sample's inputs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.sample import SampleSource, sample_annual_fundamentals, sample_universe
from magikarp_assets.core.quality import split_quarantine
from magikarp_assets.core.features.fundamentals import fundamentals_from_annual_file

SLOT_MAP_COLUMNS = ["ticker", "slot", "state", "since"]
SLOT_MEMBERSHIP_COLUMNS = ["date", *SLOT_MAP_COLUMNS]


def slot_membership_frame(
    slot_map: pd.DataFrame, dates: Iterable[str | dt.date | pd.Timestamp]
) -> pd.DataFrame:
    """The `slot_membership` input: one slot map repeated for each session.

    :param slot_map: columns ticker, slot (0..3599), state (0 padding, 1 active, 2 archive) and since
        (first day the ticker is in the universe).
    :param dates: the sessions the map applies to.
    :raises ValueError: a column is missing, or a ticker or slot appears twice.
    """
    missing = [c for c in SLOT_MAP_COLUMNS if c not in slot_map.columns]
    if missing:
        raise ValueError(f"slot map lacks column(s) {', '.join(missing)}")
    for key in ("ticker", "slot"):
        dup = slot_map[key][slot_map[key].duplicated()]
        if len(dup):
            raise ValueError(f"slot map repeats {key} {dup.iloc[0]!r}: each ticker holds exactly one slot")
    days = pd.DatetimeIndex(pd.to_datetime(list(dates))).astype("datetime64[ns]")
    base = slot_map[SLOT_MAP_COLUMNS].reset_index(drop=True)
    out = base.iloc[np.tile(np.arange(len(base)), len(days))].reset_index(drop=True)
    out.insert(0, "date", np.repeat(days.to_numpy(), len(base)))
    out["slot"] = out["slot"].astype(np.int32)
    out["state"] = out["state"].astype(np.int8)
    out["since"] = pd.to_datetime(out["since"]).astype("datetime64[ns]")
    return out[SLOT_MEMBERSHIP_COLUMNS]


def sample_slot_map(tickers: Sequence[str] | None = None) -> pd.DataFrame:
    """Offline slot map: the sample's tickers in alphabetical order on slots 0.., all active, since their
    first session with prices."""
    universe = sample_universe()
    if tickers is not None:
        universe = universe[universe["ticker"].isin(set(tickers))]
    universe = universe.sort_values("ticker").reset_index(drop=True)
    return pd.DataFrame(
        {
            "ticker": universe["ticker"],
            "slot": np.arange(len(universe), dtype=np.int32),
            "state": np.ones(len(universe), dtype=np.int8),
            "since": universe["listed_from"].astype("datetime64[ns]"),
        }
    )


def sample_raw_ohlcv(start: str | dt.date, end: str | dt.date, tickers: Sequence[str] | None = None) -> pd.DataFrame:
    """The primary sample's bars over [start, end] that pass the hard quality rules (known gaps stay gaps)."""
    source = SampleSource("iex")
    wanted = list(tickers) if tickers is not None else source.available_tickers()
    bars = source.fetch_ohlcv(wanted, pd.Timestamp(start).date(), pd.Timestamp(end).date())
    clean, _ = split_quarantine(bars)
    return clean


def sample_feature_inputs(
    start: str | dt.date, end: str | dt.date, tickers: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """`raw_ohlcv`, `raw_fundamentals` and `slot_membership` from the bundled real sample over [start, end].

    :param start: first session of the price history (include the features' lookback before the first
        day you want features for).
    :param end: last session.
    :param tickers: restrict to these tickers (default: all 500).
    """
    slot_map = sample_slot_map(tickers)
    fundamentals = fundamentals_from_annual_file(sample_annual_fundamentals())
    return {
        "raw_ohlcv": sample_raw_ohlcv(start, end, slot_map["ticker"].tolist()),
        "raw_fundamentals": fundamentals[fundamentals["ticker"].isin(set(slot_map["ticker"]))].reset_index(drop=True),
        "slot_membership": slot_membership_frame(slot_map, trading_days(start, end)),
    }
