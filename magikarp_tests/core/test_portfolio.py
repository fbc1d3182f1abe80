"""The paper portfolio trades like the RL environment to the cent, conserves value, carries holdings across
model changes and refuses out-of-order days and unusable prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.portfolio import (
    OutOfOrderError,
    PortfolioPriceError,
    PortfolioState,
    apply_targets,
    initial_portfolio,
    mark_to_market,
    slot_weights,
    weights_by_ticker,
)
from magikarp_assets.core.rl import MarketEpisode, PortfolioEnv, last_known_prices, target_weights
from magikarp_assets.core.spec import N_FEATURES, SLOT_ACTIVE, SLOT_ARCHIVE

D0, D1, D2 = "2016-03-01", "2016-03-02", "2016-03-03"


def _state(cash: float, shares: dict[str, float], date: str = D0) -> PortfolioState:
    return PortfolioState(pd.Timestamp(date), cash, shares, 0.0, "m-old", "sm-old")


def test_buy_cost_matches_hand_computation() -> None:
    # 1000 cash, target 50 % in AAA at 10, 1 % costs. Post-trade wealth W solves W = 1000 - 0.01 * 0.5 * W,
    # so W = 1000 / 1.005 = 995.0248756...; AAA gets 0.5 * W = 497.5124378 (49.75124378 shares), the cost is
    # 0.01 * 497.5124378 = 4.975124378 and cash keeps 1000 - 497.5124378 - 4.975124378 = 497.5124378.
    state = initial_portfolio(1000.0, D0)
    new, trades, summary = apply_targets(state, {"AAA": 0.5}, {"AAA": 10.0}, 0.01, 0.01, D1, "m", "sm")
    wealth = 1000 / 1.005
    assert new.shares == {"AAA": pytest.approx(wealth / 20)}
    assert new.cash == pytest.approx(wealth / 2, abs=1e-9)
    assert summary.costs == pytest.approx(0.005 * wealth, abs=1e-9)
    assert summary.value_after == pytest.approx(wealth, abs=1e-9)
    assert summary.turnover == pytest.approx(0.5 * wealth / 1000)
    row = trades.iloc[0]
    assert (row["ticker"], row["side"], row["shares_before"]) == ("AAA", "BUY", 0.0)
    assert row["cost"] == pytest.approx(4.975124378, abs=1e-8)
    assert row["gross_value"] == pytest.approx(497.5124378, abs=1e-7)


def test_sell_cost_matches_hand_computation() -> None:
    # 100 AAA at 10 and no cash, target 50 %: W = 1000 - 0.01 * (1000 - 0.5 * W), so W = 990 / 0.995 =
    # 994.9748744; AAA keeps 497.4874372, 502.5125628 is sold for a cost of 5.025125628.
    state = _state(0.0, {"AAA": 100.0})
    new, trades, summary = apply_targets(state, {"AAA": 0.5}, {"AAA": 10.0}, 0.01, 0.01, D1, "m", "sm")
    assert new.shares["AAA"] == pytest.approx(49.74874372, abs=1e-8)
    assert summary.costs == pytest.approx(5.025125628, abs=1e-8)
    assert new.cash == pytest.approx(497.4874372, abs=1e-7)
    assert trades["side"].tolist() == ["SELL"]
    assert trades["shares_traded"].iloc[0] == pytest.approx(-50.25125628, abs=1e-8)


def test_holdings_carry_across_a_model_switch() -> None:
    # 10 AAA @ 25 + 10 BBB @ 50 + 250 cash = 1000. The new model (new slot map, AAA now in another slot)
    # keeps AAA at 25 %, drops BBB and buys CCC at 50 %: AAA must not trade at all.
    state = _state(250.0, {"AAA": 10.0, "BBB": 10.0})
    prices = {"AAA": 25.0, "BBB": 50.0, "CCC": 100.0}
    new, trades, summary = apply_targets(
        state, {"AAA": 0.25, "CCC": 0.5}, prices, 0.0, 0.0, D1, "m-new", "sm-new"
    )
    assert new.shares == {"AAA": 10.0, "CCC": 5.0}
    assert new.cash == 250.0
    assert sorted(zip(trades["ticker"], trades["side"], strict=True)) == [("BBB", "SELL"), ("CCC", "BUY")]
    assert (new.model_version, new.slot_map_version) == ("m-new", "sm-new")
    assert summary.value_before == summary.value_after == 1000.0


def test_out_of_order_days_are_refused_naming_both_dates() -> None:
    state = _state(1000.0, {}, date=D1)
    for day in (D1, D0):
        with pytest.raises(OutOfOrderError, match=rf"{day}.*{D1}.*previous day's state"):
            apply_targets(state, {}, {}, 0.0, 0.0, day, "m", "sm")
    with pytest.raises(OutOfOrderError, match=D0):
        mark_to_market(state, {}, D0)
    new, _, _ = apply_targets(state, {}, {}, 0.0, 0.0, D2, "m", "sm")
    with pytest.raises(OutOfOrderError):  # applying the same day twice
        apply_targets(new, {}, {}, 0.0, 0.0, D2, "m", "sm")


def test_applying_from_the_same_state_twice_gives_identical_results() -> None:
    state = _state(300.0, {"AAA": 7.0, "BBB": 3.5})
    args = ({"BBB": 0.3, "CCC": 0.4}, {"AAA": 11.0, "BBB": 43.0, "CCC": 7.5}, 0.001, 0.002, D1, "m", "sm")
    first, first_trades, first_summary = apply_targets(state, *args)
    second, second_trades, second_summary = apply_targets(state, *args)
    assert state.shares == {"AAA": 7.0, "BBB": 3.5} and state.cash == 300.0  # input untouched
    pd.testing.assert_frame_equal(first.to_frame(), second.to_frame())
    pd.testing.assert_frame_equal(first_trades, second_trades)
    assert first_summary == second_summary


@pytest.mark.parametrize("price", [np.nan, np.inf, -1.0, 0.0, None])
def test_unusable_price_of_a_held_ticker_is_refused(price: float | None) -> None:
    state = _state(100.0, {"AAA": 1.0, "BBB": 2.0})
    prices = {"AAA": 10.0} if price is None else {"AAA": 10.0, "BBB": price}
    with pytest.raises(PortfolioPriceError, match=r"2016-03-02.*BBB"):
        apply_targets(state, {}, prices, 0.0, 0.0, D1, "m", "sm")
    with pytest.raises(PortfolioPriceError, match=r"2016-03-02.*BBB"):
        mark_to_market(state, prices, D1)


def test_bad_targets_and_costs_are_refused() -> None:
    state = initial_portfolio(100.0, D0)
    with pytest.raises(ValueError, match="sum to"):
        apply_targets(state, {"AAA": 0.7, "BBB": 0.4}, {"AAA": 1.0, "BBB": 1.0}, 0.0, 0.0, D1, "m", "sm")
    with pytest.raises(ValueError, match="finite and >= 0"):
        apply_targets(state, {"AAA": np.nan}, {"AAA": 1.0}, 0.0, 0.0, D1, "m", "sm")
    with pytest.raises(ValueError, match="sell_cost_pct"):
        apply_targets(state, {}, {}, 0.0, 1.5, D1, "m", "sm")
    with pytest.raises(ValueError, match="not an NYSE trading day"):
        apply_targets(state, {}, {}, 0.0, 0.0, "2016-03-05", "m", "sm")


def test_locked_names_keep_their_shares_and_sell_only_names_never_grow() -> None:
    state = _state(500.0, {"AAA": 3.0, "DDD": 5.0})
    prices = {"AAA": 0.1, "DDD": 20.0, "CCC": 10.0}  # 3 * 0.1 / 0.1 != 3 in floats: shares kept, not rebuilt
    new, trades, _ = apply_targets(
        state,
        {"AAA": 0.0, "DDD": 0.5, "CCC": 0.4},
        prices,
        0.001,
        0.001,
        D1,
        "m",
        "sm",
        locked={"AAA"},
        sell_only={"DDD"},
    )
    assert new.shares["AAA"] == 3.0 and "AAA" not in set(trades["ticker"])
    assert new.shares["DDD"] == 5.0  # wanted to grow, capped at today's value
    assert trades["ticker"].tolist() == ["CCC"]


@settings(max_examples=150, deadline=None)
@given(
    cash=st.floats(0.0, 1e7),
    shares=st.lists(st.floats(0.0, 1e4), min_size=4, max_size=4),
    prices=st.lists(st.floats(0.01, 5e3), min_size=4, max_size=4),
    raw_targets=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    buy_cost=st.floats(0.0, 0.05),
    sell_cost=st.floats(0.0, 0.05),
)
def test_value_is_conserved_net_of_costs(
    cash: float,
    shares: list[float],
    prices: list[float],
    raw_targets: list[float],
    buy_cost: float,
    sell_cost: float,
) -> None:
    names = ["AAA", "BBB", "CCC", "DDD"]
    state = _state(cash, {t: n for t, n in zip(names, shares, strict=True) if n > 0})
    assume(cash + sum(n * p for n, p in zip(shares, prices, strict=True)) > 0)
    total = sum(raw_targets) or 1.0
    targets = {t: w / total for t, w in zip(names, raw_targets[:4], strict=True)}  # the 5th is cash's
    new, trades, summary = apply_targets(
        state, targets, dict(zip(names, prices, strict=True)), buy_cost, sell_cost, D1, "m", "sm"
    )
    scale = max(summary.value_before, 1.0)
    assert summary.value_before == pytest.approx(summary.value_after + summary.costs, abs=1e-9 * scale)
    assert trades["cost"].sum() == pytest.approx(summary.costs, abs=1e-9 * scale)
    assert new.cash >= -1e-9 * scale
    assert mark_to_market(new, dict(zip(names, prices, strict=True)), D1).value == pytest.approx(
        new.value, abs=1e-9 * scale
    )


def test_frame_round_trip_and_refusals() -> None:
    state = PortfolioState(pd.Timestamp(D1), 12.5, {"BBB": 2.0, "AAA": 1.5}, 100.0, "m", "sm")
    frame = state.to_frame()
    assert frame["ticker"].tolist() == ["AAA", "BBB"]
    assert PortfolioState.from_frame(frame) == state
    empty = initial_portfolio(1000.0, D0, "m", "sm")
    assert PortfolioState.from_frame(empty.to_frame()) == empty
    with pytest.raises(ValueError, match="one cash per portfolio"):
        PortfolioState.from_frame(frame.assign(cash=[1.0, 2.0]))
    with pytest.raises(ValueError, match="one row per ticker"):
        PortfolioState.from_frame(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="shares > 0"):
        PortfolioState(pd.Timestamp(D1), 1.0, {"AAA": -1.0}, 1.0)


def test_slot_weights_and_weights_by_ticker() -> None:
    state = _state(500.0, {"AAA": 10.0, "DDD": 5.0})
    tickers = np.array(["DDD", "", "AAA", "CCC"], dtype=object)
    weights = slot_weights(state, tickers, {"AAA": 30.0, "DDD": 40.0}, D1)
    np.testing.assert_allclose(weights, [0.2, 0.0, 0.3, 0.0, 0.5])
    assert weights_by_ticker(weights, tickers) == pytest.approx({"DDD": 0.2, "AAA": 0.3})
    with pytest.raises(ValueError, match=r"\['DDD'\] have no slot"):
        slot_weights(state, np.array(["AAA", "CCC"], dtype=object), {"AAA": 30.0, "DDD": 40.0}, D1)
    with pytest.raises(ValueError, match="slot 1, which has no ticker"):
        weights_by_ticker(np.array([0.2, 0.1, 0.3, 0.0, 0.4]), tickers)


def test_paper_portfolio_matches_the_environment_to_the_cent() -> None:
    """Same policy actions, day by day: the env's slot book and the paper ticker book hold the same."""
    n_slots, n_days = 6, 12
    rng = np.random.default_rng(11)
    dates = trading_days("2016-03-01", "2016-04-30")[:n_days]
    close = 40.0 * np.exp(np.cumsum(rng.normal(0, 0.03, (n_days, n_slots)), axis=0))
    state = np.full((n_days, n_slots), SLOT_ACTIVE, dtype=np.int8)
    state[5:, 4] = SLOT_ARCHIVE  # archived from day 5: sell-only
    close[3:7, 2] = np.nan  # a gap: locked while held
    tradable = (state == SLOT_ACTIVE) & np.isfinite(close)
    features = rng.normal(size=(n_days, n_slots, N_FEATURES)).astype(np.float32)
    env = PortfolioEnv(
        MarketEpisode(features, close, tradable, state, dates),
        buy_cost_pct=0.001,
        sell_cost_pct=0.002,
        temperature=3.0,
    )
    env.reset(seed=0)
    tickers = np.array([f"T{i}" for i in range(n_slots)], dtype=object)
    marks = last_known_prices(close)
    paper = initial_portfolio(env.cash, "2016-02-29")
    locked_days = sell_only_days = 0
    for day in range(n_days - 1):
        action = rng.uniform(-1, 1, n_slots + 1).astype(np.float32)
        if day < 5:  # hold slot 2 into its price gap and slot 4 into its archiving
            action[[2, 4]] = 1.0
        prices = {t: float(p) for t, p in zip(tickers, marks[day], strict=True) if np.isfinite(p)}
        weight = slot_weights(paper, tickers, prices, dates[day])[:-1]
        held, priced = weight > 0, np.isfinite(close[day])
        locked, sell_only = held & ~priced, held & priced & ~tradable[day]
        target = target_weights(
            action[:-1],
            action[-1],
            tradable[day],
            np.where(sell_only, weight, 0.0),
            np.where(locked, weight, 0.0),
            temperature=3.0,
        )
        locked_days, sell_only_days = locked_days + locked.any(), sell_only_days + sell_only.any()
        paper, _, summary = apply_targets(
            paper,
            weights_by_ticker(target, tickers),
            prices,
            0.001,
            0.002,
            dates[day],
            "m",
            "sm",
            locked=set(tickers[locked]),
            sell_only=set(tickers[sell_only]),
        )
        _, _, _, _, info = env.step(action)
        assert info["costs"] == pytest.approx(summary.costs, abs=0.005)
        assert paper.cash == pytest.approx(env.cash, abs=0.005)
        for slot, ticker in enumerate(tickers):
            assert paper.shares.get(ticker, 0.0) == pytest.approx(env.shares[slot], abs=1e-6)
        next_prices = {t: float(p) for t, p in zip(tickers, marks[day + 1], strict=True) if np.isfinite(p)}
        marked = mark_to_market(paper, next_prices, dates[day + 1])
        assert marked.value == pytest.approx(info["portfolio_value"], abs=0.005)
    assert locked_days and sell_only_days  # both constrained cases were exercised
