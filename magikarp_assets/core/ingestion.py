"""Turns fetched bars into the stored day tables: quarantine, suspect-gap flags, coverage per day."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from magikarp_assets.core.market_data.fallback import FetchReport
from magikarp_assets.core.quality import empty_quarantine, flag_suspect_returns, validate_raw_ohlcv


@dataclass
class DayCoverage:
    date: str
    expected: int
    delivered: int
    missing: list[str]

    @property
    def ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 1.0


def expected_pairs(universe: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.MultiIndex:
    """(ticker, session) pairs the universe should trade: a ticker is expected from its listing on."""
    listed = universe.set_index("ticker")["listed_from"]
    pairs = pd.MultiIndex.from_product([listed.index, sessions], names=["ticker", "date"])
    since = listed.reindex(pairs.get_level_values(0)).to_numpy()
    ok = pd.isna(since) | (since <= pairs.get_level_values(1).to_numpy())
    return pairs[ok]


def build_day_tables(
    fetched: pd.DataFrame, report: FetchReport, expected: pd.MultiIndex, days: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.DataFrame, list[DayCoverage]]:
    """Stored rows for `days` (validated, with suspect_return flags), quarantine rows, coverage per day.

    `fetched` may include the session before the first day: it only serves as the previous close.
    """
    fetched = fetched.sort_values(["ticker", "date"], kind="stable")
    prev_close = fetched.groupby("ticker")["close"].shift(1)
    keep = fetched["date"].isin(days)
    clean = fetched[keep].assign(suspect_return=flag_suspect_returns(fetched["close"], prev_close)[keep])
    clean = clean.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
    clean = validate_raw_ohlcv(clean)
    quarantine = (
        pd.concat(report.quarantined, ignore_index=True) if report.quarantined else empty_quarantine()
    )
    quarantine = (
        quarantine[quarantine["date"].isin(days)]
        .sort_values(["date", "ticker", "source"])
        .reset_index(drop=True)
    )
    coverage = []
    have = pd.MultiIndex.from_frame(clean[["ticker", "date"]])
    for day in days:
        exp_day = expected[expected.get_level_values(1) == day]
        got = exp_day.isin(have)
        coverage.append(
            DayCoverage(
                day.strftime("%Y-%m-%d"),
                len(exp_day),
                int(got.sum()),
                sorted(exp_day[~got].get_level_values(0)),
            )
        )
    return clean, quarantine, coverage
