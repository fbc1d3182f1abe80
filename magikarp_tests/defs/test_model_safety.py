"""Model safety on the real bundled sample, through Dagster: a small candidate is trained, passes the
backtest gate, shadows production for 7 sessions, is approved and serves, the paper portfolio carries over,
and an injected crash rolls it back automatically with a critical email. Gates refuse bad candidates unless
forced (recorded), and a refused production artifact falls back to the previous approved version."""

import datetime as dt
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.backtest import run_policy
from magikarp_assets.core.calendar import previous_trading_day, trading_days
from magikarp_assets.core.features.spec import FEATURE_SPEC_HASH
from magikarp_assets.core.notify import read_eml
from magikarp_assets.core.promotion import read_pointer
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.core.rl.policy import POLICY_VERSION
from magikarp_assets.core.rl.training import train_policy
from magikarp_assets.core.storage import LocalBlobStore
from magikarp_assets.core.trading import Book, TradingCosts, policy_from_artifact
from magikarp_assets.core.windows import model_windows
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.models import assets as models
from magikarp_assets.defs.models import backtest, production, shadow
from magikarp_assets.defs.models.common import benchmark_series, load_sessions
from magikarp_assets.defs.partitions import range_tags, trading_day_partitions
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.defs.signals import reporting
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.model_world import build_world, crash_closes

MONTH = "2016-09-01"
TRAINING_SESSIONS, BACKTEST_MONTHS = 10, 1
WINDOWS = model_windows(MONTH, TRAINING_SESSIONS, BACKTEST_MONTHS)
SHADOW_DAYS = trading_days("2016-09-01", "2016-09-12")
START = previous_trading_day(SHADOW_DAYS[0])  # the paper portfolio's first session
LIVE = trading_days("2016-09-13", "2016-09-15")
K = lambda day: day.strftime("%Y-%m-%d")  # noqa: E731
UPSTREAM = [
    dg.AssetSpec(key, partitions_def=trading_day_partitions)
    for key in (FEATURE_TENSOR, SLOT_MAP, BENCHMARK_PRICES)
]
ASSETS = [
    *UPSTREAM,
    models.candidate_model,
    backtest.backtest_report,
    signals.paper_trading,
    reporting.performance_metrics,
    shadow.shadow_trading,
    shadow.shadow_report,
    production.model_health,
    production.production_model,
]
TINY = {"algorithm": "ppo", "total_timesteps": 16, "n_steps": 16, "batch_size": 16, "n_epochs": 1}
LOOSE = {"sharpe_margin": 100.0, "max_drawdown": 0.5, "max_turnover": 2.0}
TRADE = (signals.DAILY_RECOMMENDATIONS, signals.PORTFOLIO_STATE, reporting.PERFORMANCE_METRICS)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Tensors, slot maps and benchmarks from the training window to the last live session, and a
    production model ``prod-v1`` (registered, not promoted) trained on the same window as the candidate."""
    root = tmp_path_factory.mktemp("model_world")
    days = trading_days(WINDOWS.training[0], LIVE[-1])
    build_world(root, days)
    io = PartitionedParquetIOManager(root=str(root))
    sessions = load_sessions(io, WINDOWS.training)
    episode = MarketEpisode(
        **{
            k: np.stack([s.tensor[k] for s in sessions])
            for k in ("features", "close", "tradable", "slot_state")
        },
        dates=WINDOWS.training,
    )
    hyper = {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "env_kwargs": {"temperature": 300.0}}
    result = train_policy(episode, "ppo", 16, 1, hyper)
    ModelRegistry(LocalBlobStore(root)).register(
        result.model_bytes,
        {
            "version": "prod-v1",
            "algorithm": "ppo",
            "hyper_parameters": hyper,
            "training_window": (WINDOWS.training[0].date(), WINDOWS.training[-1].date()),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": "sm",
            "metrics": {},
        },
    )
    return root


@pytest.fixture
def env(world, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(world, root)
    resources = {
        "io_manager": PartitionedParquetIOManager(root=str(root)),
        "model_registry": ModelRegistryResource(root=str(root)),
        "notifier": NotifierResource(outbox_dir=str(tmp_path / "outbox")),
    }
    return resources, dg.DagsterInstance.ephemeral(), root, tmp_path / "outbox"


def _materialize(env, selection, partition=None, days=None, config=None):
    resources, instance, _, _ = env
    return dg.materialize(
        ASSETS,
        resources=resources,
        instance=instance,
        selection=list(selection),
        partition_key=partition,
        tags=range_tags(K(days[0]), K(days[-1])) if days is not None else None,
        run_config=config,
        raise_on_error=False,
    )


def _job(env, job: dg.JobDefinition, op: str, config: dict):
    resources, instance, _, _ = env
    return job.execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def _error(result) -> str:
    error = result.get_step_failure_events()[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    return error.message


def _registry(env) -> ModelRegistry:
    return env[0]["model_registry"].registry()


def _load(env, key: dg.AssetKey, partition: str) -> pd.DataFrame:
    return env[0]["io_manager"].load_partition(key, partition)


def _check(result, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _bootstrap(env) -> None:
    result = _job(
        env,
        production.promote_model,
        "promote",
        {
            "version": "prod-v1",
            "approver": "ops",
            "note": "bootstrap",
            "force": True,
            "force_reason": "first model, nothing to compare with",
        },
    )
    assert result.success, _error(result)


def _gate_config(name: str, **values) -> dict:
    return {"ops": {name: {"config": values}}}


@pytest.mark.slow  # trains, backtests 3 policies over a month and trades 16 sessions at 3,600 slots
def test_candidate_goes_from_training_to_production_and_is_rolled_back_when_it_degrades(env):
    resources, instance, root, outbox = env
    registry = _registry(env)
    _bootstrap(env)
    trained = _materialize(
        env,
        [models.CANDIDATE_MODEL],
        MONTH,
        config=_gate_config(
            "candidate_model", **TINY, training_sessions=TRAINING_SESSIONS, backtest_months=BACKTEST_MONTHS
        ),
    )
    assert trained.success, _error(trained)
    candidate = backtest.candidate_of_month(instance, MONTH)

    # Backtest gate: strictly out of sample, beside production, equal weight and QQQ on the same days.
    tested = _materialize(
        env,
        [backtest.BACKTEST_REPORT],
        MONTH,
        config=_gate_config("backtest_report", backtest_months=BACKTEST_MONTHS, **LOOSE),
    )
    assert tested.success, _error(tested)
    gate = _check(tested, backtest.CHECK_BACKTEST_GATE)
    assert gate.passed and "Sharpe >= production model prod-v1" in gate.metadata["reasons"].value
    report = _load(env, backtest.BACKTEST_REPORT, MONTH)
    assert set(report["strategy"]) == {"candidate", "production", "equal_weight", "QQQ_buy_and_hold"}
    assert set(report.loc[report["strategy"] == "candidate", "version"]) == {candidate}
    sessions = pd.DatetimeIndex(sorted(report["date"].unique()))[1:]
    assert list(sessions) == list(WINDOWS.backtest)
    assert pd.Timestamp(registry.manifest(candidate).training_window.end) < sessions[0]
    assert [e.status for e in registry.manifest(candidate).status_history] == [
        "registered",
        "backtested",
        "shadow",
    ]
    page = Path(tested.asset_materializations_for_node("backtest_report")[0].metadata["report_path"].value)
    assert page.name == f"{candidate}.html" and "all gates passed" in page.read_text()

    # Seven shadow sessions beside production: stored apart, never applied to the paper portfolio.
    assert _materialize(env, TRADE, K(START)).success
    shadowed = _materialize(
        env, [*TRADE, shadow.SHADOW_RECOMMENDATIONS, shadow.SHADOW_PORTFOLIO], days=SHADOW_DAYS
    )
    assert shadowed.success, _error(shadowed)
    for day in SHADOW_DAYS:
        assert set(_load(env, shadow.SHADOW_RECOMMENDATIONS, K(day))["shadow_version"]) == {candidate}
        assert set(_load(env, signals.DAILY_RECOMMENDATIONS, K(day))["model_version"]) == {"prod-v1"}
        assert set(_load(env, signals.PORTFOLIO_STATE, K(day))["model_version"]) == {"prod-v1"}
    first_shadow = _load(env, shadow.SHADOW_PORTFOLIO, K(SHADOW_DAYS[0]))
    assert (
        first_shadow["start_value"].iloc[0] == _load(env, signals.PORTFOLIO_STATE, K(START))["value"].iloc[0]
    )

    # The backtest engine gives paper trading's numbers for the same policy, book and sessions.
    io = resources["io_manager"]
    policy = policy_from_artifact(registry.manifest("prod-v1"), registry.load("prod-v1", FEATURE_SPEC_HASH))
    start = Book.from_frame(_load(env, signals.PORTFOLIO_STATE, K(START)))
    bench = benchmark_series(io, SHADOW_DAYS.insert(0, START))
    replay = run_policy(load_sessions(io, SHADOW_DAYS), policy, start, TradingCosts(), bench)
    paper = [_load(env, signals.PORTFOLIO_STATE, K(d)).iloc[0] for d in SHADOW_DAYS]
    np.testing.assert_allclose(replay.series["value"].iloc[1:], [p["value"] for p in paper], rtol=1e-12)
    np.testing.assert_allclose(replay.series["costs"].iloc[1:], [p["costs"] for p in paper], rtol=1e-12)

    # Once the candidate has its 7 shadow sessions the sensor asks for the shadow report; then a human.
    sensed = production.shadow_report_sensor(
        dg.build_sensor_context(
            instance=instance, resources={k: resources[k] for k in ("io_manager", "model_registry")}
        )
    )
    assert [r.partition_key for r in sensed] == [MONTH]
    reported = _materialize(env, [shadow.SHADOW_REPORT], MONTH, config=_gate_config("shadow_report", **LOOSE))
    assert reported.success, _error(reported)
    assert _check(reported, shadow.CHECK_SHADOW_GATE).passed
    shadow_page = reported.asset_materializations_for_node("shadow_report")[0].metadata["report_path"].value
    assert shadow_page == str(page) and "production (prod-v1)" in page.read_text()
    assert registry.manifest(candidate).status == "awaiting_approval"
    approved = _job(
        env,
        production.promote_model,
        "promote",
        {"version": candidate, "approver": "alice", "note": "gates passed"},
    )
    assert approved.success, _error(approved)
    assert (
        read_pointer(registry).history[-1].action == "promote" and read_pointer(registry).version == candidate
    )

    # The next session is served by the new version, from the same paper portfolio.
    assert _materialize(env, [*TRADE, production.MODEL_HEALTH], K(LIVE[0])).success
    assert set(_load(env, signals.DAILY_RECOMMENDATIONS, K(LIVE[0]))["model_version"]) == {candidate}
    before, after = (_load(env, signals.PORTFOLIO_STATE, K(d)) for d in (SHADOW_DAYS[-1], LIVE[0]))
    prices = _load(env, signals.DAILY_RECOMMENDATIONS, K(LIVE[0])).set_index("ticker")["price"]
    carried = float(
        (before.set_index("ticker")["shares"] * prices.reindex(before["ticker"]).to_numpy()).sum()
    )
    assert after["value_before"].iloc[0] == pytest.approx(carried + before["cash"].iloc[0], rel=1e-12)
    assert (
        after["inception"].iloc[0] == START
        and not _load(env, production.MODEL_HEALTH, K(LIVE[0]))["triggered"].iloc[0]
    )
    assert not list(outbox.glob("*.eml"))

    # An injected crash: the automatic rollback restores prod-v1 and mails a critical alert.
    crash_closes(root, K(LIVE[1]), 0.6)
    crashed = _materialize(env, [*TRADE, production.MODEL_HEALTH], K(LIVE[1]))
    assert crashed.success, _error(crashed)
    pointer = read_pointer(registry)
    assert pointer.version == "prod-v1"
    event = pointer.history[-1]
    assert (event.action, event.by, event.previous) == ("auto_rollback", "model_health", candidate)
    assert "drawdown" in event.note and registry.manifest(candidate).status == "rolled_back"
    (mail_path,) = outbox.glob("*.eml")
    mail = read_eml(mail_path)
    assert (
        mail["Subject"].startswith("[TMagikarp CRITICAL] Model ")
        and "rolled back to prod-v1" in mail["Subject"]
    )
    assert "drawdown" in mail.get_body(("plain",)).get_content()
    assert _materialize(env, TRADE, K(LIVE[2])).success
    assert set(_load(env, signals.DAILY_RECOMMENDATIONS, K(LIVE[2]))["model_version"]) == {"prod-v1"}
    viewed = _materialize(env, [production.PRODUCTION_MODEL])
    meta = viewed.asset_materializations_for_node("production_model")[0].metadata
    assert meta["version"].value == "prod-v1" and meta["events"].value == 3


def test_a_failing_candidate_is_rejected_and_needs_force_with_a_recorded_reason(env):
    registry = _registry(env)
    artifact = registry.load("prod-v1", FEATURE_SPEC_HASH)
    manifest = registry.manifest("prod-v1")
    registry.register(
        artifact,
        {
            "version": "cand-bad",
            "algorithm": "ppo",
            "hyper_parameters": dict(manifest.hyper_parameters),
            "training_window": ("2016-07-15", "2016-07-29"),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": "sm",
            "metrics": {},
        },
    )
    strict = _gate_config("backtest_report", version="cand-bad", backtest_months=1, max_drawdown=0.0001)
    result = _materialize(env, [backtest.BACKTEST_REPORT], MONTH, config=strict)
    gate = _check(result, backtest.CHECK_BACKTEST_GATE)
    assert not gate.passed and gate.blocking
    assert "FAILED: max drawdown no deeper than the limit" in gate.metadata["failures"].value
    assert "limit -0.0001" in gate.metadata["failures"].value
    assert registry.manifest("cand-bad").status == "rejected"
    refused = _job(env, production.promote_model, "promote", {"version": "cand-bad", "approver": "bob"})
    assert not refused.success and "not passed the backtest and shadow gates" in _error(refused)
    no_reason = _job(
        env, production.promote_model, "promote", {"version": "cand-bad", "approver": "bob", "force": True}
    )
    assert not no_reason.success and "needs a force_reason" in _error(no_reason)
    forced = _job(
        env,
        production.promote_model,
        "promote",
        {
            "version": "cand-bad",
            "approver": "bob",
            "note": "hotfix",
            "force": True,
            "force_reason": "incident 42",
        },
    )
    assert forced.success
    event = read_pointer(registry).history[-1]
    assert (event.action, event.by, event.version) == ("force_promote", "bob", "cand-bad")
    assert "incident 42" in event.note
    # Manual rollback to a retained version, recorded too.
    _job(env, production.rollback_model, "rollback", {"to_version": "prod-v1", "by": "carol", "note": "undo"})
    assert [e.action for e in read_pointer(registry).history] == ["force_promote", "rollback"]


def test_backtest_refuses_a_window_that_overlaps_training(env):
    registry = _registry(env)
    manifest = registry.manifest("prod-v1")
    registry.register(
        registry.load("prod-v1", FEATURE_SPEC_HASH),
        {
            "version": "leaky",
            "algorithm": "ppo",
            "hyper_parameters": dict(manifest.hyper_parameters),
            "training_window": ("2016-07-15", "2016-08-05"),
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "slot_map_version": "sm",
            "metrics": {},
        },
    )
    result = _materialize(
        env,
        [backtest.BACKTEST_REPORT],
        MONTH,
        config=_gate_config("backtest_report", version="leaky", backtest_months=1),
    )
    assert not result.success and "strictly out of sample" in _error(result)
    assert registry.manifest("leaky").status == "registered"


def _corrupt(root: Path, version: str) -> None:
    path = root / "models" / version / "model.zip"
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!!")


def _remove(root: Path, version: str) -> None:
    (root / "models" / version / "model.zip").unlink()


def _other_spec(root: Path, version: str) -> None:
    path = root / "models" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "feature_spec_hash": "0" * 64}))


def _older_policy(root: Path, version: str) -> None:
    """A model saved by an older policy network, registered with a matching manifest (hash and size)."""
    path = root / "models" / version / "model.zip"
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as old:
        entries = {name: old.read(name) for name in old.namelist()}
    recorded = f'"policy_version": "{POLICY_VERSION}"'.encode()
    assert recorded in entries["data"]
    entries["data"] = entries["data"].replace(recorded, b'"policy_version": "slot-shared-1"')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as new:
        for name, data in entries.items():
            new.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    manifest_path = root / "models" / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    manifest_path.write_text(json.dumps({**manifest, "sha256": digest, "size_bytes": len(buffer.getvalue())}))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (_corrupt, "corrupt or tampered"),
        (_remove, "no artifact"),
        (_other_spec, "trained on feature spec"),
        (_older_policy, "policy network version slot-shared-1"),
    ],
)
def test_a_refused_production_model_falls_back_to_the_previous_approved_version(env, fault, reason):
    registry, root, outbox = _registry(env), env[2], env[3]
    _bootstrap(env)
    registry.register(
        registry.load("prod-v1", FEATURE_SPEC_HASH) + b" ",
        {
            "version": "prod-v2",
            "algorithm": "ppo",
            "hyper_parameters": {},
            "feature_spec_hash": FEATURE_SPEC_HASH,
            "training_window": ("2016-07-15", "2016-07-29"),
            "slot_map_version": "sm",
            "metrics": {},
        },
    )
    assert _job(
        env,
        production.promote_model,
        "promote",
        {"version": "prod-v2", "approver": "ops", "force": True, "force_reason": "test"},
    ).success
    fault(root, "prod-v2")
    result = _materialize(env, TRADE[:2], K(START))
    assert result.success, _error(result)
    assert set(_load(env, signals.DAILY_RECOMMENDATIONS, K(START))["model_version"]) == {"prod-v1"}
    assert read_pointer(registry).version == "prod-v2"  # the pointer is left for a human to fix
    (mail_path,) = outbox.glob("*.eml")
    mail = read_eml(mail_path)
    assert mail["Subject"].strip() == "[TMagikarp CRITICAL] Production model prod-v2 refused, serving prod-v1"
    assert reason in mail.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("moment", "month"),
    [("2016-09-01", "2016-09-01"), ("2016-09-02", None), ("2017-01-03", "2017-01-01"), ("2017-01-04", None)],
)
def test_the_monthly_cycle_starts_on_the_first_trading_day_of_the_month(moment, month):
    when = dt.datetime.fromisoformat(f"{moment}T06:00:00+00:00")
    result = production.monthly_model_schedule(dg.build_schedule_context(scheduled_execution_time=when))
    if month is None:
        assert isinstance(result, dg.SkipReason) and "not the first trading day" in result.skip_message
    else:
        assert result.partition_key == month and result.run_key == f"monthly-{month}"
