"""Maps the annual 10-K file of the offline sample to the platform's point-in-time fundamentals table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from magikarp_assets.core.market_data.base import FUNDAMENTAL_COLUMNS
from magikarp_assets.core.market_data.sample import ANNUAL_REPORT_LAG_DAYS
from magikarp_assets.core.tickers import normalize_ticker

# annual file column -> platform column
ANNUAL_FILE_COLUMNS = {
    "total_revenue": "revenue",
    "net_income": "net_income",
    "earnings_per_share": "eps",
    "estimated_shares_outstanding": "shares_outstanding",
    "total_equity": "total_equity",
    "total_liabilities": "total_liabilities",
    "long_term_debt": "long_term_debt",
}
VALUE_COLUMNS = list(ANNUAL_FILE_COLUMNS.values())
ANNUAL_FILE_SOURCE = "sample:fundamentals_annual"


def fundamentals_from_annual_file(df: pd.DataFrame, source: str = ANNUAL_FILE_SOURCE) -> pd.DataFrame:
    """The annual file's rows as FUNDAMENTAL_COLUMNS, public from period_ending + 90 days (estimated).

    The file carries fiscal period ends, not filing dates: large filers must file a 10-K within 60
    days, so a 90-day lag is a conservative public date and `public_date_estimated` is True.

    :param df: the raw annual file (``ticker``, ``period_ending`` and the mapped value columns).
    :param source: label written to the `source` column.
    :raises ValueError: a needed column is missing (named), or a (ticker, period_ending) repeats.
    """
    missing = [c for c in ["ticker", "period_ending", *ANNUAL_FILE_COLUMNS] if c not in df.columns]
    if missing:
        raise ValueError(f"annual fundamentals file lacks column(s) {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "ticker": df["ticker"].map(normalize_ticker),
            "period_ending": pd.to_datetime(df["period_ending"]).astype("datetime64[ns]").dt.normalize(),
        }
    )
    out["public_date"] = out["period_ending"] + pd.Timedelta(days=ANNUAL_REPORT_LAG_DAYS)
    out["public_date_estimated"] = True
    for raw, col in ANNUAL_FILE_COLUMNS.items():
        out[col] = pd.to_numeric(df[raw], errors="coerce").astype(np.float64).to_numpy()
    out["source"] = source
    dup = out.duplicated(["ticker", "period_ending"], keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        raise ValueError(
            f"annual fundamentals file repeats ticker {first['ticker']} period_ending "
            f"{first['period_ending'].date()} ({int(dup.sum())} duplicated rows in all)"
        )
    return (
        out[FUNDAMENTAL_COLUMNS]
        .sort_values(["ticker", "period_ending"], kind="stable")
        .reset_index(drop=True)
    )
