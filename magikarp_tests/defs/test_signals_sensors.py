"""Operator alerts and automation of the daily cycle: a failed blocking check on real sample bars mails one
warning, and trading is requested as soon as a session's inputs and their blocking checks are in."""

import datetime as dt

import dagster as dg

from magikarp_assets.core.notify import read_eml
from magikarp_assets.defs.features.tensor_asset import CHECK_TENSOR_FINITE, FEATURE_TENSOR
from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.defs.signals import reporting
from magikarp_assets.defs.signals.sensors import blocking_check_alert
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource

SESSION = "2016-06-01"
UPSTREAM = [
    dg.AssetSpec(key, partitions_def=trading_day_partitions)
    for key in (FEATURE_TENSOR, SLOT_MAP, BENCHMARK_PRICES)
]


def test_a_failed_blocking_check_sends_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGIKARP_COVERAGE_MIN", "1.5")  # no session can reach 150 % coverage
    instance = dg.DagsterInstance.ephemeral()
    notifier = NotifierResource(outbox_dir=str(tmp_path / "outbox"))

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"notifier": notifier})
        return blocking_check_alert(context), context.cursor

    skipped, cursor = tick(None)
    assert "cursor initialised" in skipped.skip_message
    resources = {
        "market_data": MarketDataResource(provider="sample"),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(tmp_path / "store")),
    }
    ingestion_assets = [ingestion.universe_constituents, ingestion.raw_ohlcv]
    dg.materialize(ingestion_assets, resources=resources, instance=instance, selection=[ingestion.UNIVERSE])
    result = dg.materialize(
        ingestion_assets, resources=resources, instance=instance, partition_key=SESSION,
        selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE], raise_on_error=False,
    )  # fmt: skip
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == [ingestion.CHECK_COVERAGE]
    sent, cursor = tick(cursor)
    assert sent is None
    (path,) = (tmp_path / "outbox").glob("*.eml")
    mail = read_eml(path)
    assert (
        mail["Subject"].strip()
        == f"[TMagikarp WARNING] Check coverage_above_threshold on raw_ohlcv failed for {SESSION}"
    )
    text = mail.get_body(("plain",)).get_content()
    assert "1.5" in text and "coverage_min_day" in text and result.run_id in text
    skipped, _ = tick(cursor)
    assert "no new failed blocking check" in skipped.skip_message
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


@dg.asset_check(asset=FEATURE_TENSOR, name=CHECK_TENSOR_FINITE, blocking=True)
def tensor_is_finite_stand_in() -> dg.AssetCheckResult:
    """Stands for the feature tensor's blocking check; the test reports its outcomes."""
    return dg.AssetCheckResult(passed=True)


def test_trading_runs_as_soon_as_the_sessions_inputs_and_checks_are_in(tmp_path):
    defs = dg.Definitions(
        assets=[*UPSTREAM, signals.paper_trading, reporting.performance_metrics, reporting.daily_report],
        asset_checks=[tensor_is_finite_stand_in],
        resources={
            "io_manager": PartitionedParquetIOManager(root=str(tmp_path)),
            "model_registry": ModelRegistryResource(root=str(tmp_path)),
            "notifier": NotifierResource(outbox_dir=str(tmp_path / "outbox")),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    evening = dt.datetime(2016, 6, 1, 23, 0, tzinfo=dt.UTC)
    cursor = None

    def tick(*events) -> dict[dg.AssetKey, set]:
        nonlocal cursor
        for event in events:
            instance.report_runless_asset_event(event)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=evening, cursor=cursor
        )
        cursor = result.cursor
        return {
            key: result.get_requested_partitions(key)
            for key in (signals.DAILY_RECOMMENDATIONS, signals.PORTFOLIO_STATE)
        }

    nothing = {signals.DAILY_RECOMMENDATIONS: set(), signals.PORTFOLIO_STATE: set()}
    check = {"asset_key": FEATURE_TENSOR, "check_name": CHECK_TENSOR_FINITE, "blocking": True}
    assert tick() == nothing
    assert tick(dg.AssetMaterialization(SLOT_MAP, partition=SESSION)) == nothing  # no tensor yet
    tensor = dg.AssetMaterialization(FEATURE_TENSOR, partition=SESSION)
    assert (
        tick(tensor, dg.AssetCheckEvaluation(passed=False, **check)) == nothing
    )  # its blocking check failed
    # Fixed tensor, check passed: both outputs of that session only, although no portfolio exists yet.
    session = {SESSION}
    assert tick(tensor, dg.AssetCheckEvaluation(passed=True, **check)) == {
        signals.DAILY_RECOMMENDATIONS: session,
        signals.PORTFOLIO_STATE: session,
    }
