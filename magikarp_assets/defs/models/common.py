"""What the model-safety assets share: reading past sessions from storage, gate settings as typed config,
and turning gate verdicts into metadata and registry statuses."""

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.backtest import BUY_AND_HOLD, EQUAL_WEIGHT, SessionData
from magikarp_assets.core.gates import GateResult, GateThresholds
from magikarp_assets.core.reports.comparison import build_model_comparison_page
from magikarp_assets.core.spec import PRIMARY_BENCHMARK
from magikarp_assets.core.trading import session_tickers
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import BENCHMARK_PRICES
from magikarp_assets.defs.reporting.publish import write_report
from magikarp_assets.defs.universe.assets import SLOT_MAP

OWNER = "team:ml-platform"


def load_sessions(io_manager, days: pd.DatetimeIndex) -> list[SessionData]:
    """The stored tensors and slot maps of ``days``, checked to agree, as backtest sessions."""
    sessions = []
    for day in days:
        key = day.strftime("%Y-%m-%d")
        tensor = io_manager.load_partition(FEATURE_TENSOR, key)
        slot_map = io_manager.load_partition(SLOT_MAP, key)
        tickers, version = session_tickers(tensor, slot_map, day)
        sessions.append(SessionData(day, tensor, tickers, version))
    return sessions


def benchmark_series(io_manager, days: pd.DatetimeIndex) -> pd.Series:
    """QQQ's total-return close on each of ``days`` (adjusted close, else close), from benchmark_prices."""
    values = {}
    for day in days:
        frame = io_manager.load_partition(BENCHMARK_PRICES, day.strftime("%Y-%m-%d"))
        row = frame[frame["ticker"] == PRIMARY_BENCHMARK]
        if row.empty:
            raise ValueError(f"benchmark_prices {day.date()} has no {PRIMARY_BENCHMARK} row")
        adj = row["adj_close"].iloc[0]
        values[day] = float(adj if pd.notna(adj) else row["close"].iloc[0])
    return pd.Series(values, dtype=float)


class GateConfig(dg.Config):
    """A gate's limits; left empty, each comes from its environment variable or the default."""

    sharpe_margin: float | None = Field(
        default=None, description="candidate Sharpe may trail the reference's by at most this"
    )
    max_drawdown: float | None = Field(default=None, description="deepest allowed drawdown (0.2 = 20 %)")
    max_turnover: float | None = Field(default=None, description="highest average daily turnover")
    initial_capital: float = Field(default=1_000_000.0, description="cash each backtested book starts with")
    buy_cost_pct: float = 0.001
    sell_cost_pct: float = 0.001

    def thresholds(self, env_prefix: str) -> GateThresholds:
        base = GateThresholds.from_env(env_prefix)
        overrides = {
            name: getattr(self, name)
            for name in ("sharpe_margin", "max_drawdown", "max_turnover")
            if getattr(self, name) is not None
        }
        return GateThresholds(**{**base.__dict__, **overrides})


def gate_metadata(gate: GateResult, thresholds: GateThresholds) -> dict:
    return {
        "passed": gate.passed,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in gate.reasons)),
        "failures": "; ".join(gate.failures) or "none",
        "thresholds": dg.MetadataValue.json(thresholds.__dict__),
    }


def move_status(
    context: dg.AssetExecutionContext, registry, version: str, allowed_from: tuple[str, ...], statuses, note
) -> str:
    """Append ``statuses`` to the version's history when its current status is one of ``allowed_from``
    (a re-run never moves a model that went further, e.g. into production)."""
    current = registry.manifest(version).status
    if current not in allowed_from:
        context.log.warning(f"{version} is {current!r}: status left unchanged")
        return current
    for status in statuses:
        registry.set_status(version, status, by=context.asset_key.to_user_string(), note=note)
    return statuses[-1]


def metrics_markdown(rows: dict[str, dict[str, float]]) -> dg.MetadataValue:
    frame = pd.DataFrame(rows).T
    return dg.MetadataValue.md(frame.to_markdown(floatfmt=".4f"))


def comparison_report(
    io_manager,
    candidate: str,
    backtest_table: pd.DataFrame,
    shadow: dict[str, pd.Series] | None,
    gates: list[GateResult],
) -> dict:
    """Write the candidate's model comparison page (``reports/models/<version>.html``): its backtest beside
    production and the baselines, and its shadow sessions once run, with the gates' verdicts; returns the
    metadata linking to it.

    :param io_manager: the platform's IO manager (its blob store holds the reports).
    :param candidate: the candidate's version.
    :param backtest_table: the stored backtest_report (date, value, strategy, version per row).
    :param shadow: strategy label -> value per shadow session, or None before the shadow gate.
    :param gates: the verdicts so far (backtest, then shadow).
    """
    labels = {BUY_AND_HOLD: PRIMARY_BENCHMARK, EQUAL_WEIGHT: "equal weight"}
    backtest = {}
    for (strategy, version), rows in backtest_table.groupby(["strategy", "version"], sort=False):
        label = labels.get(strategy, f"{strategy} {version}")
        backtest[label] = rows.set_index(pd.to_datetime(rows["date"]))["value"].astype(float)
    html = build_model_comparison_page(candidate, backtest, shadow, gates, benchmark_label=PRIMARY_BENCHMARK)
    return write_report(io_manager, f"models/{candidate}.html", html)
