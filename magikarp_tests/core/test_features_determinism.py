"""A backfill gives the same tensors as daily runs, byte for byte: each day's features depend only on its own
window, whatever history the run holds and however many days it computes (exact sums, finite windows)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import FIRST_TRADING_DAY, trading_days
from magikarp_assets.core.features.inputs import sample_feature_inputs, sample_raw_ohlcv
from magikarp_assets.core.features.tensor import STACKED_KEYS, pack_day
from magikarp_assets.core.sql_models import (
    input_window,
    load_macros,
    load_models,
    required_dates,
    run_model,
    topological_order,
)

# 60 sessions around DHR's and O's quarantined 2016-01-12 bars; FTV and WLTW list inside the history.
DAYS = trading_days("2015-12-01", "2016-02-26")
TICKERS = [
    "AAPL",
    "DHR",
    "O",
    "ES",
    "ICE",
    "BMY",
    "ORCL",
    "WLTW",
    "KHC",
    "PYPL",
    "HPE",
    "CSRA",
    "BRK-B",
    "MSFT",
    "XOM",
    "JPM",
    "NFLX",
    "GOOGL",
    "AMZN",
    "LNT",
    "CHD",
    "SPG",
    "A",
    "T",
    "KO",
    "PFE",
    "GE",
    "F",
    "NVDA",
    "AMD",
]
UNPARTITIONED = {"raw_fundamentals"}


def daily_runs(inputs: dict[str, pd.DataFrame], days: pd.DatetimeIndex) -> dict[pd.Timestamp, pd.DataFrame]:
    """stock_features as the daily assets produce it: every model runs once per session, reading only the
    stored partitions of its window [t - lookback, t] (raw_fundamentals whole), upstream first."""
    models = load_models()
    need = required_dates("stock_features", days, models)
    stored: dict[str, dict[pd.Timestamp, pd.DataFrame]] = {}
    for name in (m for m in topological_order(models) if m in need):
        model, stored[name] = models[name], {}
        for day in need[name]:
            window = set(input_window(model, day))
            given = {}
            for ref in model.refs:
                if ref in stored:
                    given[ref] = pd.concat([frame for d, frame in stored[ref].items() if d in window])
                elif ref in UNPARTITIONED:
                    given[ref] = inputs[ref]
                else:
                    given[ref] = inputs[ref][inputs[ref]["date"].isin(window)]
            stored[name][day] = run_model(name, given, [day])
    return stored["stock_features"]


def _tensors(features: pd.DataFrame, slot_maps: pd.DataFrame, day: pd.Timestamp) -> dict[str, np.ndarray]:
    rows = features[features["date"] == day] if "date" in features else features
    return pack_day(rows, slot_maps[slot_maps["date"] == day])


def _assert_same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray], day: pd.Timestamp) -> None:
    for key in (*STACKED_KEYS, "slot_map_version", "feature_spec_hash"):
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), f"{day.date()} {key}"


@pytest.mark.slow
def test_backfill_of_60_days_equals_60_daily_runs_byte_for_byte() -> None:
    inputs = sample_feature_inputs(DAYS, TICKERS)
    # The backfill reads the whole history from the first session: more than any daily window holds.
    history = {**inputs, "raw_ohlcv": sample_raw_ohlcv(FIRST_TRADING_DAY, DAYS[-1], TICKERS)}
    backfill = run_model("stock_features", history, DAYS)
    daily = daily_runs(inputs, DAYS)
    assert sorted(daily) == list(DAYS)
    gaps = 0
    for day in DAYS:
        one = daily[day].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            backfill[backfill["date"] == day].reset_index(drop=True),
            one,
            check_exact=True,
            obj=str(day.date()),
        )
        _assert_same_bytes(
            _tensors(backfill, inputs["slot_map"], day), _tensors(one, inputs["slot_map"], day), day
        )
        gaps += int((~one["valid"]).sum())
    assert gaps >= 2  # DHR and O on 2016-01-12: missing bars are part of what is compared


def test_whole_universe_backfill_equals_single_day_runs() -> None:
    days = trading_days("2016-06-01", "2016-06-15")
    inputs = sample_feature_inputs(days)
    backfill = run_model("stock_features", inputs, days)
    for day in days[[0, 7, -1]]:
        alone = {
            **inputs,
            "raw_ohlcv": inputs["raw_ohlcv"][
                inputs["raw_ohlcv"]["date"].isin(
                    required_dates("stock_features", [day], load_models())["raw_ohlcv"]
                )
            ],
        }
        one = run_model("stock_features", alone, [day])
        _assert_same_bytes(
            _tensors(backfill, inputs["slot_map"], day), _tensors(one, inputs["slot_map"], day), day
        )


def test_a_float_window_sum_would_not_be_deterministic() -> None:
    """Why the SQL sums exactly: DuckDB's float SUM over the same window differs with the partition start."""
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 3, 600) * rng.choice([-1.0, 1.0], 600)
    con = duckdb.connect()
    con.execute(load_macros()["fixed_point.sql"])
    float_sums, exact_sums = set(), set()
    for start in range(0, 300, 7):
        con.register("frame", pd.DataFrame({"i": np.arange(start, 600), "x": values[start:]}))
        row = con.execute(
            "SELECT sum(x) OVER w, from_fixed(sum(to_fixed(x)) OVER w) FROM frame "
            "WINDOW w AS (ORDER BY i ROWS 199 PRECEDING) ORDER BY i DESC LIMIT 1"
        ).fetchall()[0]
        float_sums.add(row[0])
        exact_sums.add(row[1])
    assert len(float_sums) > 1 and len(exact_sums) == 1
