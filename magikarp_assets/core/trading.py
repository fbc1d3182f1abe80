"""One trading session of a book: mark it to the close, ask a policy for target weights and trade to them
net of costs, the same function for paper trading, backtests and shadow runs so their numbers agree."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from stable_baselines3.common.base_class import BaseAlgorithm

from magikarp_assets.core.portfolio import PortfolioState, RebalanceSummary, apply_targets, slot_weights
from magikarp_assets.core.portfolio import weights_by_ticker as to_ticker_weights
from magikarp_assets.core.registry import Manifest
from magikarp_assets.core.rl.inference import build_observation, infer_target_weights
from magikarp_assets.core.rl.training import Algorithm, load_policy
from magikarp_assets.core.signals import recommend

# Day-level columns stored beside PortfolioState.to_frame(): the price each holding was valued at (today's
# close, else its last known close: tomorrow's fallback), the portfolio's first session and the day's trading.
BOOK_COLUMNS = ["price", "inception", "value_before", "traded_value", "costs", "turnover", "peak_value"]
TENSOR_KEYS = ("features", "tradable", "close", "slot_state", "slot_map_version", "feature_spec_hash")


@dataclass(frozen=True)
class TradingCosts:
    """Proportional costs on value bought and sold (0.001 = 0.1 %)."""

    buy_cost_pct: float = 0.001
    sell_cost_pct: float = 0.001


@dataclass(frozen=True)
class SessionView:
    """What a policy sees of one session: the tensor arrays and the book's weights at today's prices.

    :param day: the session.
    :param tensor: the session's feature_tensor arrays.
    :param current: float64 [S + 1] the book's weights, slots then cash.
    :param sellable: bool [S] held slots with a price today.
    :param sell_only: bool [S] held, priced, not buyable (archived names): they may only shrink.
    :param locked: bool [S] held slots with no price today: they keep their weight.
    """

    day: pd.Timestamp
    tensor: dict[str, np.ndarray]
    current: np.ndarray
    sellable: np.ndarray
    sell_only: np.ndarray
    locked: np.ndarray


# A policy maps a session to float64 [S + 1] target weights (slots then cash, summing to 1).
TargetFunction = Callable[[SessionView], np.ndarray]


@dataclass(frozen=True)
class Policy:
    """Target weights from a version label and a function of the session (a model or a baseline)."""

    version: str
    targets: TargetFunction


def model_policy(version: str, model: BaseAlgorithm, temperature: float) -> Policy:
    """A trained model as a policy: the observation the environment would show it, the targets it would
    trade to.

    :param version: the model version (stamped on recommendations and books).
    :param model: the loaded model.
    :param temperature: the softmax temperature it was trained with.
    """

    def targets(view: SessionView) -> np.ndarray:
        tensor, current = view.tensor, view.current
        tradable = tensor["tradable"].astype(bool)
        obs = build_observation(tensor["features"], tradable, view.sellable, current[:-1], current[-1])
        return infer_target_weights(
            model,
            obs,
            tradable,
            np.where(view.sell_only, current[:-1], 0.0),
            np.where(view.locked, current[:-1], 0.0) if view.locked.any() else None,
            temperature,
        )

    return Policy(version, targets)


def policy_from_artifact(manifest: Manifest, artifact: bytes) -> Policy:
    """A verified artifact as a policy, with the softmax temperature it was trained with.

    :param manifest: the version's manifest.
    :param artifact: its bytes, as returned by ModelRegistry.load (checked before unpickling).
    """
    env_kwargs = dict(manifest.hyper_parameters.get("env_kwargs", {}))
    temperature = float(env_kwargs.get("temperature", 1.0))
    algorithm = cast(Algorithm, manifest.algorithm)
    return model_policy(manifest.version, load_policy(artifact, algorithm), temperature)


def equal_weight_policy(view: SessionView) -> np.ndarray:
    """Equal weight over the session's tradable slots; held names without a price keep their weight,
    everything else (archived names included) is sold.

    :param view: the session.
    """
    tradable = view.tensor["tradable"].astype(bool)
    frozen = np.where(view.locked, view.current[:-1], 0.0)
    budget = max(1.0 - float(frozen.sum()), 0.0)
    n = int(tradable.sum())
    weights = np.zeros(tradable.size + 1)
    weights[:-1] = frozen + (np.where(tradable, budget / n, 0.0) if n else 0.0)
    weights[-1] = max(1.0 - float(weights[:-1].sum()), 0.0)
    return weights


@dataclass(frozen=True)
class Book:
    """A portfolio after a session, with what the next session needs beyond PortfolioState."""

    state: PortfolioState
    last_price: dict[str, float]
    inception: pd.Timestamp
    peak_value: float

    def to_frame(self, value_before: float, traded_value: float, costs: float) -> pd.DataFrame:
        """PortfolioState.to_frame() plus BOOK_COLUMNS, with the session's trading figures.

        :param value_before: the book's value at the session's prices before trading.
        :param traded_value: gross value bought plus sold.
        :param costs: costs paid on those trades.
        """
        frame = self.state.to_frame()
        frame["price"] = frame["ticker"].map(self.last_price).astype(np.float64)
        frame["inception"] = pd.Series([self.inception] * len(frame), dtype="datetime64[ns]")
        frame["value_before"] = value_before
        frame["traded_value"] = traded_value
        frame["costs"] = costs
        frame["turnover"] = traded_value / value_before if value_before > 0 else 0.0
        frame["peak_value"] = self.peak_value
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Book:
        """Rebuild a book stored by :meth:`to_frame`.

        :param frame: one stored book (one portfolio_state partition).
        """
        missing = [c for c in BOOK_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"stored book lacks column(s) {missing}")
        state = PortfolioState.from_frame(frame)
        held = frame[frame["ticker"].isin(list(state.shares))]
        return cls(
            state=state,
            last_price=dict(zip(held["ticker"], held["price"].astype(float), strict=True)),
            inception=pd.Timestamp(frame["inception"].iloc[0]),
            peak_value=float(frame["peak_value"].iloc[0]),
        )


def session_tickers(
    tensor: dict[str, np.ndarray], slot_map: pd.DataFrame, day: pd.Timestamp
) -> tuple[np.ndarray, str]:
    """Tickers aligned on the tensor's slots, after checking both describe the same slot map.

    :param tensor: the session's feature_tensor arrays.
    :param slot_map: the session's slot_map rows (slot, ticker, state, version).
    :param day: the session (named in errors).
    :return: object [S] ticker per slot and the slot-map version.
    """
    rows = slot_map.sort_values("slot", kind="stable")
    label = f"session {day.date()}"
    for key in TENSOR_KEYS:
        if key not in tensor:
            raise KeyError(f"feature_tensor of {label} lacks array {key!r}")
    n_slots = tensor["close"].shape[0]
    if len(rows) != n_slots or not np.array_equal(rows["slot"].to_numpy(), np.arange(n_slots)):
        raise ValueError(f"slot_map of {label} has {len(rows)} rows; the tensor has {n_slots} slots")
    versions = set(rows["version"].astype(str))
    tensor_version = str(tensor["slot_map_version"].item())
    if versions != {tensor_version}:
        raise ValueError(
            f"feature_tensor of {label} was packed on slot map {tensor_version} but slot_map holds "
            f"{sorted(versions)}: re-materialise feature_tensor for that session"
        )
    if not np.array_equal(rows["state"].to_numpy(np.int8), tensor["slot_state"]):
        raise ValueError(f"feature_tensor and slot_map of {label} disagree on slot states")
    return rows["ticker"].to_numpy(object), tensor_version


@dataclass(frozen=True)
class SessionResult:
    """One traded session: the new book and its stored frame, the weights before and after, the trading
    summary and how long the policy took."""

    book: Book
    frame: pd.DataFrame
    current: np.ndarray
    target: np.ndarray
    summary: RebalanceSummary
    inference_ms: float


def rebalance_session(
    book: Book,
    tensor: dict[str, np.ndarray],
    tickers: np.ndarray,
    slot_map_version: str,
    policy: Policy,
    costs: TradingCosts,
    day: pd.Timestamp,
) -> SessionResult:
    """Mark the book to the session's closes, ask the policy for target weights and trade to them at the
    close with the environment's cost maths (:func:`~magikarp_assets.core.portfolio.apply_targets`).

    :param book: the book after the previous session.
    :param tensor: the session's feature_tensor arrays.
    :param tickers: object [S] ticker of each slot ("" for padding), from the session's slot map.
    :param slot_map_version: version of that slot map.
    :param policy: what sets the targets.
    :param costs: proportional trading costs.
    :param day: the session.
    """
    close, tradable = tensor["close"], tensor["tradable"].astype(bool)
    priced = np.isfinite(close) & (close > 0)
    today = {t: float(p) for t, p in zip(tickers[priced], close[priced], strict=True)}
    held_tickers = list(book.state.shares)
    prices = {**{t: book.last_price.get(t, np.nan) for t in held_tickers}, **today}
    current = slot_weights(book.state, tickers, prices, day)
    held = np.isin(tickers, held_tickers)
    locked, sell_only = held & ~priced, held & priced & ~tradable
    view = SessionView(day, tensor, current, held & priced, sell_only, locked)
    started = time.perf_counter()
    target = np.asarray(policy.targets(view), dtype=np.float64)
    inference_ms = (time.perf_counter() - started) * 1000.0
    state, _, summary = apply_targets(
        book.state, to_ticker_weights(target, tickers), prices, costs.buy_cost_pct, costs.sell_cost_pct,
        day, policy.version, slot_map_version, locked=tickers[locked].tolist(),
        sell_only=tickers[sell_only].tolist(),
    )  # fmt: skip
    new_book = Book(
        state, {t: prices[t] for t in state.shares}, book.inception, max(book.peak_value, state.value)
    )
    frame = new_book.to_frame(summary.value_before, summary.traded_value, summary.costs)
    return SessionResult(new_book, frame, current, target, summary, inference_ms)


def trade_day(
    book: Book,
    tensor: dict[str, np.ndarray],
    tickers: np.ndarray,
    slot_map_version: str,
    policy: Policy,
    costs: TradingCosts,
    threshold: float,
    day: pd.Timestamp,
) -> tuple[pd.DataFrame, SessionResult]:
    """One session of paper (or shadow) trading: :func:`rebalance_session` plus the BUY / SELL / HOLD calls
    from the same current and target weights.

    :param book: the book after the previous session.
    :param tensor: the session's feature_tensor arrays.
    :param tickers: object [S] ticker of each slot ("" for padding).
    :param slot_map_version: version of the slot map.
    :param policy: the model serving the session.
    :param costs: proportional trading costs.
    :param threshold: weight change that makes a BUY / SELL call.
    :param day: the session.
    :return: the recommendations and the session's result.
    """
    result = rebalance_session(book, tensor, tickers, slot_map_version, policy, costs, day)
    recs = recommend(
        result.target, result.current, tensor["tradable"].astype(bool), tensor["slot_state"], tickers,
        tensor["close"], policy.version, slot_map_version, day, threshold,
    )  # fmt: skip
    return recs, result
