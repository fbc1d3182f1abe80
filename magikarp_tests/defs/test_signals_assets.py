"""The daily cycle runs in-process on real sample closes, a real slot map and real (tiny) PPO models from the
registry: recommendations follow the policy and the threshold rule, the paper portfolio rolls forward in
order across a model switch, re-runs reproduce a day byte for byte, performance is kept incrementally, the
email lands in the outbox and failures raise alerts."""

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.calendar import previous_trading_day, trading_day_window, trading_days
from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.metrics import performance_summary, success_rates
from magikarp_assets.core.notify import read_eml
from magikarp_assets.core.promotion import promote
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.rl.inference import build_observation, infer_target_weights
from magikarp_assets.core.rl.training import load_policy
from magikarp_assets.core.signals import BUY, DEFAULT_EQUAL_WEIGHT_FRACTION, SELL
from magikarp_assets.core.spec import SLOT_ACTIVE, SLOT_ARCHIVE
from magikarp_assets.core.storage import LocalBlobStore
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.partitions import range_tags, trading_day_partitions
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.defs.signals import reporting
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support.world import alert_run_failure, register_tiny_ppo, store_world, tensor_episode
from magikarp_tests.support_smtp import free_port

RUN_DAYS = trading_days("2016-06-01", "2016-06-08")  # 6 sessions
TRAIN_DAYS = trading_day_window(previous_trading_day(RUN_DAYS[0]), 12)
KEYS = [d.strftime("%Y-%m-%d") for d in RUN_DAYS]
LEAVER, LEAVES_ON = "AAPL", RUN_DAYS[2]  # leaves the index: archived, still priced (sell-only)
GAP_TICKER, GAP_DAY = "MSFT", RUN_DAYS[3]  # no bar that session: held but locked
TEMPERATURE = 300.0  # sharp softmax so a barely trained policy concentrates enough to make BUY calls
UPSTREAM = [
    dg.AssetSpec(key, partitions_def=trading_day_partitions)
    for key in (FEATURE_TENSOR, SLOT_MAP, BENCHMARK_PRICES)
]
ASSETS = [*UPSTREAM, signals.paper_trading, reporting.performance_metrics, reporting.daily_report]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Storage holding the run sessions' tensors, slot maps and benchmark prices, and two trained models."""
    root = tmp_path_factory.mktemp("world")
    store = LocalBlobStore(root)
    tensors = store_world(
        store, TRAIN_DAYS.append(RUN_DAYS), RUN_DAYS, leaver=(LEAVER, LEAVES_ON), gap=(GAP_TICKER, GAP_DAY)
    )
    episode = tensor_episode(tensors[: len(TRAIN_DAYS)], TRAIN_DAYS)
    registry = ModelRegistry(store)
    for seed, version in enumerate(("ppo-v1", "ppo-v2"), start=1):
        register_tiny_ppo(registry, episode, version, seed, TEMPERATURE)
    return root


def _make_env(world: Path, folder: Path):
    """A private copy of the world with its resources, instance and outbox."""
    root = folder / "store"
    shutil.copytree(world, root)
    resources = {
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(root)),
        "model_registry": ModelRegistryResource(root=str(root)),
        "notifier": NotifierResource(outbox_dir=str(folder / "outbox")),
    }
    return resources, dg.DagsterInstance.ephemeral(), root, folder / "outbox"


@pytest.fixture
def env(world, tmp_path):
    return _make_env(world, tmp_path)


def _promote(env, version: str) -> None:
    promote(env[0]["model_registry"].registry(), version, "tester", "test", force_reason="tiny test model")


def _run(env, start: str, end: str | None = None, selection=(signals.DAILY_RECOMMENDATIONS,), config=None):
    resources, instance, _, _ = env
    return dg.materialize(
        ASSETS,
        resources=resources,
        instance=instance,
        selection=[*selection, signals.PORTFOLIO_STATE]
        if signals.DAILY_RECOMMENDATIONS in selection
        else selection,
        partition_key=None if end else start,
        tags=range_tags(start, end) if end else None,
        run_config=config,
        raise_on_error=False,
    )


def _read(root: Path, key: dg.AssetKey, partition: str) -> pd.DataFrame:
    return pd.read_parquet(root / key.path[-1] / f"{partition}.parquet")


def _error(result) -> str:
    error = result.get_step_failure_events()[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    return error.message


def test_first_session_serves_the_policy_and_follows_the_threshold_rule(env):
    _promote(env, "ppo-v1")
    result = _run(env, KEYS[0], KEYS[3])
    assert result.success, _error(result)
    root = env[2]
    recs = _read(root, signals.DAILY_RECOMMENDATIONS, KEYS[0])
    # Independently: the policy on the stored tensor for an all-cash book gives the stored targets.
    tensor = PartitionedParquetIOManager(root=str(root)).load_partition(FEATURE_TENSOR, KEYS[0])
    model = load_policy(ModelRegistry(LocalBlobStore(root)).load("ppo-v1", FEATURE_SPEC_HASH), "ppo")
    n_slots = tensor["close"].size
    obs = build_observation(
        tensor["features"], tensor["tradable"], np.zeros(n_slots, bool), np.zeros(n_slots), 1.0
    )
    target = infer_target_weights(model, obs, tensor["tradable"], np.zeros(n_slots), None, TEMPERATURE)
    np.testing.assert_allclose(recs["target_weight"], target[recs["slot"]], rtol=0, atol=1e-15)
    assert (recs["current_weight"] == 0).all() and len(recs) == int(
        (tensor["slot_state"] == SLOT_ACTIVE).sum()
    )
    meta = result.asset_materializations_for_node("paper_trading")
    rec_meta = next(m.metadata for m in meta if m.asset_key == signals.DAILY_RECOMMENDATIONS)
    assert rec_meta["model_version"].value == "ppo-v1" and rec_meta["inference_ms"].value > 0
    assert rec_meta["top_10"].value.count("\n") == 11 and "ticker" in rec_meta["top_10"].value  # 10 rows
    book = _read(root, signals.PORTFOLIO_STATE, KEYS[0])
    assert book["value_before"].iloc[0] == 1_000_000.0
    assert book["value"].iloc[0] == pytest.approx(1_000_000.0 - book["costs"].iloc[0], rel=1e-12)
    n_buy_total = 0
    for key in KEYS[:4]:
        recs = _read(root, signals.DAILY_RECOMMENDATIONS, key)
        delta, action = recs["delta"], recs["action"]
        state = _read(root, SLOT_MAP, key)["state"].to_numpy()[recs["slot"]]
        tradable = recs["price"].notna() & (recs["price"] > 0) & (state == SLOT_ACTIVE)
        threshold = DEFAULT_EQUAL_WEIGHT_FRACTION / int(tradable.sum())  # half an equal-weight position
        assert ((action == BUY) == ((delta > threshold) & tradable)).all()
        assert ((action == SELL) == ((-delta > threshold) & recs["price"].notna())).all()
        n_buy_total += int((action == BUY).sum())
        if key >= LEAVES_ON.strftime("%Y-%m-%d"):  # the archived name is held, never bought, only shrinks
            leaver = recs.set_index("ticker").loc[LEAVER]
            assert leaver["action"] != BUY and leaver["target_weight"] <= leaver["current_weight"] + 1e-15
            slot_map = _read(root, SLOT_MAP, key).set_index("ticker")
            assert slot_map.loc[LEAVER, "state"] == SLOT_ARCHIVE
    gap = _read(root, signals.DAILY_RECOMMENDATIONS, KEYS[3]).set_index("ticker").loc[GAP_TICKER]
    assert (
        gap["action"] == "HOLD"
        and gap["current_weight"] > 0
        and gap["target_weight"] == gap["current_weight"]
    )
    assert n_buy_total > 0 and rec_meta["n_buy"].value == int((recs["action"] == BUY).sum())


def test_no_production_model_fails_clearly_and_the_failure_sensor_alerts(env):
    resources, instance, root, outbox = env
    result = _run(env, KEYS[0])
    assert not result.success
    message = _error(result)
    assert "no production model" in message and "promote_model" in message
    assert not (root / "portfolio_state").exists() and not (root / "daily_recommendations").exists()
    alert_run_failure(result, instance, resources["notifier"])
    (mail_path,) = outbox.glob("*.eml")
    mail = read_eml(mail_path)
    assert (
        mail["Subject"].strip() == f"[TMagikarp CRITICAL] Run failed: __ephemeral_asset_job__ for {KEYS[0]}"
    )
    body = mail.get_body(("plain",)).get_content()
    assert "no production model" in body and "step paper_trading" in body and result.run_id in body


def test_model_switch_carries_holdings_and_a_rerun_reproduces_the_day(env):
    root = env[2]
    _promote(env, "ppo-v1")
    for key in KEYS[:2]:
        assert _run(env, key).success
    stored = {
        k: (root / k.path[-1] / f"{KEYS[1]}.parquet").read_bytes()
        for k in (signals.DAILY_RECOMMENDATIONS, signals.PORTFOLIO_STATE)
    }
    _promote(env, "ppo-v2")
    assert _run(env, KEYS[2]).success
    before = _read(root, signals.PORTFOLIO_STATE, KEYS[1]).set_index("ticker")
    recs = _read(root, signals.DAILY_RECOMMENDATIONS, KEYS[2]).set_index("ticker")
    after = _read(root, signals.PORTFOLIO_STATE, KEYS[2])
    assert set(recs["model_version"]) == set(after["model_version"]) == {"ppo-v2"}
    assert set(before["model_version"]) == {"ppo-v1"} and len(before) > 100
    # The new model starts from yesterday's holdings, valued at today's closes.
    values = before["shares"] * recs.loc[before.index, "price"]
    total = float(values.sum() + before["cash"].iloc[0])
    np.testing.assert_allclose(recs.loc[before.index, "current_weight"], values / total, rtol=1e-12)
    assert after["value_before"].iloc[0] == pytest.approx(total, rel=1e-12)
    # Re-running day 2 after the switch reproduces it (with the version that served it), byte for byte.
    assert _run(env, KEYS[1]).success
    for key, data in stored.items():
        assert (root / key.path[-1] / f"{KEYS[1]}.parquet").read_bytes() == data, key
    # Pinning a version is explicit: the same day with ppo-v2 is a different portfolio.
    pinned = {"ops": {"paper_trading": {"config": {"model_version": "ppo-v2"}}}}
    assert _run(env, KEYS[1], config=pinned).success
    assert (root / "portfolio_state" / f"{KEYS[1]}.parquet").read_bytes() != stored[signals.PORTFOLIO_STATE]


def test_a_session_without_the_previous_portfolio_is_refused(env):
    root = env[2]
    _promote(env, "ppo-v1")
    assert _run(env, KEYS[1]).success  # the portfolio starts on KEYS[1]
    for key, previous in ((KEYS[3], KEYS[2]), (KEYS[0], "2016-05-31")):
        result = _run(env, key)
        assert not result.success
        message = _error(result)
        assert f"previous session {previous}" in message and f"started on {KEYS[1]}" in message, message
        assert "backfill" in message and not (root / "portfolio_state" / f"{key}.parquet").exists()
    assert sorted(p.stem for p in (root / "portfolio_state").glob("*.parquet")) == [KEYS[1]]


TRADE_AND_MEASURE = (signals.DAILY_RECOMMENDATIONS, reporting.PERFORMANCE_METRICS)
SHORT_HORIZONS = {"ops": {"performance_metrics": {"config": {"success_horizons": [1, 2]}}}}


@pytest.mark.slow  # seven runs at 3,600 slots: 7-17 s on 2 shared cores
def test_a_range_run_equals_day_by_day_runs(env, world, tmp_path):
    daily = _make_env(world, tmp_path / "daily")
    for e in (env, daily):
        _promote(e, "ppo-v1")
    assert _run(env, KEYS[0], KEYS[-1], TRADE_AND_MEASURE, SHORT_HORIZONS).success
    for key in KEYS:
        assert _run(daily, key, selection=TRADE_AND_MEASURE, config=SHORT_HORIZONS).success
    for name in ("daily_recommendations", "portfolio_state", "performance_metrics"):
        for key in KEYS:
            ranged, single = (e[2] / name / f"{key}.parquet" for e in (env, daily))
            assert ranged.read_bytes() == single.read_bytes(), (name, key)


def test_performance_kept_incrementally_equals_the_full_history(env):
    root = env[2]
    _promote(env, "ppo-v1")
    assert _run(env, KEYS[0], KEYS[-1], TRADE_AND_MEASURE, SHORT_HORIZONS).success
    metrics = _read(root, reporting.PERFORMANCE_METRICS, KEYS[-1])
    assert metrics["date"].dt.strftime("%Y-%m-%d").tolist() == KEYS
    recs = pd.concat([_read(root, signals.DAILY_RECOMMENDATIONS, k) for k in KEYS], ignore_index=True)
    books = pd.concat([_read(root, signals.PORTFOLIO_STATE, k).iloc[:1] for k in KEYS]).set_index("date")
    bench = pd.concat([_read(root, BENCHMARK_PRICES, k) for k in KEYS])
    qqq = bench[bench["ticker"] == "QQQ"].set_index("date")["adj_close"]
    full = performance_summary(books["value"], qqq, daily_turnover=books["turnover"])
    last = metrics.iloc[-1]
    for name, value in full.items():
        assert last[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name
    assert last["excess_return"] == pytest.approx(
        full["cumulative_return"] - full["benchmark_cumulative_return"]
    )
    prices = recs.pivot(index="date", columns="ticker", values="price")
    rates = success_rates(recs, prices, qqq, KEYS[-1], horizons=(1, 2)).set_index(["horizon", "action"])
    for horizon in (1, 2):
        expected = rates.loc[(horizon, "ALL")]
        assert last[f"n_success_{horizon}d"] == expected["n_success"]
        assert last[f"n_resolved_{horizon}d"] == expected["n_resolved"] > 0
        assert last[f"success_rate_{horizon}d"] == pytest.approx(expected["success_rate"])
    # Each earlier row is what that session's own partition reported (the series only grows).
    earlier = _read(root, reporting.PERFORMANCE_METRICS, KEYS[-2])
    pd.testing.assert_frame_equal(metrics.iloc[:-1], earlier)


def test_daily_report_email_lands_in_the_outbox_or_stays_pending(env, tmp_path):
    resources, instance, _, outbox = env
    _promote(env, "ppo-v1")
    assert _run(env, KEYS[0], KEYS[1], TRADE_AND_MEASURE).success
    result = _run(env, KEYS[1], selection=(reporting.DAILY_REPORT,))
    assert result.success
    (path,) = outbox.glob("*.eml")
    mail = read_eml(path)
    assert mail["Subject"].strip() == f"[TMagikarp INFO] Daily recommendations for {KEYS[1]}"
    images = [part for part in mail.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 2
    text = mail.get_body(("plain",)).get_content()
    assert "Portfolio value" in text and "ppo-v1" in text and "Success rate 30 sessions" in text
    meta = result.asset_materializations_for_node("daily_report")[0].metadata
    assert meta["sent"].value is True and meta["charts"].value == 2
    # An unreachable SMTP server: the run fails, nothing is sent, the message waits in pending/ ...
    failing = NotifierResource(
        transport="smtp", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False,
        outbox_dir=str(tmp_path / "smtp_outbox"), enabled_levels=["info"],
        info_recipients=["team@tmagikarp.test"],
    )  # fmt: skip
    result = dg.materialize(
        ASSETS, resources={**resources, "notifier": failing}, instance=instance,
        selection=[reporting.DAILY_REPORT], partition_key=KEYS[1], raise_on_error=False,
    )  # fmt: skip
    assert not result.success and "smtp delivery to 127.0.0.1" in _error(result)
    # ... and the delivery failure itself is raised through the remaining channel: a local critical alarm.
    kept = sorted(p.parent.name for p in (tmp_path / "smtp_outbox").rglob("*.eml"))
    assert kept == ["alarms", "pending"]
