"""Shadow mode: candidates that passed the backtest trade a private copy of the paper portfolio beside
production each session (stored apart, never emailed, never applied), then a second gate after 7 sessions."""

from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.backtest import starting_book
from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.gates import SHADOW_GATE_ENV, evaluate_gate
from magikarp_assets.core.metrics import performance_summary
from magikarp_assets.core.signals import DEFAULT_EQUAL_WEIGHT_FRACTION, HOLD, call_threshold
from magikarp_assets.core.spec import PRIMARY_BENCHMARK
from magikarp_assets.core.trading import Book, TradingCosts, policy_from_artifact, session_tickers, trade_day
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import partition_days
from magikarp_assets.defs.models.backtest import BACKTEST_REPORT, CANDIDATE
from magikarp_assets.defs.models.common import (
    OWNER,
    GateConfig,
    benchmark_series,
    comparison_report,
    gate_metadata,
    metrics_markdown,
    move_status,
)
from magikarp_assets.defs.partitions import monthly_partitions, trading_day_partitions
from magikarp_assets.defs.signals.assets import PORTFOLIO_STATE, PREVIOUS_SESSION
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import MissingPartitionError

SHADOW_RECOMMENDATIONS = dg.AssetKey("shadow_recommendations")
SHADOW_PORTFOLIO = dg.AssetKey("shadow_portfolio")
SHADOW_REPORT = dg.AssetKey("shadow_report")
CHECK_SHADOW_GATE = "shadow_gate"
SHADOW_SESSIONS = 7
# Extra columns of a shadow book: which candidate it belongs to, and the book it started from.
SHADOW_COLUMNS = ["shadow_version", "start_date", "start_value"]


class ShadowConfig(dg.Config):
    """How shadow books trade: as the paper portfolio does."""

    initial_capital: float = Field(default=1_000_000.0, description="cash when there is no paper portfolio")
    buy_cost_pct: float = 0.001
    sell_cost_pct: float = 0.001
    threshold_of_equal_weight: float = DEFAULT_EQUAL_WEIGHT_FRACTION
    threshold: float = 0.0


def shadow_versions(registry) -> list[str]:
    """Registered versions whose current status is shadow."""
    return [v for v in registry.versions() if registry.manifest(v).status == "shadow"]


def _stored(io_manager, key: dg.AssetKey, partition: str) -> pd.DataFrame | None:
    try:
        return io_manager.load_partition(key, partition)
    except MissingPartitionError:
        return None


def _start(io_manager, version: str, day: pd.Timestamp, capital: float) -> tuple[Book, pd.Timestamp, float]:
    """A shadow book's previous session: its own, else a copy of the paper portfolio (else cash)."""
    prev = previous_trading_day(day)
    key = prev.strftime("%Y-%m-%d")
    own = _stored(io_manager, SHADOW_PORTFOLIO, key)
    if own is not None and len(own) and (own["shadow_version"] == version).any():
        rows = own[own["shadow_version"] == version]
        return Book.from_frame(rows), rows["start_date"].iloc[0], float(rows["start_value"].iloc[0])
    paper = _stored(io_manager, PORTFOLIO_STATE, key)
    book = Book.from_frame(paper) if paper is not None else starting_book(capital, day)
    return book, prev, book.state.value


@dg.multi_asset(
    outs={
        "shadow_recommendations": dg.AssetOut(
            key=SHADOW_RECOMMENDATIONS, group_name="validation", kinds={"parquet"}, owners=[OWNER],
            description="Each shadow candidate's BUY / SELL / HOLD calls for the session (shadow_version "
            "column); stored apart: never emailed, never applied to the paper portfolio.",
        ),
        "shadow_portfolio": dg.AssetOut(
            key=SHADOW_PORTFOLIO, group_name="validation", kinds={"parquet"}, owners=[OWNER],
            description="Each shadow candidate's private book, started from a copy of the paper portfolio.",
        ),
    },
    ins={"feature_tensor": dg.AssetIn(FEATURE_TENSOR), "slot_map": dg.AssetIn(SLOT_MAP)},
    deps=[
        dg.AssetDep(SHADOW_PORTFOLIO, partition_mapping=PREVIOUS_SESSION),
        dg.AssetDep(PORTFOLIO_STATE, partition_mapping=PREVIOUS_SESSION),
    ],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    required_resource_keys={"io_manager", "model_registry"},
)  # fmt: skip
def shadow_trading(
    context: dg.AssetExecutionContext, config: ShadowConfig, feature_tensor: dict, slot_map: pd.DataFrame
):
    """Run every candidate in shadow status on each session beside production."""
    days = partition_days(context)
    keys = [d.strftime("%Y-%m-%d") for d in days]
    tensors = feature_tensor if len(days) > 1 else {keys[0]: feature_tensor}
    registry = context.resources.model_registry.registry()
    io_manager = context.resources.io_manager
    versions = shadow_versions(registry)
    costs = TradingCosts(config.buy_cost_pct, config.sell_cost_pct)
    books: dict[str, tuple[Book, pd.Timestamp, float]] = {}
    policies = {}
    recs_out, books_out = {}, {}
    for day, key in zip(days, keys, strict=True):
        tensor = tensors[key]
        tickers, slot_version = session_tickers(tensor, slot_map[slot_map["date"] == day], day)
        spec_hash = str(tensor["feature_spec_hash"].item())
        recs_day, books_day = [], []
        for version in versions:
            if version not in policies:
                policies[version] = policy_from_artifact(
                    registry.manifest(version), registry.load(version, spec_hash)
                )
            book, start_date, start_value = books.get(version) or _start(
                io_manager, version, day, config.initial_capital
            )
            threshold = call_threshold(tensor["tradable"], config.threshold_of_equal_weight, config.threshold)
            recs, result = trade_day(
                book, tensor, tickers, slot_version, policies[version], costs, threshold, day
            )
            books[version] = (result.book, start_date, start_value)
            extra = {"shadow_version": version, "start_date": start_date, "start_value": start_value}
            recs_day.append(recs.assign(shadow_version=version))
            books_day.append(result.frame.assign(**extra))
            context.log.info(
                f"{key}: shadow {version} value {result.book.state.value:,.2f}, "
                f"{int((recs['action'] != HOLD).sum())} call(s)"
            )
        recs_out[key] = (
            pd.concat(recs_day, ignore_index=True)
            if recs_day
            else pd.DataFrame({"shadow_version": pd.Series(dtype=object)})
        )
        books_out[key] = (
            pd.concat(books_day, ignore_index=True)
            if books_day
            else pd.DataFrame({c: pd.Series(dtype=object) for c in SHADOW_COLUMNS})
        )
    single = len(days) == 1
    meta: dict[str, Any] = {"shadow_versions": ", ".join(versions) or "none", "sessions_in_run": len(days)}
    yield dg.Output(
        books_out[keys[-1]] if single else books_out, output_name="shadow_portfolio", metadata=meta
    )
    yield dg.Output(
        recs_out[keys[-1]] if single else recs_out, output_name="shadow_recommendations", metadata=meta
    )


def shadow_sessions(io_manager, version: str, since: str) -> pd.DataFrame:
    """The stored shadow book rows of ``version`` on sessions from ``since``, in order."""
    frames = []
    for key in io_manager.stored_partitions(SHADOW_PORTFOLIO):
        if key >= since:
            frame = io_manager.load_partition(SHADOW_PORTFOLIO, key)
            if len(frame) and (frame["shadow_version"] == version).any():
                frames.append(frame[frame["shadow_version"] == version])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SHADOW_COLUMNS)


class ShadowReportConfig(GateConfig):
    """Sessions required and the shadow gate's limits."""

    sessions: int = Field(default=SHADOW_SESSIONS, description="shadow sessions compared")


@dg.asset(
    key=SHADOW_REPORT,
    group_name="validation",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=monthly_partitions,
    ins={"backtest_report": dg.AssetIn(BACKTEST_REPORT)},
    deps=[SHADOW_PORTFOLIO, PORTFOLIO_STATE],
    required_resource_keys={"io_manager", "model_registry"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_SHADOW_GATE, asset=SHADOW_REPORT, blocking=True,
            description="The candidate's realised shadow results against production's on the same sessions: "
            "moves it to awaiting_approval (passed) or rejected.",
        )
    ],
)  # fmt: skip
def shadow_report(
    context: dg.AssetExecutionContext, config: ShadowReportConfig, backtest_report: pd.DataFrame
):
    """The month's candidate over its first shadow sessions beside the paper portfolio, both from the same
    book on the same sessions, with metrics against QQQ."""
    month = context.partition_key
    registry = context.resources.model_registry.registry()
    io_manager = context.resources.io_manager
    version = str(backtest_report.loc[backtest_report["strategy"] == CANDIDATE, "version"].iloc[0])
    rows = shadow_sessions(io_manager, version, month)
    dates = sorted(pd.to_datetime(rows["date"]).unique())
    if len(dates) < config.sessions:
        raise ValueError(
            f"shadow_report {month}: candidate {version} has {len(dates)} shadow session(s), "
            f"{config.sessions} needed; run shadow_trading for the next sessions first"
        )
    rows = rows[pd.to_datetime(rows["date"]).isin(dates[: config.sessions])]
    days = pd.DatetimeIndex(dates[: config.sessions])
    start_date, start_value = pd.Timestamp(rows["start_date"].iloc[0]), float(rows["start_value"].iloc[0])
    per_day = rows.groupby("date").first()
    shadow = pd.Series([start_value, *per_day["value"]], index=days.insert(0, start_date))
    shadow_turnover = per_day["turnover"].astype(float)
    bench = benchmark_series(io_manager, shadow.index)
    metrics = {"shadow": performance_summary(shadow, bench, daily_turnover=shadow_turnover)}
    paper = {d: io_manager.load_partition(PORTFOLIO_STATE, d.strftime("%Y-%m-%d")) for d in shadow.index[1:]}
    before = _stored(io_manager, PORTFOLIO_STATE, start_date.strftime("%Y-%m-%d"))
    base = float(before["value"].iloc[0]) if before is not None else start_value
    production = pd.Series([base, *(float(p["value"].iloc[0]) for p in paper.values())], index=shadow.index)
    prod_turnover = pd.Series([float(p["turnover"].iloc[0]) for p in paper.values()], index=days)
    metrics["production"] = performance_summary(production, bench, daily_turnover=prod_turnover)
    served = sorted({str(p["model_version"].iloc[0]) for p in paper.values()})
    thresholds = config.thresholds(SHADOW_GATE_ENV)
    label = f"production ({', '.join(served)})"
    gate = evaluate_gate("shadow", metrics["shadow"], metrics["production"], label, thresholds)
    window = f"{days[0].date()}..{days[-1].date()}"
    note = f"shadow {window} vs {label}: " + ("; ".join(gate.failures) or "all rules held")
    status = move_status(
        context,
        registry,
        version,
        ("shadow",),
        ("awaiting_approval",) if gate.passed else ("rejected",),
        note,
    )
    table = pd.DataFrame(
        {"date": shadow.index, "shadow_value": shadow.to_numpy(), "production_value": production.to_numpy(),
         "benchmark": bench.to_numpy(), "version": version}
    )  # fmt: skip
    # The comparison page again, now with the shadow sessions (QQQ rescaled to the same starting value).
    shadow_lines = {f"candidate {version}": shadow, label: production,
                    PRIMARY_BENCHMARK: bench / bench.iloc[0] * shadow.iloc[0]}  # fmt: skip
    report = comparison_report(io_manager, version, backtest_report, shadow_lines, [gate])
    yield dg.Output(
        table,
        metadata={"candidate": version, "status": status, "shadow_window": window,
                  "metrics": metrics_markdown(metrics), **report},
    )  # fmt: skip
    yield dg.AssetCheckResult(
        check_name=CHECK_SHADOW_GATE,
        passed=gate.passed,
        metadata={"candidate": version, **gate_metadata(gate, thresholds)},
        description=note,
    )
