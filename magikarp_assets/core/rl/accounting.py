"""Portfolio accounting shared by the RL environment and the backtest: valuation, target weights and trades
net of proportional costs, all vectorised over slots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cap on the piecewise-linear solves of the cost-aware rebalance (two are usual; each is a Newton step).
_REBALANCE_MAX_STEPS = 50
# FinRL-order buys are checked in windows of this many names, growing by this factor while fully funded.
_FIRST_BUY_WINDOW = 32
_BUY_WINDOW_GROWTH = 8


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
    sell_only = (cap > 0) & ~tradable if cap.any() else None
    if sell_only is not None and not sell_only.any():
        sell_only = None
    logits = np.array(scores, dtype=np.float64)
    if temperature != 1.0:
        logits *= temperature
    np.copyto(logits, -np.inf, where=~(tradable if sell_only is None else tradable | sell_only))
    cash_logit = float(cash_score) * temperature
    top = max(float(logits.max(initial=-np.inf)), cash_logit)
    logits -= top
    expo = np.exp(logits, out=logits)
    cash_expo = np.exp(cash_logit - top)
    frozen = None if frozen_weight is None else np.asarray(frozen_weight, dtype=np.float64)
    budget = 1.0 if frozen is None else max(1.0 - float(frozen.sum()), 0.0)
    weights = np.empty(expo.size + 1)
    slot_weights = np.multiply(expo, budget / (float(expo.sum()) + cash_expo), out=weights[:-1])
    if sell_only is not None:
        np.minimum(slot_weights, cap, out=slot_weights, where=sell_only)
    if frozen is not None:
        slot_weights += frozen
    weights[-1] = max(1.0 - float(slot_weights.sum()), 0.0)
    return weights


def _solve_post_trade_wealth(
    base: float,
    totals: np.ndarray,
    free_totals: tuple[float, float],
    ceiling: np.ndarray | None,
    buy_cost_pct: float,
    sell_cost_pct: float,
) -> np.ndarray:
    """Post-trade values ``x = min(fractions * W, ceiling)`` at the wealth W solving ``W + costs(W) = base``.

    With ``delta = x - holdings``, ``costs(W) = b * sum(delta+) + s * sum(delta-)``. For fixed sets of buying
    slots (``delta > 0``) and uncapped slots (``fractions * W < ceiling``) the equation is linear,
    ``W + (b + s) * (W * F_buy - H_buy) - s * (W * F_free - H_free) = base`` (``F``/``H``: sums of fractions
    and holdings over a set), and is solved in closed form. Starting from ``W = base`` (at or above the
    root, as costs >= 0), each solve is a Newton step on the convex, increasing, piecewise-linear
    ``W + costs(W)``, so it never passes the root; when the sets at the new ``W`` are those it was solved
    with, it is the root. Both sets are monotone in ``W``, so equal sizes mean equal sets. Usually two
    evaluations: few slots have their buy/sell switch within the costs of ``base``.

    :param totals: float64 [2, S]: the fractions, then the holdings (one matrix-vector product sums both
        over a set).
    :param free_totals: sums of the fractions and of the holdings over all slots.
    """
    rates = buy_cost_pct + sell_cost_pct
    fractions, holdings = totals
    free_fraction, free_holding = free_totals
    wealth, sizes = base, (-1, -1)
    for _ in range(_REBALANCE_MAX_STEPS):
        post = fractions * wealth
        if ceiling is not None:
            uncapped = post < ceiling
            np.minimum(post, ceiling, out=post)
        buying = post > holdings
        now = (int(np.count_nonzero(buying)), int(np.count_nonzero(uncapped)) if ceiling is not None else 0)
        if now == sizes:
            break
        sizes = now
        buy_fraction, buy_holding = totals @ buying
        if ceiling is not None:
            free_fraction, free_holding = totals @ uncapped
        wealth = (base + rates * buy_holding - sell_cost_pct * free_holding) / (
            1.0 + rates * buy_fraction - sell_cost_pct * free_fraction
        )
    return post


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
    ``B' = B - costs(trades(B'))``, a piecewise-linear equation solved exactly (to rounding) by Newton's
    method; costs are then charged on the trades made, so ``cash' + sum(holdings') = V - costs``.
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
    locked, sell_only = np.asarray(locked, dtype=bool), np.asarray(sell_only, dtype=bool)
    any_locked = bool(locked.any())
    totals = np.empty((2, holdings.size))
    fractions, free_holdings = totals
    np.copyto(fractions, target[:-1])
    np.copyto(free_holdings, holdings)
    if any_locked:
        np.copyto(totals, 0.0, where=locked)
    slot_share = float(fractions.sum())
    free_share = slot_share + float(target[-1])
    if free_share <= 0.0:
        return TradeResult(cash=float(cash), positions=holdings.copy(), costs=0.0, traded_value=0.0)
    fractions /= free_share
    ceiling = np.where(sell_only, holdings, np.inf) if sell_only.any() else None
    held = float(free_holdings.sum())
    post = _solve_post_trade_wealth(
        float(cash) + held, totals, (slot_share / free_share, held), ceiling, buy_cost_pct, sell_cost_pct
    )
    delta = post - free_holdings
    bought = float(np.maximum(delta, 0.0).sum())
    sold = -float(np.minimum(delta, 0.0).sum())
    costs = buy_cost_pct * bought + sell_cost_pct * sold
    positions = np.where(locked, holdings, post) if any_locked else post
    return TradeResult(
        cash=float(cash) - (bought - sold) - costs,
        positions=positions,
        costs=costs,
        traded_value=bought + sold,
    )


def _capped_buys(
    cash: float,
    prices: np.ndarray,
    wanted: np.ndarray,
    order: np.ndarray,
    positions: np.ndarray,
    buy_cost_pct: float,
) -> tuple[float, float]:
    """FinRL's buys in ``order``, each ``min(wanted, cash // (price * (1 + cost)))`` with the cash left by
    the earlier ones and the same float operations as FinRL, added to ``positions``; returns the cash left
    and the gross value bought.

    Runs of fully funded buys are found with a sequential running balance (``np.subtract.accumulate``) over
    windows that grow from ``_FIRST_BUY_WINDOW``. A capped buy (or a name that cannot afford one share) is
    done on its own; cash only falls, so the names that cannot afford one share after it never will
    (``cash // unit >= 1`` is exactly ``unit <= cash`` for positive floats) and are dropped. A capped buy
    leaves less cash than one share of that name, so cash at least halves each time and they are few.

    :param order: slots that may be bought, most wanted first.
    """
    unit = prices * (1 + buy_cost_pct)
    gross, candidates, window = 0.0, order, _FIRST_BUY_WINDOW
    while candidates.size:
        first = candidates[0]
        affordable = cash // unit[first]
        if affordable < wanted[first]:
            if affordable:
                positions[first] += affordable
                gross += prices[first] * affordable
                cash = cash - prices[first] * affordable * (1 + buy_cost_pct)
            rest = candidates[1:]
            candidates = rest[unit[rest] <= cash]
            continue
        run = candidates[:window]
        value = prices[run] * wanted[run]
        balance = np.subtract.accumulate(np.concatenate(([cash], value * (1 + buy_cost_pct))))
        short = (balance[:-1] // unit[run] < wanted[run]).nonzero()[0]
        n_funded = int(short[0]) if short.size else run.size
        positions[run[:n_funded]] += wanted[run[:n_funded]]
        gross += float(value[:n_funded].sum())
        cash = balance[n_funded]
        candidates = candidates[n_funded:]
        window *= _BUY_WINDOW_GROWTH
    return float(cash), float(gross)


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
    nothing is bought (FinRL's turbulence rule). Only the names that trade are touched after the sort.

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
    order = np.argsort(actions)
    negative = actions < 0
    sells = order[: int(np.count_nonzero(negative))]
    sells = sells[sellable[sells]]
    sold = shares[sells] if liquidate else np.minimum(-actions[sells], shares[sells])
    sold_value = prices[sells] * sold
    proceeds = sold_value * (1 - sell_cost_pct)
    cash = float(np.add.accumulate(np.concatenate(([cash], proceeds)))[-1])
    positions = shares.copy()
    positions[sells] -= sold
    gross_sold = float(sold_value.sum())
    gross_bought = 0.0
    if not liquidate:
        buys = order[actions.size - int(np.count_nonzero(actions > 0)) :][::-1]
        cash, gross_bought = _capped_buys(cash, prices, actions, buys[buyable[buys]], positions, buy_cost_pct)
    return TradeResult(
        cash=cash,
        positions=positions,
        costs=sell_cost_pct * gross_sold + buy_cost_pct * gross_bought,
        traded_value=gross_sold + gross_bought,
    )
