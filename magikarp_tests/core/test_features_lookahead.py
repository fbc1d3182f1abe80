"""No look-ahead: nothing dated after day t changes any feature of day t; reports are invisible before their
public date; a ticker joins the cross-section only from the day it entered the universe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.features.spec import FEATURE_NAMES
from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_PADDING
from magikarp_assets.core.sql_models import run_model

DAY = pd.Timestamp("2016-06-15")
LATER = pd.Timestamp("2016-06-24")
MODELS = ("technical_features", "fundamental_features", "stock_features")


@pytest.fixture(scope="module")
def inputs() -> dict[str, pd.DataFrame]:
    """Inputs for DAY through LATER, so the future rows really are in the frames the models read."""
    return sample_feature_inputs(trading_days(DAY, LATER))


@pytest.fixture(scope="module")
def baseline(inputs: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {m: run_model(m, inputs, [DAY]) for m in MODELS}


def _future_changed(inputs: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every input row dated after DAY altered, dropped or added; nothing on or before DAY touched."""
    rng = np.random.default_rng(7)
    raw = inputs["raw_ohlcv"].copy()
    after = raw["date"] > DAY
    for col in ("open", "high", "low", "close", "adj_close", "volume"):
        raw.loc[after, col] = raw.loc[after, col] * rng.uniform(0.5, 2.0, after.sum())
    newcomer = raw[(raw["ticker"] == "AAPL") & after].assign(ticker="ZZNEW")
    raw = raw[~(after & (rng.random(len(raw)) < 0.2))]  # some future bars missing
    raw = pd.concat([raw, newcomer], ignore_index=True)

    fund = inputs["raw_fundamentals"].copy()
    future = fund["public_date"] > DAY
    fund.loc[future, ["revenue", "net_income", "eps", "total_equity"]] *= -3.0
    late = (
        fund[(fund["ticker"] == "AAPL")]
        .iloc[[-1]]
        .assign(  # a late restatement of an old period
            public_date=DAY + pd.Timedelta(days=1), eps=123.0, revenue=1.0
        )
    )
    fund = pd.concat([fund, late], ignore_index=True)

    slots = inputs["slot_map"].copy()
    future_maps = slots["date"] > DAY
    active = future_maps & (slots["state"] == SLOT_ACTIVE)
    slots.loc[active & (slots["slot"] % 3 == 0), "state"] = 2  # future archiving
    # A ticker entering the universe after DAY already sits in DAY's map (a bad map): it must not count.
    pad = slots[(slots["date"] == DAY) & (slots["state"] == SLOT_PADDING)].index[0]
    slots.loc[pad, ["ticker", "state", "first_added", "since"]] = ["ZZNEW", SLOT_ACTIVE, LATER, LATER]
    return {"raw_ohlcv": raw, "raw_fundamentals": fund, "slot_map": slots}


def test_changing_anything_after_day_t_leaves_day_t_unchanged(
    inputs: dict[str, pd.DataFrame], baseline: dict[str, pd.DataFrame]
) -> None:
    changed = _future_changed(inputs)
    assert not changed["raw_ohlcv"].equals(inputs["raw_ohlcv"])
    assert "ZZNEW" not in set(run_model("stock_features", changed, [DAY])["ticker"])
    for model in MODELS:
        after = run_model(model, changed, [DAY])
        pd.testing.assert_frame_equal(after, baseline[model], check_exact=True, obj=model)
    # also when the changed future is computed in the same (backfill) run as DAY
    backfill = run_model("stock_features", changed, [DAY, LATER])
    same_day = backfill[backfill["date"] == DAY].reset_index(drop=True)
    pd.testing.assert_frame_equal(same_day, baseline["stock_features"], check_exact=True)


def test_the_future_is_really_read(
    inputs: dict[str, pd.DataFrame], baseline: dict[str, pd.DataFrame]
) -> None:
    """The same perturbation moved back one session does change day t (so the test above can fail)."""
    shifted = {k: v.copy() for k, v in inputs.items()}
    raw = shifted["raw_ohlcv"]
    raw.loc[raw["date"] == DAY, "close"] *= 1.5
    after = run_model("stock_features", shifted, [DAY])
    assert not after[list(FEATURE_NAMES)].equals(baseline["stock_features"][list(FEATURE_NAMES)])


def test_a_ticker_is_in_the_cross_section_only_from_its_entry_day(inputs: dict[str, pd.DataFrame]) -> None:
    slots = inputs["slot_map"].copy()
    aapl = (slots["ticker"] == "AAPL") & (slots["date"] == DAY)
    slots.loc[aapl, "first_added"] = DAY + pd.Timedelta(days=1)
    out = run_model("stock_features", {**inputs, "slot_map": slots}, [DAY])
    members = (slots["date"] == DAY) & (slots["state"] != SLOT_PADDING)
    assert "AAPL" not in set(out["ticker"]) and len(out) == members.sum() - 1


def test_a_report_is_invisible_before_its_public_date(inputs: dict[str, pd.DataFrame]) -> None:
    fund = inputs["raw_fundamentals"]
    # the sample is annual: add a quarter made public the day after DAY
    quarter = (
        fund[fund["ticker"] == "AAPL"]
        .iloc[[-1]]
        .assign(period_ending=pd.Timestamp("2016-03-26"), eps=2.0, public_date=DAY + pd.Timedelta(days=1))
    )
    changed = {**inputs, "raw_fundamentals": pd.concat([fund, quarter], ignore_index=True)}
    days = [DAY, DAY + pd.offsets.BDay(1)]
    out = run_model("fundamental_features", changed, days).set_index(["date", "ticker"])
    assert out.loc[(DAY, "AAPL"), "eps_ttm"] == 9.28  # FY2015 (public 2015-12-25)
    assert out.loc[(days[1], "AAPL"), "eps_ttm"] == 2.0
    assert out.loc[(days[1], "AAPL"), "public_date"] == DAY + pd.Timedelta(days=1)
    fy2015 = fund[(fund["ticker"] == "AAPL") & (fund["period_ending"] == "2015-09-26")]["public_date"].item()
    edge = run_model("fundamental_features", inputs, ["2015-12-24", "2015-12-28"]).set_index(
        ["date", "ticker"]
    )
    assert edge.loc[(pd.Timestamp("2015-12-24"), "AAPL"), "eps_ttm"] == 6.49  # FY2014 until FY2015 is public
    assert edge.loc[(pd.Timestamp("2015-12-28"), "AAPL"), "eps_ttm"] == 9.28 and fy2015 == pd.Timestamp(
        "2015-12-25"
    )
