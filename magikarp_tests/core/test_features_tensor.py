"""The feature spec, the cross-sectional normalisation and the 3,600-slot tensor: finite everywhere, padding
zero and untradable, tradable only for active slots with a bar that day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.features.inputs import sample_feature_inputs, slot_membership_frame
from magikarp_assets.core.features.spec import (
    FEATURE_NAMES,
    FEATURE_SPEC_HASH,
    FEATURES,
    FUNDAMENTAL_FEATURES,
    TECHNICAL_FEATURES,
    feature_spec_hash,
    sql_texts,
)
from magikarp_assets.core.features.tensor import TensorPackError, pack_day, stack_tensors
from magikarp_assets.core.spec import N_FEATURES, N_SLOTS, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING
from magikarp_assets.core.sql_models import run_model

GAP_DAY = pd.Timestamp("2016-01-12")  # DHR and O have no clean bar that day
NEXT_DAY = pd.Timestamp("2016-01-13")


@pytest.fixture(scope="module")
def inputs() -> dict[str, pd.DataFrame]:
    inputs = sample_feature_inputs([GAP_DAY, NEXT_DAY])
    slots = inputs["slot_map"]
    slots.loc[slots["ticker"] == "XOM", "state"] = SLOT_ARCHIVE  # an archived name still gets features
    return inputs


@pytest.fixture(scope="module")
def features(inputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return run_model("stock_features", inputs, [GAP_DAY, NEXT_DAY])


def _day(frame: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    return frame[frame["date"] == day].reset_index(drop=True)


def test_spec_defines_32_features_once_in_groups() -> None:
    assert len(FEATURES) == N_FEATURES and [f.index for f in FEATURES] == list(range(N_FEATURES))
    groups = pd.Series([f.group for f in FEATURES]).value_counts().to_dict()
    assert groups == {"technical": 15, "fundamental": 10, "temporal": 2, "padding": 5}
    assert all(f.description and f.normalisation for f in FEATURES)
    variants = " ".join(f.description for f in FEATURES if f.group == "technical")
    assert all(word in variants for word in ("Cutler", "simple moving averages", "Wilder"))


def test_sql_outputs_follow_the_spec_order(inputs: dict[str, pd.DataFrame], features: pd.DataFrame) -> None:
    assert list(features.columns[-N_FEATURES:]) == list(FEATURE_NAMES)
    assert list(features.columns[:8]) == [
        "date",
        "ticker",
        "slot",
        "state",
        "close",
        "last_close",
        "valid",
        "n_missing",
    ]
    tech = run_model("technical_features", inputs, [GAP_DAY])
    fund = run_model("fundamental_features", inputs, [GAP_DAY])
    assert tuple(c for c in tech.columns if c in FEATURE_NAMES) == TECHNICAL_FEATURES
    assert tuple(c for c in fund.columns if c in FEATURE_NAMES) == FUNDAMENTAL_FEATURES


def test_spec_hash_covers_the_sql() -> None:
    texts = sql_texts()
    assert feature_spec_hash(texts) == FEATURE_SPEC_HASH
    assert {"stock_features.sql", "technical_features.sql", "macros/fixed_point.sql"} <= set(texts)
    edited = {
        **texts,
        "technical_features.sql": texts["technical_features.sql"].replace("lag(close, 63)", "lag(close, 62)"),
    }
    assert feature_spec_hash(edited) != FEATURE_SPEC_HASH


def test_normalisation_is_the_documented_robust_z(
    inputs: dict[str, pd.DataFrame], features: pd.DataFrame
) -> None:
    raw = run_model("technical_features", inputs, [GAP_DAY]).set_index("ticker")
    day = _day(features, GAP_DAY).set_index("ticker")
    for name in ("ret_1d", "volatility_21d", "cci_20"):
        x = raw[name].reindex(day.index)
        q1, q2, q3 = np.nanquantile(x, [0.25, 0.5, 0.75])
        expected = ((x - q2) / ((q3 - q1) / 1.349)).clip(-3, 3).div(3).fillna(0.0)
        assert day[name].dtype == np.float32  # the tensor's type: half a float32 step near 1 is 6e-8
        np.testing.assert_allclose(day[name], expected, rtol=0, atol=6e-8, err_msg=name)
    values = day[list(FEATURE_NAMES)].to_numpy()
    assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
    assert (day["tenure"] > -1).all() and set(day["slot_state"]) == {1.0, -1.0}


def test_day_tensor_masks_and_missing_bars(inputs: dict[str, pd.DataFrame], features: pd.DataFrame) -> None:
    slots = inputs["slot_map"][inputs["slot_map"]["date"] == GAP_DAY]
    t = pack_day(_day(features, GAP_DAY), slots)
    assert t["features"].shape == (N_SLOTS, N_FEATURES) and t["features"].dtype == np.float32
    assert t["tradable"].dtype == bool and t["close"].dtype == np.float64 and t["slot_state"].dtype == np.int8
    assert np.isfinite(t["features"]).all()
    padding = t["slot_state"] == SLOT_PADDING
    members = int(
        (slots["state"] != SLOT_PADDING).sum()
    )  # 496: FTV, EVHC, UA (as today's ticker), HLT list later
    assert (
        padding.sum() == N_SLOTS - members
        and not t["features"][padding].any()
        and not t["tradable"][padding].any()
    )
    slot_of = dict(zip(slots["ticker"], slots["slot"], strict=True))
    for ticker in ("DHR", "O"):  # no bar today: features from the repeated bar, but no price and not tradable
        s = slot_of[ticker]
        assert not t["tradable"][s] and np.isnan(t["close"][s]) and t["features"][s].any()
    xom = slot_of["XOM"]
    assert t["slot_state"][xom] == SLOT_ARCHIVE and not t["tradable"][xom] and t["close"][xom] > 0
    active_priced = (t["slot_state"] == SLOT_ACTIVE) & np.isfinite(t["close"])
    assert np.array_equal(t["tradable"], active_priced) and t["tradable"].sum() == members - 3
    assert (
        str(t["slot_map_version"]) == slots["version"].iloc[0]
        and str(t["feature_spec_hash"]) == FEATURE_SPEC_HASH
    )


def test_no_nan_even_without_fundamentals_or_bars(inputs: dict[str, pd.DataFrame]) -> None:
    raw = inputs["raw_ohlcv"]
    starved = {
        "raw_ohlcv": raw[~(raw["ticker"].isin(["AAPL", "MSFT"]) & (raw["date"] > "2015-12-01"))],
        "raw_fundamentals": inputs["raw_fundamentals"].iloc[:0],
        "slot_map": inputs["slot_map"],
    }
    day = run_model("stock_features", starved, [GAP_DAY])
    assert day.set_index("ticker").loc[["AAPL", "MSFT"], "n_missing"].eq(25).all()
    assert (day[list(FUNDAMENTAL_FEATURES)] == 0).all().all()
    t = pack_day(day, starved["slot_map"][starved["slot_map"]["date"] == GAP_DAY])
    assert np.isfinite(t["features"]).all() and np.isfinite(t["close"][t["tradable"]]).all()


def test_pack_day_refuses_rows_that_disagree_with_the_slot_map(
    inputs: dict[str, pd.DataFrame], features: pd.DataFrame
) -> None:
    slots = inputs["slot_map"][inputs["slot_map"]["date"] == GAP_DAY]
    day = _day(features, GAP_DAY)
    with pytest.raises(TensorPackError, match=r"disagree with the slot map .* AAPL"):
        pack_day(day.assign(slot=day["slot"].where(day["ticker"] != "AAPL", N_SLOTS - 1)), slots)
    with pytest.raises(TensorPackError, match="twice"):
        pack_day(pd.concat([day, day.iloc[[0]]]), slots)
    with pytest.raises(TensorPackError, match="non-finite features for ABT"):
        pack_day(day.assign(ret_1d=day["ret_1d"].where(day["ticker"] != "ABT", np.nan)), slots)
    with pytest.raises(TensorPackError, match="each slot"):
        pack_day(day, slots.iloc[:-1])


def test_stack_tensors_gives_training_arrays(inputs: dict[str, pd.DataFrame], features: pd.DataFrame) -> None:
    maps = inputs["slot_map"]
    days = [pack_day(_day(features, d), maps[maps["date"] == d]) for d in (GAP_DAY, NEXT_DAY)]
    stacked = stack_tensors(days)
    assert stacked["features"].shape == (2, N_SLOTS, N_FEATURES) and stacked["tradable"].shape == (2, N_SLOTS)
    assert stacked["close"].shape == (2, N_SLOTS) and stacked["slot_state"].dtype == np.int8
    assert list(stacked["slot_map_versions"]) == [str(d["slot_map_version"]) for d in days]
    members = int((maps[maps["date"] == NEXT_DAY]["state"] != SLOT_PADDING).sum())
    assert stacked["tradable"][1].sum() == members - 1  # DHR and O trade again; XOM stays archived
    with pytest.raises(TensorPackError, match="feature specs"):
        stack_tensors([days[0], {**days[1], "feature_spec_hash": np.array("other")}])
    with pytest.raises(TensorPackError, match="no day tensors"):
        stack_tensors([])


def test_slot_membership_frame_repeats_one_slot_table_per_day() -> None:
    table = pd.DataFrame({"ticker": ["A", "B"], "slot": [0, 7], "state": [1, 2], "since": ["2015-01-02"] * 2})
    out = slot_membership_frame(table, ["2016-06-14", "2016-06-15"])
    assert list(out.columns) == ["date", "ticker", "slot", "state", "since"] and len(out) == 4
    assert out.groupby("date")["slot"].apply(list).tolist() == [[0, 7], [0, 7]]
    with pytest.raises(ValueError, match="repeats slot 7"):
        slot_membership_frame(table.assign(slot=7), ["2016-06-15"])
    with pytest.raises(ValueError, match="lacks column"):
        slot_membership_frame(table.drop(columns="since"), ["2016-06-15"])
