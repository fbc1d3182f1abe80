"""The feature models' inputs rebuilt from the bundled real sample, as the ingestion and universe assets
store them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd

from magikarp_assets.core.calendar import FIRST_TRADING_DAY, ensure_trading_day
from magikarp_assets.core.features.fundamentals import fundamentals_from_annual_file
from magikarp_assets.core.market_data.sample import SampleSource, sample_annual_fundamentals, sample_universe
from magikarp_assets.core.membership import members_on
from magikarp_assets.core.quality import split_quarantine
from magikarp_assets.core.slots import update_slot_map
from magikarp_assets.core.sql_models import load_models, required_dates

DayLike: TypeAlias = str | dt.date | pd.Timestamp
SLOT_TABLE_COLUMNS = ["ticker", "slot", "state", "since"]


def slot_membership_frame(slot_table: pd.DataFrame, dates: Iterable[DayLike]) -> pd.DataFrame:
    """The `slot_membership` table (date, ticker, slot, state, since) for one slot table held on every day
    (benchmarks and synthetic markets; the platform derives it from the daily slot_map asset instead).

    :param slot_table: columns ticker, slot (0..3599), state (1 active, 2 archive) and since (first day in
        the universe).
    :param dates: the sessions the table applies to.
    :raises ValueError: a column is missing, or a ticker or slot appears twice.
    """
    missing = [c for c in SLOT_TABLE_COLUMNS if c not in slot_table.columns]
    if missing:
        raise ValueError(f"slot table lacks column(s) {', '.join(missing)}")
    for key in ("ticker", "slot"):
        dup = slot_table[key][slot_table[key].duplicated()]
        if len(dup):
            raise ValueError(f"slot table repeats {key} {dup.iloc[0]}: each ticker holds exactly one slot")
    days = pd.DatetimeIndex(pd.to_datetime(list(dates))).astype("datetime64[ns]")
    base = slot_table[SLOT_TABLE_COLUMNS].reset_index(drop=True)
    out = base.iloc[np.tile(np.arange(len(base)), len(days))].reset_index(drop=True)
    out.insert(0, "date", np.repeat(days.to_numpy(), len(base)))
    out["slot"] = out["slot"].astype(np.int32)
    out["state"] = out["state"].astype(np.int8)
    out["since"] = pd.to_datetime(out["since"]).astype("datetime64[ns]")
    return out


def sample_raw_ohlcv(start: DayLike, end: DayLike, tickers: Sequence[str] | None = None) -> pd.DataFrame:
    """The primary sample's bars over [start, end] that pass the hard quality rules (known gaps stay gaps).

    :param start: first session.
    :param end: last session.
    :param tickers: restrict to these tickers (default: all 500).
    """
    source = SampleSource("iex")
    wanted = list(tickers) if tickers is not None else source.available_tickers()
    bars = source.fetch_ohlcv(wanted, pd.Timestamp(start).date(), pd.Timestamp(end).date())
    clean, _ = split_quarantine(bars)
    return clean


def sample_slot_maps(days: Iterable[DayLike], tickers: Sequence[str] | None = None) -> pd.DataFrame:
    """The slot map of each day (all 3,600 rows plus `date`), rolled forward from the first session of the
    sample exactly as the slot_map asset does: a ticker enters on its first session with prices.

    :param days: sessions to return maps for.
    :param tickers: restrict the universe to these tickers (default: all 500).
    """
    universe = sample_universe()
    if tickers is not None:
        universe = universe[universe["ticker"].isin(set(tickers))]
    wanted = sorted({ensure_trading_day(d) for d in days})
    if not wanted:
        return pd.DataFrame()
    entries = sorted(set(universe["listed_from"]) | {pd.Timestamp(FIRST_TRADING_DAY)})
    frames, current = [], None
    for day in sorted(set(wanted) | {d for d in entries if d <= wanted[-1]}):
        current = update_slot_map(current, members_on(universe, day), day)
        if day in wanted:
            frames.append(current.to_frame().assign(date=day))
    return pd.concat(frames, ignore_index=True)


def sample_feature_inputs(
    days: Iterable[DayLike], tickers: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """`raw_ohlcv`, `raw_fundamentals` and `slot_map` from the bundled real sample: everything the feature
    models need to output `days` (price history back to the start of their lookback windows).

    :param days: the sessions to compute features for.
    :param tickers: restrict to these tickers (default: all 500).
    """
    days = [ensure_trading_day(d) for d in days]
    need = required_dates("stock_features", days, load_models())
    slot_maps = sample_slot_maps(days, tickers)
    names = sorted(set(slot_maps["ticker"]) - {""})
    fundamentals = fundamentals_from_annual_file(sample_annual_fundamentals())
    history = need["raw_ohlcv"]
    return {
        "raw_ohlcv": sample_raw_ohlcv(history.min(), history.max(), names),
        "raw_fundamentals": fundamentals[fundamentals["ticker"].isin(set(names))].reset_index(drop=True),
        "slot_map": slot_maps,
    }
