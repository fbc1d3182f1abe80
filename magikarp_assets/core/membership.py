"""Who is in the universe on a given day, from the constituents table (no look-ahead)."""

from __future__ import annotations

import pandas as pd


def members_on(universe: pd.DataFrame, day: pd.Timestamp) -> list[str]:
    """Tickers in the universe on `day`: listed on or before it and not delisted by then.

    `listed_from` / `delisted_on` are optional columns; NaT means "always" / "never". A ticker's
    listing date is public on the day it lists, so this uses nothing dated after `day`.
    """
    keep = pd.Series(True, index=universe.index)
    if "listed_from" in universe:
        keep &= universe["listed_from"].isna() | (universe["listed_from"] <= day)
    if "delisted_on" in universe:
        keep &= universe["delisted_on"].isna() | (universe["delisted_on"] > day)
    return sorted(universe.loc[keep, "ticker"])
