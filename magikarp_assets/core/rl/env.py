"""The trading environment the policy learns in: one step is one trading day over the fixed slots, trading
at the day's close net of proportional costs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
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
# With fewer than one slot in this many held, the observation's sellable and weight entries are written
# for the held rows only (the rest are already 0 in the observation block).
_SPARSE_HOLDINGS = 8


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

    @cached_property
    def observation_block(self) -> np.ndarray:
        """float32 [T, S, N_SLOT_COLUMNS], read-only: each day's features and tradable flag, with the sellable
        and weight columns 0. Built on first use and shared by every environment on this episode, so a step
        copies one contiguous day instead of assembling columns (costs T * S * 140 bytes: 127 MB for
        252 days of 3,600 slots).
        """
        block = np.zeros((self.n_days, self.n_slots, N_SLOT_COLUMNS), dtype=np.float32)
        block[:, :, :N_FEATURES] = self.features
        block[:, :, COL_TRADABLE] = self.tradable
        block.flags.writeable = False
        return block


class PortfolioEnv(gym.Env):
    """Daily portfolio environment over S slots; trades happen at each day's close.

    ``mode="weights"``: action = S slot scores + 1 cash score in [-1, 1], turned into target weights by
    :func:`target_weights` and rebalanced by :func:`rebalance_to_weights`; reward ``log(V_{t+1} / V_t)``.
    ``mode="shares"``: FinRL StockTradingEnv semantics (:func:`finrl_share_trades`); reward
    ``(V_{t+1} - V_t) * reward_scaling``. Differences from FinRL: buys only where ``tradable``, sells only
    where held and priced, held names without a price are valued at their last known close, the episode ends
    on the step that reaches the last day, and turbulence on day 0 is used (FinRL resets it to 0).
    Each observation is a fresh array: the day's row of :attr:`MarketEpisode.observation_block` plus the
    book's sellable and weight columns.
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
        self._last_day = n_days - 1
        self._dates = list(episode.dates)
        self._priced = np.isfinite(episode.close)
        self._unpriced = ~self._priced
        self._priced_not_buyable = self._priced & ~episode.tradable
        self._value_price = np.nan_to_num(last_known_prices(episode.close), nan=0.0)
        self._share_price = np.where(self._priced, episode.close, 1.0)
        self._tradable_fraction = episode.tradable.mean(axis=1)
        self._no_cap = np.zeros(n_slots)
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
        self._value = self.initial_cash

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
        self._value = self.portfolio_value()
        return self._observation(self._value), self._info(self._value, costs=0.0, turnover=0.0)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Trade at today's close, move to the next day and value the portfolio there.

        :param action: [S + 1] scores in weights mode, [S] share fractions of ``hmax`` in shares mode;
            clipped to [-1, 1].
        :return: observation, reward, terminated (next day is the last), truncated (always False), info with
            portfolio_value, cash, costs (paid on today's trades), turnover (traded value / value before)
            and date (the day valued).
        """
        day = self._day
        if day >= self._last_day:
            raise RuntimeError("the episode is over (last day reached); call reset() first")
        action = np.minimum(np.maximum(np.asarray(action), -1), 1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} breaks the rule {self.action_space.shape}")
        value_before = self._value
        if self.mode == "weights":
            result = self._rebalance(day, action, value_before)
        else:
            result = self._trade_shares(day, action)
        self._cash = result.cash
        self._day = day + 1
        self._value = value_after = self.portfolio_value()
        if self.mode == "weights":
            reward = float(np.log(value_after / value_before))
        else:
            reward = (value_after - value_before) * self.reward_scaling
        info = self._info(value_after, costs=result.costs, turnover=result.traded_value / value_before)
        return self._observation(value_after), reward, self._day == self._last_day, False, info

    def _rebalance(self, day: int, action: np.ndarray, value: float) -> TradeResult:
        holdings = self._shares * self._value_price[day]
        held = self._shares > 0
        locked = held & self._unpriced[day]
        sell_only = held & self._priced_not_buyable[day]
        any_locked, any_sell_only = bool(locked.any()), bool(sell_only.any())
        if self._liquidate[day]:
            target = np.zeros(action.size, dtype=np.float64)
            target[-1] = 1.0
        else:
            cap, frozen = self._no_cap, None
            if any_locked or any_sell_only:
                weight = holdings / value
                cap = np.where(sell_only, weight, 0.0)
                frozen = np.where(locked, weight, 0.0) if any_locked else None
            target = target_weights(
                action[:-1], float(action[-1]), self.episode.tradable[day], cap, frozen, self.temperature
            )
        result = rebalance_to_weights(
            self._cash, holdings, target, locked, sell_only, self.buy_cost_pct, self.sell_cost_pct
        )
        shares = result.positions / self._share_price[day]
        self._shares = np.where(locked, self._shares, shares) if any_locked else shares
        return result

    def _trade_shares(self, day: int, action: np.ndarray) -> TradeResult:
        liquidate = bool(self._liquidate[day])
        orders = np.full(action.size, -self.hmax) if liquidate else (action * self.hmax).astype(int)
        result = finrl_share_trades(
            self._cash,
            self._shares,
            self.episode.close[day],
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
        """A fresh copy every step: callers may keep it (SB3's DummyVecEnv keeps the terminal observation by
        reference while it resets, and rollout code stacks observations), so no buffer is reused."""
        day, shares = self._day, self._shares
        slots = self.episode.observation_block[day].copy()
        held = shares > 0
        if np.count_nonzero(held) * _SPARSE_HOLDINGS < held.size:  # few held (shares mode): write their rows
            rows = held.nonzero()[0]
            slots[rows, COL_SELLABLE] = self._priced[day][rows]
            slots[rows, COL_WEIGHT] = shares[rows] * self._value_price[day][rows] / value
        else:  # strided column writes
            np.logical_and(held, self._priced[day], out=slots[:, COL_SELLABLE])
            np.divide(shares * self._value_price[day], value, out=slots[:, COL_WEIGHT])
        cash_share = min(max(self._cash / value, 0.0), 1.0)
        return {"slots": slots, "portfolio": np.array([cash_share, self._tradable_fraction[day]], np.float32)}

    def _info(self, value: float, costs: float, turnover: float) -> dict[str, Any]:
        return {
            "portfolio_value": value,
            "cash": self._cash,
            "costs": costs,
            "turnover": turnover,
            "date": self._dates[self._day],
        }
