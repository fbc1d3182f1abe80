"""FinRL 0.3.7's StockTradingEnv as a reference peer for parity tests and benchmarks, loaded by file path
(finrl/__init__.py imports broker SDKs that are not installed, and FinRL is never a runtime dependency)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

ENV_FILE = Path("meta") / "env_stock_trading" / "env_stocktrading.py"


@lru_cache(maxsize=1)
def finrl_env_module() -> ModuleType:
    """The module finrl/meta/env_stock_trading/env_stocktrading.py, executed without finrl/__init__.py."""
    spec = importlib.util.find_spec("finrl")  # locating a top-level package does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("finrl is not installed (pip install finrl==0.3.7 --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / ENV_FILE
    module_spec = importlib.util.spec_from_file_location("finrl_peer_env_stocktrading", path)
    if module_spec is None or module_spec.loader is None:
        raise ModuleNotFoundError(f"cannot load FinRL's StockTradingEnv from {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def finrl_frame(
    dates: pd.DatetimeIndex,
    tickers: list[str],
    close: np.ndarray,
    tech: dict[str, np.ndarray],
    turbulence: np.ndarray | None = None,
) -> pd.DataFrame:
    """The long frame FinRL expects: one row per (date, tic), sorted, indexed by day number.

    :param dates: the T sessions.
    :param tickers: the S tickers, in slot order.
    :param close: float [T, S] closes.
    :param tech: indicator name -> float [T, S] values.
    :param turbulence: float [T] market turbulence (same value on every row of a day).
    """
    n_days, n_stocks = close.shape
    frame = pd.DataFrame(
        {
            "date": np.repeat(np.asarray(dates), n_stocks),
            "tic": np.tile(np.asarray(tickers, dtype=object), n_days),
            "close": close.reshape(-1),
        }
    )
    for name, values in tech.items():
        frame[name] = values.reshape(-1)
    if turbulence is not None:
        frame["turbulence"] = np.repeat(turbulence, n_stocks)
    frame.index = np.repeat(np.arange(n_days), n_stocks)
    return frame


def make_finrl_env(
    frame: pd.DataFrame,
    tech_names: list[str],
    hmax: int = 100,
    initial_amount: float = 1_000_000.0,
    cost_pct: float = 0.001,
    reward_scaling: float = 1e-4,
    turbulence_threshold: float | None = None,
) -> Any:
    """FinRL's StockTradingEnv over ``frame`` (from :func:`finrl_frame`), starting with cash only.

    :param frame: FinRL long frame.
    :param tech_names: indicator columns, in state order (the first must never equal 1.0: FinRL reads it
        as a "cannot trade" flag).
    :param hmax: shares per unit action.
    :param initial_amount: starting cash.
    :param cost_pct: buy and sell cost rate for every stock.
    :param reward_scaling: multiplies the change in total asset.
    :param turbulence_threshold: liquidation threshold on the ``turbulence`` column, or None.
    """
    n_stocks = int(frame["tic"].nunique())
    return finrl_env_module().StockTradingEnv(
        df=frame,
        stock_dim=n_stocks,
        hmax=hmax,
        initial_amount=initial_amount,
        num_stock_shares=[0] * n_stocks,
        buy_cost_pct=[cost_pct] * n_stocks,
        sell_cost_pct=[cost_pct] * n_stocks,
        reward_scaling=reward_scaling,
        state_space=1 + 2 * n_stocks + len(tech_names) * n_stocks,
        action_space=n_stocks,
        tech_indicator_list=tech_names,
        turbulence_threshold=turbulence_threshold,
        print_verbosity=10**9,
    )


@lru_cache(maxsize=1)
def finrl_feature_engineer_class() -> type:
    """FinRL's FeatureEngineer (finrl/meta/preprocessor/preprocessors.py), imported with a stand-in `finrl`
    package so that finrl/__init__.py (broker SDK imports) never runs."""
    import sys
    import types

    spec = importlib.util.find_spec("finrl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("finrl is not installed (pip install finrl==0.3.7 --no-deps)")
    if "finrl" not in sys.modules or not hasattr(sys.modules["finrl"], "__path__"):
        package = types.ModuleType("finrl")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["finrl"] = package
    module = importlib.import_module("finrl.meta.preprocessor.preprocessors")
    return module.FeatureEngineer
