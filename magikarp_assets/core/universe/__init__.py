"""Which stocks the platform may trade: the Russell 3000 universe read from iShares IWV holdings."""

from magikarp_assets.core.universe.iwv import (
    HOLDINGS_COLUMNS,
    UNIVERSE_COLUMNS,
    HoldingsFormatError,
    parse_iwv_holdings,
    universe_from_holdings,
)

__all__ = [
    "HOLDINGS_COLUMNS",
    "UNIVERSE_COLUMNS",
    "HoldingsFormatError",
    "parse_iwv_holdings",
    "universe_from_holdings",
]
