"""The feature and training assets on the real sample: a backfill equals daily runs byte for byte, tensors
are finite and slot-aligned, and a candidate model trains on tensors and lands in the registry."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.storage import npz_bytes_to_arrays
from magikarp_assets.definitions import build_definitions
from magikarp_assets.defs.features.tensor_asset import load_tensor_window
from magikarp_tests.support.world import FEATURES, materialize_defs

INGEST = ["raw_ohlcv", "ohlcv_quarantine", "benchmark_prices"]
START, WARM_END, END = "2013-02-08", "2013-04-23", "2013-04-30"
DAILY = ["2013-04-24", "2013-04-25", "2013-04-26", "2013-04-29", "2013-04-30"]


def _store(tmp_path_factory, name, monkeypatch):
    root = tmp_path_factory.mktemp(name)
    monkeypatch.setenv("MAGIKARP_DATA_ROOT", str(root))
    defs = build_definitions("local")
    instance = dg.DagsterInstance.ephemeral()
    materialize_defs(defs, instance, ["universe_constituents", "raw_fundamentals"])
    materialize_defs(defs, instance, [*INGEST, "slot_map"], START, END)
    return root, defs, instance


@pytest.mark.slow
def test_backfill_equals_daily_runs_and_a_candidate_trains(tmp_path_factory, monkeypatch):
    a, defs_a, inst_a = _store(tmp_path_factory, "backfill", monkeypatch)
    materialize_defs(defs_a, inst_a, FEATURES, START, END)
    b, defs_b, inst_b = _store(tmp_path_factory, "daily", monkeypatch)
    materialize_defs(defs_b, inst_b, FEATURES, START, WARM_END)
    for day in DAILY:
        materialize_defs(defs_b, inst_b, FEATURES, partition=day)
    for day in DAILY:
        assert (a / "feature_tensor" / f"{day}.npz").read_bytes() == (
            b / "feature_tensor" / f"{day}.npz"
        ).read_bytes()
        assert (a / "stock_features" / f"{day}.parquet").read_bytes() == (
            b / "stock_features" / f"{day}.parquet"
        ).read_bytes()

    tensor = npz_bytes_to_arrays((a / "feature_tensor" / "2013-04-30.npz").read_bytes())
    assert tensor["features"].shape == (3600, 32) and tensor["features"].dtype == np.float32
    assert np.isfinite(tensor["features"]).all()
    slot_map = pd.read_parquet(a / "slot_map" / "2013-04-30.parquet").set_index("slot")
    padding = tensor["slot_state"] == 0
    assert not tensor["tradable"][padding].any() and not tensor["features"][padding].any()
    aapl = int(slot_map.index[slot_map["ticker"] == "AAPL"][0])
    bars = pd.read_parquet(a / "raw_ohlcv" / "2013-04-30.parquet").set_index("ticker")
    assert tensor["tradable"][aapl] and tensor["close"][aapl] == bars.loc["AAPL", "close"]
    assert str(tensor["feature_spec_hash"]) == FEATURE_SPEC_HASH
    # the training loader reads the range concurrently and stacks it in session order
    window = load_tensor_window(defs_a.resources["io_manager"], pd.DatetimeIndex(DAILY))
    for i, day in enumerate(DAILY):
        stored = npz_bytes_to_arrays((a / "feature_tensor" / f"{day}.npz").read_bytes())
        assert np.array_equal(window["features"][i], stored["features"])
        assert window["slot_map_versions"][i] == str(stored["slot_map_version"])

    # A candidate for June 2013: trains on 20 sessions ending before the May backtest month.
    config = {
        "total_timesteps": 64,
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
        "training_sessions": 20,
        "backtest_months": 1,
    }
    result = materialize_defs(
        defs_a,
        inst_a,
        ["candidate_model"],
        partition="2013-06-01",
        run_config={"ops": {"candidate_model": {"config": config}}},
    )
    meta = result.asset_materializations_for_node("candidate_model")[0].metadata
    assert meta["training_window"].value == "2013-04-03..2013-04-30"
    assert meta["backtest_window"].value == "2013-05-01..2013-05-31"
    registry = defs_a.resources["model_registry"].registry()
    manifest = registry.manifest(meta["version"].value)
    assert manifest.feature_spec_hash == FEATURE_SPEC_HASH and manifest.algorithm == "ppo"
    assert registry.load(manifest.version, FEATURE_SPEC_HASH)[:2] == b"PK"  # hash-verified SB3 zip
