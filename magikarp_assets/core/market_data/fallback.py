"""Fallback chain: ask the primary source, then fill each missing (ticker, day) from the backups."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.market_data.base import (
    MarketDataError,
    MarketDataSource,
    SourceUnavailableError,
    conform_ohlcv,
    describe_tickers,
    empty_ohlcv,
)

log = logging.getLogger(__name__)


@dataclass
class FetchReport:
    """What each source delivered, for metadata and alerts."""

    requested_pairs: int = 0
    rows_by_source: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (ticker, YYYY-MM-DD) nobody delivered
    quarantined: list[pd.DataFrame] = field(default_factory=list)  # rows a source sent that broke hard rules
    seconds: float = 0.0

    @property
    def delivered_pairs(self) -> int:
        return sum(self.rows_by_source.values())


def _describe_partial(errors: dict[str, str], limit: int = 5) -> str:
    """`2 item(s) not delivered: JNJ: ...; BRK-B: ...`, for the report and the asset metadata."""
    items = list(errors.items())
    listed = "; ".join(f"{item}: {reason}" for item, reason in items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} item(s) not delivered: {listed}{more}"


def fetch_with_fallback(
    sources: Sequence[MarketDataSource],
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    expected: pd.MultiIndex | None = None,
    screen: Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]] | None = None,
) -> tuple[pd.DataFrame, FetchReport]:
    """Fetch OHLCV for every (ticker, session) in [start, end], primary first, backups for the gaps.

    :param sources: primary first; each later source is only asked for the pairs still missing.
    :param expected: (ticker, date) pairs that should exist (default: every ticker on every session).
    :param screen: splits a source's rows into (clean, quarantined); quarantined pairs stay missing,
        so the next source is asked for them.
    :return: the rows (each with the `source` that delivered it) and a report. A source that fails
        entirely is recorded and skipped; if no source delivers anything, SourceUnavailableError.
    """
    began = time.perf_counter()
    sessions = trading_days(start, end)
    if expected is None:
        expected = pd.MultiIndex.from_product([sorted(set(tickers)), sessions], names=["ticker", "date"])
    report = FetchReport(requested_pairs=len(expected))
    frames: list[pd.DataFrame] = []
    missing = expected
    for source in sources:
        if missing.empty:
            break
        want = sorted(missing.get_level_values(0).unique())
        span = missing.get_level_values(1)
        try:
            got = source.fetch_ohlcv(want, span.min().date(), span.max().date())
        except MarketDataError as exc:
            report.errors[source.name] = str(exc)
            log.warning("source %s failed: %s", source.name, exc)
            continue
        partial = getattr(source, "last_errors", None) or {}  # per-item failures of a source that answered
        if partial:
            report.errors[source.name] = _describe_partial(partial)
        delivered = pd.MultiIndex.from_frame(got[["ticker", "date"]])
        got = got[delivered.isin(missing)]  # a backup only fills gaps, never overrides
        if screen is not None:
            got, bad = screen(got)
            if len(bad):
                report.quarantined.append(bad)
        report.rows_by_source[source.name] = len(got)
        frames.append(got)
        missing = missing.difference(pd.MultiIndex.from_frame(got[["ticker", "date"]]))
    report.missing = [(t, d.strftime("%Y-%m-%d")) for t, d in missing]
    report.seconds = time.perf_counter() - began
    if report.delivered_pairs == 0 and report.requested_pairs > 0:
        names = ", ".join(s.name for s in sources)
        detail = "; ".join(f"{k}: {v}" for k, v in report.errors.items()) or "no rows returned"
        raise SourceUnavailableError(
            f"no market data for {describe_tickers(sorted(set(tickers)))} "
            f"between {sessions.min().date()} and "
            f"{sessions.max().date()} from any source ({names}): {detail}"
        )
    out = conform_ohlcv(pd.concat(frames, ignore_index=True)) if frames else empty_ohlcv()
    return out, report
