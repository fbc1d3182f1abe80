"""The trading environment the policy learns in: one step is one trading day over the fixed slots, trading
at the day's close net of proportional costs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from magikarp_assets.core.rl.accounting import (
    TradeResult,
    check_cost_rates,
    finrl_share_trades,
    last_known_prices,
    rebalance_to_weights,
    target_weights,
)
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING

# Columns of the "slots" observation after the N_FEATURES feature columns.
COL_TRADABLE = N_FEATURES
COL_SELLABLE = N_FEATURES + 1
COL_WEIGHT = N_FEATURES + 2
N_SLOT_COLUMNS = N_FEATURES + 3

EnvMode = Literal["weights", "shares"]


@dataclass(frozen=True)
class MarketEpisode:
    """Consecutive trading days aligned on the fixed slots.

    :param features: float32 [T, S, N_FEATURES], finite.
    :param close: float64 [T, S] close, NaN where there is no price.
    :param tradable: bool [T, S] may be bought (active slot with a price).
    :param slot_state: int8 [T, S] 0 padding, 1 active, 2 archive.
    :param dates: the T sessions, ascending.
    """

    features: np.ndarray
    close: np.ndarray
    tradable: np.ndarray
    slot_state: np.ndarray
    dates: pd.DatetimeIndex

    def __post_init__(self) -> None:
        if self.features.ndim != 3 or self.features.shape[2] != N_FEATURES:
            raise ValueError(f"features shape {self.features.shape} breaks the rule [T, S, {N_FEATURES}]")
        n_days, n_slots = self.features.shape[:2]
        if n_days < 2:
            raise ValueError(f"an episode needs at least 2 trading days, got {n_days}")
        expected = {
            "features": np.float32,
            "close": np.float64,
            "tradable": np.bool_,
            "slot_state": np.int8,
        }
        for name, dtype in expected.items():
            array = getattr(self, name)
            if array.shape[:2] != (n_days, n_slots) or array.dtype != dtype:
                raise ValueError(
                    f"{name} is {array.dtype} {array.shape}; the rule is {np.dtype(dtype)} "
                    f"[{n_days}, {n_slots}{', ...' if name == 'features' else ''}]"
                )
        if len(self.dates) != n_days:
            raise ValueError(f"dates has {len(self.dates)} entries for {n_days} days of data")
        self._check_cells(~np.isfinite(self.features).all(axis=2), "features must be finite")
        self._check_cells(self.close <= 0, "close must be > 0 where present")
        self._check_cells(
            ~np.isin(self.slot_state, (SLOT_PADDING, SLOT_ACTIVE, SLOT_ARCHIVE)),
            "slot_state must be 0, 1 or 2",
        )
        self._check_cells(
            self.tradable & ((self.slot_state != SLOT_ACTIVE) | ~np.isfinite(self.close)),
            "tradable needs an active slot with a price",
        )

    def _check_cells(self, broken: np.ndarray, rule: str) -> None:
        if broken.any():
            day, slot = np.argwhere(broken)[0]
            raise ValueError(
                f"{int(broken.sum())} cell(s) break the rule '{rule}', first on "
                f"{pd.Timestamp(self.dates[day]).date()} slot {slot}"
            )

    @property
    def n_days(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.close.shape[1])


class PortfolioEnv(gym.Env):
    """Daily portfolio environment over S slots; trades happen at each day's close.

    ``mode="weights"``: action = S slot scores + 1 cash score in [-1, 1], turned into target weights by
    :func:`target_weights` and rebalanced by :func:`rebalance_to_weights`; reward ``log(V_{t+1} / V_t)``.
    ``mode="shares"``: FinRL StockTradingEnv semantics (:func:`finrl_share_trades`); reward
    ``(V_{t+1} - V_t) * reward_scaling``. Differences from FinRL: buys only where ``tradable``, sells only
    where held and priced, held names without a price are valued at their last known close, the episode ends
    on the step that reaches the last day, and turbulence on day 0 is used (FinRL resets it to 0).
    """

    def __init__(
        self,
        episode: MarketEpisode,
        mode: EnvMode = "weights",
        initial_cash: float = 1_000_000.0,
        buy_cost_pct: float = 0.001,
        sell_cost_pct: float = 0.001,
        temperature: float = 1.0,
        hmax: int = 100,
        reward_scaling: float = 1e-4,
        turbulence: np.ndarray | None = None,
        turbulence_threshold: float | None = None,
    ) -> None:
        """Build the environment over one episode.

        :param episode: the market data of the episode.
        :param mode: "weights" (target-weight rebalancing) or "shares" (FinRL share trades).
        :param initial_cash: cash at reset; no shares are held at reset.
        :param buy_cost_pct: proportional cost on value bought.
        :param sell_cost_pct: proportional cost on value sold.
        :param temperature: softmax temperature of weights mode.
        :param hmax: shares per unit action in shares mode.
        :param reward_scaling: multiplies the change in value in shares mode.
        :param turbulence: float [T] turbulence index per day, needed with ``turbulence_threshold``.
        :param turbulence_threshold: on days with turbulence >= threshold, sell everything, buy nothing.
        """
        if mode not in ("weights", "shares"):
            raise ValueError(f"mode={mode!r} breaks the rule mode in ('weights', 'shares')")
        check_cost_rates(buy_cost_pct, sell_cost_pct)
        if initial_cash <= 0:
            raise ValueError(f"initial_cash={initial_cash!r} breaks the rule initial_cash > 0")
        self.episode = episode
        self.mode = mode
        self.initial_cash = float(initial_cash)
        self.buy_cost_pct = buy_cost_pct
        self.sell_cost_pct = sell_cost_pct
        self.temperature = temperature
        self.hmax = hmax
        self.reward_scaling = reward_scaling
        self.turbulence_threshold = turbulence_threshold
        n_days, n_slots = episode.n_days, episode.n_slots
        self._liquidate = np.zeros(n_days, dtype=bool)
        if turbulence_threshold is not None:
            if turbulence is None or np.shape(turbulence) != (n_days,):
                raise ValueError(f"turbulence_threshold needs a turbulence array of shape ({n_days},)")
            self._liquidate = np.asarray(turbulence, dtype=np.float64) >= turbulence_threshold
        self._priced = np.isfinite(episode.close)
        self._value_price = np.nan_to_num(last_known_prices(episode.close), nan=0.0)
        self._trade_price = np.where(self._priced, episode.close, 0.0)
        self._tradable_fraction = episode.tradable.mean(axis=1)
        self.observation_space = spaces.Dict(
            {
                "slots": spaces.Box(-np.inf, np.inf, shape=(n_slots, N_SLOT_COLUMNS), dtype=np.float32),
                "portfolio": spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32),
            }
        )
        n_actions = n_slots + 1 if mode == "weights" else n_slots
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_actions,), dtype=np.float32)
        self._day = 0
        self._cash = self.initial_cash
        self._shares = np.zeros(n_slots, dtype=np.float64)

    @property
    def day(self) -> int:
        """Index of the current day in the episode."""
        return self._day

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def shares(self) -> np.ndarray:
        """Shares held per slot (a read-only view)."""
        view = self._shares.view()
        view.flags.writeable = False
        return view

    def portfolio_value(self) -> float:
        """Cash plus holdings at the current day's last known prices."""
        return float(self._cash + self._shares @ self._value_price[self._day])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start the episode on its first day with cash only.

        :param seed: seeds the env's RNG (the dynamics themselves are deterministic).
        :param options: unused, accepted for the gymnasium API.
        """
        super().reset(seed=seed)
        self._day = 0
        self._cash = self.initial_cash
        self._shares = np.zeros(self.episode.n_slots, dtype=np.float64)
        value = self.portfolio_value()
        return self._observation(value), self._info(value, costs=0.0, turnover=0.0)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Trade at today's close, move to the next day and value the portfolio there.

        :param action: [S + 1] scores in weights mode, [S] share fractions of ``hmax`` in shares mode;
            clipped to [-1, 1].
        :return: observation, reward, terminated (next day is the last), truncated (always False), info with
            portfolio_value, cash, costs (paid on today's trades), turnover (traded value / value before)
            and date (the day valued).
        """
        day = self._day
        if day >= self.episode.n_days - 1:
            raise RuntimeError("the episode is over (last day reached); call reset() first")
        action = np.clip(np.asarray(action), -1, 1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} breaks the rule {self.action_space.shape}")
        value_before = self.portfolio_value()
        if self.mode == "weights":
            result = self._rebalance(day, action, value_before)
        else:
            result = self._trade_shares(day, action)
        self._cash = result.cash
        self._day = day + 1
        value_after = self.portfolio_value()
        if self.mode == "weights":
            reward = float(np.log(value_after / value_before))
        else:
            reward = (value_after - value_before) * self.reward_scaling
        terminated = self._day == self.episode.n_days - 1
        info = self._info(value_after, costs=result.costs, turnover=result.traded_value / value_before)
        return self._observation(value_after), reward, terminated, False, info

    def _rebalance(self, day: int, action: np.ndarray, value: float) -> TradeResult:
        holdings = self._shares * self._value_price[day]
        held = self._shares > 0
        locked = held & ~self._priced[day]
        tradable = self.episode.tradable[day]
        sell_only = held & self._priced[day] & ~tradable
        if self._liquidate[day]:
            target = np.zeros(action.size, dtype=np.float64)
            target[-1] = 1.0
        else:
            weight = holdings / value
            target = target_weights(
                action[:-1],
                float(action[-1]),
                tradable,
                np.where(sell_only, weight, 0.0),
                frozen_weight=np.where(locked, weight, 0.0),
                temperature=self.temperature,
            )
        result = rebalance_to_weights(
            self._cash, holdings, target, locked, sell_only, self.buy_cost_pct, self.sell_cost_pct
        )
        price = np.where(self._priced[day], self.episode.close[day], 1.0)
        self._shares = np.where(locked, self._shares, result.positions / price)
        return result

    def _trade_shares(self, day: int, action: np.ndarray) -> TradeResult:
        liquidate = bool(self._liquidate[day])
        orders = np.full(action.size, -self.hmax) if liquidate else (action * self.hmax).astype(int)
        result = finrl_share_trades(
            self._cash,
            self._shares,
            self._trade_price[day],
            orders,
            buyable=self.episode.tradable[day],
            sellable=(self._shares > 0) & self._priced[day],
            buy_cost_pct=self.buy_cost_pct,
            sell_cost_pct=self.sell_cost_pct,
            liquidate=liquidate,
        )
        self._shares = result.positions
        return result

    def _observation(self, value: float) -> dict[str, np.ndarray]:
        day = self._day
        slots = np.empty((self.episode.n_slots, N_SLOT_COLUMNS), dtype=np.float32)
        slots[:, :N_FEATURES] = self.episode.features[day]
        slots[:, COL_TRADABLE] = self.episode.tradable[day]
        slots[:, COL_SELLABLE] = (self._shares > 0) & self._priced[day]
        slots[:, COL_WEIGHT] = self._shares * self._value_price[day] / value
        portfolio = np.array([self._cash / value, self._tradable_fraction[day]], dtype=np.float32)
        return {"slots": slots, "portfolio": np.clip(portfolio, 0.0, 1.0)}

    def _info(self, value: float, costs: float, turnover: float) -> dict[str, Any]:
        return {
            "portfolio_value": value,
            "cash": self._cash,
            "costs": costs,
            "turnover": turnover,
            "date": self.episode.dates[self._day],
        }
