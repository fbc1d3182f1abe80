"""Reinforcement-learning environment and the portfolio accounting it shares with the backtest."""

from magikarp_assets.core.rl.accounting import (
    TradeResult,
    finrl_share_trades,
    last_known_prices,
    portfolio_value,
    rebalance_to_weights,
    target_weights,
)
from magikarp_assets.core.rl.env import (
    COL_SELLABLE,
    COL_TRADABLE,
    COL_WEIGHT,
    N_SLOT_COLUMNS,
    MarketEpisode,
    PortfolioEnv,
)

__all__ = [
    "COL_SELLABLE",
    "COL_TRADABLE",
    "COL_WEIGHT",
    "N_SLOT_COLUMNS",
    "MarketEpisode",
    "PortfolioEnv",
    "TradeResult",
    "finrl_share_trades",
    "last_known_prices",
    "portfolio_value",
    "rebalance_to_weights",
    "target_weights",
]
