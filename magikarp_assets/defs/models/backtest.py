"""The backtest gate: the month's candidate on the months after its training window, beside QQQ, equal
weight and the production model on the same days; a blocking check decides whether it may go to shadow."""

import json
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.backtest import (
    BUY_AND_HOLD,
    EQUAL_WEIGHT,
    buy_and_hold,
    check_out_of_sample,
    equal_weight,
    run_policy,
    starting_book,
)
from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.gates import BACKTEST_GATE_ENV, evaluate_gate
from magikarp_assets.core.promotion import read_pointer
from magikarp_assets.core.trading import TradingCosts, policy_from_artifact
from magikarp_assets.core.windows import model_windows
from magikarp_assets.defs.models.assets import CANDIDATE_MODEL
from magikarp_assets.defs.models.common import (
    OWNER,
    GateConfig,
    benchmark_series,
    comparison_report,
    gate_metadata,
    load_sessions,
    metrics_markdown,
    move_status,
)
from magikarp_assets.defs.partitions import monthly_partitions

BACKTEST_REPORT = dg.AssetKey("backtest_report")
CHECK_BACKTEST_GATE = "backtest_gate"
CANDIDATE, PRODUCTION = "candidate", "production"


class BacktestConfig(GateConfig):
    """Which candidate is backtested, over which months, and the gate's limits (typed run config)."""

    version: str = Field(default="", description="candidate version; empty: the month's candidate_model")
    backtest_months: int = Field(default=2, description="months right before the month, after training")


def candidate_of_month(instance: dg.DagsterInstance, month: str) -> str:
    """The version registered by the latest candidate_model materialisation of ``month``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CANDIDATE_MODEL, asset_partitions=[month]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        raise ValueError(
            f"no candidate_model materialised for month {month}: train it first, or set config version"
        )
    return str(records[0].asset_materialization.metadata["version"].value)


@dg.asset(
    key=BACKTEST_REPORT,
    group_name="validation",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=monthly_partitions,
    deps=[CANDIDATE_MODEL],
    required_resource_keys={"io_manager", "model_registry"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_BACKTEST_GATE,
            asset=BACKTEST_REPORT,
            blocking=True,
            description="Candidate Sharpe not below the production model's (equal weight's without one) by "
            "more than a margin, drawdown and turnover under their limits, no NaN; moves the candidate to "
            "shadow (passed) or rejected.",
        )
    ],
)
def backtest_report(context: dg.AssetExecutionContext, config: BacktestConfig):
    """Daily value, turnover and costs of the month's candidate over the backtest months (strictly after
    its training window), beside QQQ buy-and-hold, equal weight and the production model, each from the same
    cash and net of the same costs; metrics per strategy in the metadata."""
    month = context.partition_key
    registry = context.resources.model_registry.registry()
    io_manager = context.resources.io_manager
    version = config.version or candidate_of_month(context.instance, month)
    manifest = registry.manifest(version)
    days = model_windows(month, 1, config.backtest_months).backtest
    check_out_of_sample(version, manifest.training_window.end, days)
    sessions = load_sessions(io_manager, days)
    bench = benchmark_series(io_manager, days.insert(0, previous_trading_day(days[0])))
    costs = TradingCosts(config.buy_cost_pct, config.sell_cost_pct)
    start = starting_book(config.initial_capital, days[0])
    spec_hash = str(sessions[0].tensor["feature_spec_hash"].item())

    def policy(v: str):
        return policy_from_artifact(registry.manifest(v), registry.load(v, spec_hash))

    results = [run_policy(sessions, policy(version), start, costs, bench, CANDIDATE)]
    serving = read_pointer(registry).version
    if serving is not None and serving != version:
        results.append(run_policy(sessions, policy(serving), start, costs, bench, PRODUCTION))
    results.append(run_policy(sessions, equal_weight(), start, costs, bench, EQUAL_WEIGHT))
    results.append(buy_and_hold(bench, days, config.initial_capital, costs))
    by_name = {r.strategy: r for r in results}
    reference = PRODUCTION if PRODUCTION in by_name else EQUAL_WEIGHT
    label = f"production model {serving}" if reference == PRODUCTION else "equal weight"
    thresholds = config.thresholds(BACKTEST_GATE_ENV)
    gate = evaluate_gate(
        "backtest", by_name[CANDIDATE].metrics, by_name[reference].metrics, label, thresholds
    )
    window = f"{days[0].date()}..{days[-1].date()}"
    note = f"backtest {window} vs {label}: " + ("; ".join(gate.failures) or "all rules held")
    allowed = ("registered", "backtested", "rejected")
    statuses = ("backtested", "shadow") if gate.passed else ("rejected",)
    status = move_status(context, registry, version, allowed, statuses, note)
    table = pd.concat(
        [r.series.assign(strategy=r.strategy, version=r.version) for r in results], ignore_index=True
    )
    metadata: dict[str, Any] = {
        "candidate": version,
        "status": status,
        "backtest_window": window,
        "training_window": f"{manifest.training_window.start}..{manifest.training_window.end}",
        "reference": label,
        "metrics": metrics_markdown({r.strategy: r.metrics for r in results}),
        "metrics_json": dg.MetadataValue.json(
            json.loads(pd.DataFrame({r.strategy: r.metrics for r in results}).to_json())
        ),
        "strategies": ", ".join(by_name),
        "baselines": f"{BUY_AND_HOLD}, {EQUAL_WEIGHT}",
        **comparison_report(context.resources.io_manager, version, table, None, [gate]),
    }
    yield dg.Output(table, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=CHECK_BACKTEST_GATE,
        passed=gate.passed,
        metadata={"candidate": version, **gate_metadata(gate, thresholds)},
        description=note,
    )
