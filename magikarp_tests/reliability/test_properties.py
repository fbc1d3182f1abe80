"""Property-based tests of the core against hostile but schema-valid input: the feature tensor stays finite
and masked, slots never move under dirty spellings, the portfolio conserves value net of costs over many
sessions, and recommendations follow their rules."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.features.tensor import pack_day
from magikarp_assets.core.portfolio import apply_targets, initial_portfolio, mark_to_market
from magikarp_assets.core.quality import validate_raw_ohlcv
from magikarp_assets.core.signals import BUY, HOLD, SELL, recommend
from magikarp_assets.core.slots import SlotMap, update_slot_map
from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING
from magikarp_assets.core.sql_models import run_model

DAY = pd.Timestamp("2016-06-15")
NAMES = ["AAPL", "JNJ", "KO", "MSFT", "XOM"]
PRICES = ["open", "high", "low", "close"]


@pytest.fixture(scope="module")
def real_inputs() -> dict[str, pd.DataFrame]:
    return sample_feature_inputs([DAY], tickers=NAMES)


ticker_damage = st.fixed_dictionaries(
    {
        "split": st.sampled_from([1.0, 0.5, 2.0, 1 / 3, 10.0, 0.01]),  # unadjusted split from a random day
        "scale": st.sampled_from([1.0, 1e-4, 1e4]),  # penny stock or huge nominal price
        "flat": st.integers(0, 300),  # last n bars frozen at one price (a halted or illiquid name)
        "zero_volume": st.floats(0.0, 1.0),  # share of bars with no trades
        "gaps": st.floats(0.0, 0.6),  # share of bars missing
        "no_bar_today": st.booleans(),
        "short_history": st.booleans(),  # listed a few sessions ago
    }
)


def _damage(bars: pd.DataFrame, how: dict, rng: np.random.Generator) -> pd.DataFrame:
    bars = bars.sort_values("date").reset_index(drop=True).copy()
    n = len(bars)
    factor = np.where(np.arange(n) >= rng.integers(0, n), how["split"], 1.0) * how["scale"]
    bars[PRICES] = bars[PRICES].mul(factor, axis=0)
    bars["adj_close"] = np.nan
    if how["flat"]:
        bars.loc[bars.index[-how["flat"] :], PRICES] = float(bars["close"].iloc[-1])
    bars.loc[rng.random(n) < how["zero_volume"], "volume"] = 0.0
    keep = rng.random(n) >= how["gaps"]
    if how["short_history"]:
        keep &= np.arange(n) >= n - int(rng.integers(1, 8))
    if how["no_bar_today"]:
        keep &= bars["date"].to_numpy() != DAY.to_datetime64()
    return bars[keep]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(ticker_damage, min_size=len(NAMES), max_size=len(NAMES)), seed=st.integers(0, 2**31))
def test_feature_tensor_is_finite_and_masked_whatever_the_clean_bars_look_like(real_inputs, damage, seed):
    rng = np.random.default_rng(seed)
    raw = real_inputs["raw_ohlcv"]
    bars = pd.concat(
        [_damage(raw[raw.ticker == t], how, rng) for t, how in zip(NAMES, damage, strict=True)],
        ignore_index=True,
    ).sort_values(["date", "ticker"], ignore_index=True)
    validate_raw_ohlcv(bars.assign(suspect_return=False))  # still what ingestion lets through
    inputs = {**real_inputs, "raw_ohlcv": bars}
    features = run_model("stock_features", inputs, [DAY])
    slot_map = real_inputs["slot_map"].drop(columns="date")
    tensor = pack_day(features, slot_map)

    assert tensor["features"].dtype == np.float32 and np.isfinite(tensor["features"]).all()
    tickers = slot_map.sort_values("slot")["ticker"].to_numpy()
    state = tensor["slot_state"]
    today = set(bars.loc[bars["date"] == DAY, "ticker"])
    priced_today = np.isin(tickers, list(today))
    assert (tensor["tradable"] == (priced_today & (state == SLOT_ACTIVE))).all()
    assert not tensor["features"][state == SLOT_PADDING].any()
    assert np.isnan(tensor["close"][~priced_today]).all()
    assert (tensor["close"][priced_today] > 0).all()


def _spellings(ticker: str) -> st.SearchStrategy[str]:
    variants = {ticker, ticker.lower(), f" {ticker} ", ticker.replace("-", "."), ticker.replace("-", "/")}
    return st.sampled_from(sorted(variants))


POOL = ["AAPL", "BRK-B", "BF-B", "MSFT", "XOM", "KO", "HEI-A", "GOOGL", "T", "F", "LEN-B", "ZION"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sets(st.sampled_from(POOL), max_size=len(POOL)).flatmap(
            lambda names: st.tuples(*(_spellings(n) for n in sorted(names)))
        ),
        min_size=1,
        max_size=10,
    )
)
def test_slots_never_move_whatever_the_spelling(universes: list[tuple[str, ...]]) -> None:
    current, slot_of = SlotMap.empty(), {}
    for i, spelled in enumerate(universes):
        current = update_slot_map(current, list(spelled), dt.date(2020, 1, 1) + dt.timedelta(days=i))
        current.validate()
        canonical = {s.strip().upper().replace(".", "-").replace("/", "-") for s in spelled}
        assert set(current.tickers(SLOT_ACTIVE)) == canonical
        for ticker in current.tickers(SLOT_ACTIVE) + current.tickers(SLOT_ARCHIVE):
            assert slot_of.setdefault(ticker, current.slot_of(ticker)) == current.slot_of(ticker)


SESSIONS = trading_days("2016-06-01", "2016-06-30")
BOOK = ["AAA", "BBB", "CCC", "DDD", "EEE"]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.fixed_dictionaries(
            {
                "moves": st.lists(st.floats(0.5, 2.0), min_size=len(BOOK), max_size=len(BOOK)),
                "targets": st.lists(st.floats(0.0, 1.0), min_size=len(BOOK) + 1, max_size=len(BOOK) + 1),
                "locked": st.sets(st.sampled_from(BOOK), max_size=2),
                "sell_only": st.sets(st.sampled_from(BOOK), max_size=2),
            }
        ),
        min_size=1,
        max_size=12,
    ),
    costs=st.tuples(st.floats(0.0, 0.01), st.floats(0.0, 0.01)),
)
def test_portfolio_value_is_conserved_net_of_costs_over_many_sessions(steps, costs) -> None:
    state = initial_portfolio(1_000_000.0, "2016-05-31")
    prices = dict.fromkeys(BOOK, 100.0)
    for day, step in zip(SESSIONS, steps, strict=False):
        prices = {t: p * m for (t, p), m in zip(prices.items(), step["moves"], strict=True)}
        marked = mark_to_market(state, prices, day)
        total = sum(step["targets"]) or 1.0
        targets = {t: w / total for t, w in zip(BOOK, step["targets"][:-1], strict=True)}
        locked = {t for t in step["locked"] if t in state.shares}
        new, trades, summary = apply_targets(
            state, targets, prices, *costs, day, "m", "sm", locked=locked, sell_only=step["sell_only"]
        )
        scale = max(summary.value_before, 1.0)
        assert summary.value_before == pytest.approx(marked.value, rel=1e-12, abs=1e-9)
        assert summary.value_before == pytest.approx(summary.value_after + summary.costs, abs=1e-9 * scale)
        assert summary.costs >= 0 and new.cash >= -1e-9 * scale
        assert all(n > 0 for n in new.shares.values())
        for ticker in locked:
            assert new.shares.get(ticker) == state.shares[ticker]
        for ticker in step["sell_only"]:
            assert new.shares.get(ticker, 0.0) <= state.shares.get(ticker, 0.0) + 1e-9
        assert not set(trades["ticker"]) & locked
        state = new
    final = mark_to_market(state, prices, state.date).value
    assert final == pytest.approx(state.value)


@st.composite
def slot_arrays(draw):
    n = draw(st.integers(1, 16))
    state = np.array(draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)), dtype=np.int8)
    has_price = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    close = np.where(has_price & (state != SLOT_PADDING), 50.0, np.nan)
    tradable = (
        (state == SLOT_ACTIVE) & has_price & np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    )
    tickers = np.array([f"T{i}" if s != SLOT_PADDING else "" for i, s in enumerate(state)], dtype=object)

    def weights():
        raw = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n + 1, max_size=n + 1)))
        raw[:-1][state == SLOT_PADDING] = 0.0
        raw[-1] += 1e-3
        return raw / raw.sum()

    threshold = draw(st.floats(0.001, 0.2))
    return weights(), weights(), tradable, state, tickers, close, threshold


@settings(max_examples=200, deadline=None)
@given(slot_arrays())
def test_recommendations_follow_their_rules(arrays) -> None:
    target, current, tradable, state, tickers, close, threshold = arrays
    recs = recommend(target, current, tradable, state, tickers, close, "m", "sm", "2016-06-15", threshold)
    slots = recs["slot"].to_numpy()
    assert not (state[slots] == SLOT_PADDING).any()
    expected = np.flatnonzero(
        (state == SLOT_ACTIVE) | ((state != SLOT_PADDING) & ((current[:-1] > 0) | (target[:-1] > 0)))
    )
    assert sorted(slots) == expected.tolist()
    assert np.allclose(recs["delta"], recs["target_weight"] - recs["current_weight"])
    buy, sell, hold = (recs["action"] == a for a in (BUY, SELL, HOLD))
    assert (buy | sell | hold).all()
    assert tradable[slots[buy]].all() and (recs.loc[buy, "delta"] > threshold).all()
    assert (recs.loc[sell, "price"] > 0).all() and (recs.loc[sell, "delta"] < -threshold).all()
    would_buy = (recs["delta"] > threshold) & tradable[slots]
    would_sell = (recs["delta"] < -threshold) & (recs["price"] > 0)
    assert not (hold & (would_buy | would_sell)).any()
    assert recs["confidence"].between(0.0, 1.0).all()
    assert recs["rank"].tolist() == list(range(1, len(recs) + 1))
    assert recs["target_weight"].is_monotonic_decreasing
