"""Portfolio accounting shared by the RL environment and the backtest: valuation, target weights and trades
net of proportional costs, all vectorised over slots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Newton solve of the cost-aware rebalance: stop once the wealth equation is met to this fraction of the
# tradable wealth (the solve is exact on each linear piece, so this is rounding noise), or after this many steps.
_REBALANCE_REL_TOL = 1e-15
_REBALANCE_MAX_STEPS = 50


@dataclass(frozen=True)
class TradeResult:
    """Portfolio after one day's trades at the day's close.

    :param cash: cash after trades and costs.
    :param positions: float64 [S]; shares held (share trades) or value held (weight rebalance).
    :param costs: proportional costs paid on the trades made.
    :param traded_value: gross value bought plus sold, before costs.
    """

    cash: float
    positions: np.ndarray
    costs: float
    traded_value: float


def check_cost_rates(buy_cost_pct: float, sell_cost_pct: float) -> None:
    """Reject cost rates outside [0, 1).

    :param buy_cost_pct: proportional cost of buying, as a fraction of the value bought.
    :param sell_cost_pct: proportional cost of selling, as a fraction of the value sold.
    """
    for name, rate in (("buy_cost_pct", buy_cost_pct), ("sell_cost_pct", sell_cost_pct)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name}={rate!r} breaks the rule 0 <= cost rate < 1")


def last_known_prices(close: np.ndarray) -> np.ndarray:
    """Forward-fill prices along time so a held name with no price today keeps its last known value.

    Uses only rows up to each day (no look-ahead). Slots never priced so far stay NaN.

    :param close: float64 [T, S] closes, NaN where there is no price.
    :return: float64 [T, S] last known close on or before each day.
    """
    t_idx = np.arange(close.shape[0])[:, None]
    last_row = np.maximum.accumulate(np.where(np.isfinite(close), t_idx, -1), axis=0)
    filled = close[np.maximum(last_row, 0), np.arange(close.shape[1])[None, :]]
    return np.where(last_row >= 0, filled, np.nan)


def portfolio_value(cash: float, shares: np.ndarray, prices: np.ndarray) -> float:
    """Cash plus holdings, valuing only slots actually held (a NaN price on an empty slot is ignored).

    :param cash: cash balance.
    :param shares: float64 [S] shares held.
    :param prices: float64 [S] valuation prices (last known close).
    """
    held = shares != 0
    return float(cash + shares[held] @ prices[held])


def target_weights(
    scores: np.ndarray,
    cash_score: float,
    tradable: np.ndarray,
    sellable_only_cap: np.ndarray,
    frozen_weight: np.ndarray | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Turn policy scores into target portfolio weights (slots then cash), summing to 1.

    Softmax of ``score * temperature`` over tradable slots, sell-only slots and cash. A sell-only slot
    (held, priced today, not buyable: an archived name) is capped at its current weight so it can only
    shrink; the capped excess goes to cash. Frozen slots (held but with no price today) keep their current
    weight and the softmax shares out the rest. Every other slot gets exactly 0.

    :param scores: float [S] slot scores.
    :param cash_score: score of cash.
    :param tradable: bool [S] slots that may be bought today.
    :param sellable_only_cap: float [S] current weight of sell-only slots, 0 elsewhere.
    :param frozen_weight: float [S] current weight of held slots that cannot trade today, 0 elsewhere.
    :param temperature: multiplies scores before the softmax (higher = more concentrated).
    :return: float64 [S + 1] target weights, the last entry being cash.
    """
    tradable = np.asarray(tradable, dtype=bool)
    cap = np.asarray(sellable_only_cap, dtype=np.float64)
    sell_only = (cap > 0) & ~tradable
    logits = np.where(tradable | sell_only, np.asarray(scores, dtype=np.float64) * temperature, -np.inf)
    cash_logit = float(cash_score) * temperature
    top = max(float(logits.max(initial=-np.inf)), cash_logit)
    expo = np.exp(logits - top)
    cash_expo = np.exp(cash_logit - top)
    frozen = np.zeros_like(cap) if frozen_weight is None else np.asarray(frozen_weight, dtype=np.float64)
    budget = max(1.0 - float(frozen.sum()), 0.0)
    weights = expo * (budget / (float(expo.sum()) + cash_expo))
    weights = np.where(sell_only, np.minimum(weights, cap), weights) + frozen
    return np.append(weights, max(1.0 - float(weights.sum()), 0.0))


def _proportional_costs(delta: np.ndarray, buy_cost_pct: float, sell_cost_pct: float) -> float:
    return float(buy_cost_pct * np.maximum(delta, 0.0).sum() - sell_cost_pct * np.minimum(delta, 0.0).sum())


def rebalance_to_weights(
    cash: float,
    holdings: np.ndarray,
    target: np.ndarray,
    locked: np.ndarray,
    sell_only: np.ndarray,
    buy_cost_pct: float,
    sell_cost_pct: float,
) -> TradeResult:
    """Rebalance holdings to target weights at today's prices, net of proportional costs, solved exactly.

    Locked slots (no price today) do not trade; the other slots and cash share the tradable wealth
    ``B = V - locked value`` in proportion to their targets. Post-trade wealth ``B'`` solves
    ``B' = B - costs(trades(B'))``, a contraction (factor <= max cost rate) iterated to machine precision;
    costs are then charged exactly on the trades made, so ``cash' + sum(holdings') = V - costs``.
    Sell-only slots never grow: their post-trade value is capped at today's value.

    :param cash: cash before trades.
    :param holdings: float64 [S] value held per slot at today's valuation prices.
    :param target: float64 [S + 1] target weights from :func:`target_weights` (last entry cash).
    :param locked: bool [S] slots that cannot trade today.
    :param sell_only: bool [S] slots that may only be sold.
    :param buy_cost_pct: cost rate on value bought.
    :param sell_cost_pct: cost rate on value sold.
    :return: TradeResult whose ``positions`` are the post-trade values per slot.
    """
    check_cost_rates(buy_cost_pct, sell_cost_pct)
    holdings = np.asarray(holdings, dtype=np.float64)
    slot_target = np.where(locked, 0.0, np.asarray(target[:-1], dtype=np.float64))
    free_share = float(slot_target.sum()) + float(target[-1])
    if free_share <= 0.0:
        return TradeResult(cash=float(cash), positions=holdings.copy(), costs=0.0, traded_value=0.0)
    fractions = slot_target / free_share
    ceiling = np.where(sell_only, holdings, np.inf)
    base = float(cash) + float(holdings[~locked].sum())

    def post_trade(wealth: float) -> np.ndarray:
        return np.where(locked, holdings, np.minimum(fractions * wealth, ceiling))

    wealth = base
    for _ in range(_REBALANCE_MAX_PASSES):
        new_wealth = base - _proportional_costs(post_trade(wealth) - holdings, buy_cost_pct, sell_cost_pct)
        converged = abs(new_wealth - wealth) <= _REBALANCE_REL_TOL * abs(base)
        wealth = new_wealth
        if converged:
            break
    new_holdings = post_trade(wealth)
    delta = new_holdings - holdings
    costs = _proportional_costs(delta, buy_cost_pct, sell_cost_pct)
    new_cash = float(cash) - float(delta.sum()) - costs
    return TradeResult(
        cash=new_cash, positions=new_holdings, costs=costs, traded_value=float(np.abs(delta).sum())
    )


def _capped_buys(cash: float, price: np.ndarray, wanted: np.ndarray, buy_cost_pct: float) -> np.ndarray:
    """Shares bought in order, each capped by the cash left after the earlier buys (FinRL's rule).

    FinRL buys ``min(wanted, cash // (price * (1 + cost)))`` one name after another. Runs of fully funded
    buys are found at once with a sequential running balance (``np.subtract.accumulate``, the same float
    operations FinRL performs); only a capped buy starts a new pass, and names that cannot afford even one
    share are skipped in bulk. A capped buy leaves less cash than one share of that name, so passes are few.
    """
    unit = price * (1 + buy_cost_pct)
    bought = np.zeros_like(price)
    start = 0
    while start < price.size:
        full_cost = price[start:] * wanted[start:] * (1 + buy_cost_pct)
        balance = np.subtract.accumulate(np.concatenate(([cash], full_cost)))
        affordable = balance[:-1] // unit[start:]
        short = np.flatnonzero(affordable < wanted[start:])
        if short.size == 0:
            bought[start:] = wanted[start:]
            break
        capped = start + int(short[0])
        bought[start:capped] = wanted[start:capped]
        bought[capped] = affordable[short[0]]
        cash = balance[short[0]] - price[capped] * bought[capped] * (1 + buy_cost_pct)
        reachable = np.flatnonzero(cash // unit[capped + 1 :] >= 1)
        start = capped + 1 + int(reachable[0]) if reachable.size else price.size
    return bought


def finrl_share_trades(
    cash: float,
    shares: np.ndarray,
    prices: np.ndarray,
    actions: np.ndarray,
    buyable: np.ndarray,
    sellable: np.ndarray,
    buy_cost_pct: float,
    sell_cost_pct: float,
    liquidate: bool = False,
) -> TradeResult:
    """FinRL StockTradingEnv's share trades for one day, vectorised and in FinRL's exact order.

    ``np.argsort(actions)`` fixes the order: sells from the most negative action, each ``min(-action,
    shares)``, then buys from the most positive, each ``min(action, cash // (price * (1 + buy_cost)))`` with
    the cash left by earlier buys. Sold value is credited at ``price * n * (1 - sell_cost)`` and bought value
    debited at ``price * n * (1 + buy_cost)``. With ``liquidate`` every sellable position is sold whole and
    nothing is bought (FinRL's turbulence rule).

    :param cash: cash before trades.
    :param shares: float64 [S] shares held.
    :param prices: float64 [S] today's closes (any value where neither buyable nor sellable).
    :param actions: int [S] desired share changes (FinRL's ``(action * hmax).astype(int)``).
    :param buyable: bool [S] slots that may be bought today.
    :param sellable: bool [S] slots that may be sold today (held and priced).
    :param buy_cost_pct: cost rate on value bought.
    :param sell_cost_pct: cost rate on value sold.
    :param liquidate: sell every sellable position in full and buy nothing.
    :return: TradeResult whose ``positions`` are the post-trade shares.
    """
    check_cost_rates(buy_cost_pct, sell_cost_pct)
    actions = np.asarray(actions)
    prices = np.where(buyable | sellable, prices, 0.0)
    order = np.argsort(actions)
    sell_order = order[: int(np.count_nonzero(actions < 0))]
    wanted_sell = shares if liquidate else np.minimum(-actions, shares)
    sold = np.where(sellable & (actions < 0), wanted_sell, 0.0)
    proceeds = prices[sell_order] * sold[sell_order] * (1 - sell_cost_pct)
    cash = float(np.add.accumulate(np.concatenate(([cash], proceeds)))[-1])
    bought = np.zeros_like(prices)
    if not liquidate:
        buy_order = order[::-1][: int(np.count_nonzero(actions > 0))]
        buy_order = buy_order[buyable[buy_order]]
        bought[buy_order] = _capped_buys(cash, prices[buy_order], actions[buy_order], buy_cost_pct)
        spent = prices[buy_order] * bought[buy_order] * (1 + buy_cost_pct)
        cash = float(np.subtract.accumulate(np.concatenate(([cash], spent)))[-1])
    gross_sold = float((prices * sold).sum())
    gross_bought = float((prices * bought).sum())
    return TradeResult(
        cash=cash,
        positions=shares - sold + bought,
        costs=sell_cost_pct * gross_sold + buy_cost_pct * gross_bought,
        traded_value=gross_sold + gross_bought,
    )
