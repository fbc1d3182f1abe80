"""Daily paper trading: the production policy's recommendations for a session and the paper portfolio
rolled forward to them, computed together so each day starts from the stored book of the previous one."""

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.portfolio import initial_portfolio
from magikarp_assets.core.promotion import production_version, read_pointer
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.serving import fallback_versions, load_with_fallback
from magikarp_assets.core.signals import BUY, DEFAULT_EQUAL_WEIGHT_FRACTION, HOLD, SELL, call_threshold
from magikarp_assets.core.trading import (
    BOOK_COLUMNS,
    Book,
    Policy,
    TradingCosts,
    policy_from_artifact,
    session_tickers,
    trade_day,
)
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import partition_days
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import MissingPartitionError
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource

__all__ = ["BOOK_COLUMNS", "Book", "paper_trading"]

DAILY_RECOMMENDATIONS = dg.AssetKey("daily_recommendations")
PORTFOLIO_STATE = dg.AssetKey("portfolio_state")
OWNER = "team:ml-platform"
PREVIOUS_SESSION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
TOP_ROWS = 10

# Declarative automation, on both outputs: run a session as soon as its feature tensor and slot map are in
# and their blocking checks passed (eager: any dep updated, none missing or in progress, latest session
# only), rather than at a fixed time. The self-dependency on yesterday's portfolio is ignored on purpose: on
# the first session it does not exist, and on a later one a missing portfolio makes the run fail loudly (and
# alert) instead of waiting silently. The multi-asset is subsettable because Dagster 1.13 expands a request
# on a non-subsettable one through the self-dependency's mapping, which would also request yesterday.
TRADING_AUTOMATION = (
    (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed())
    .ignore(dg.AssetSelection.assets(PORTFOLIO_STATE))
    .with_label("eager once the session's inputs passed their checks")
)


class PaperTradingConfig(dg.Config):
    """How the paper portfolio trades (typed run config, visible in the launchpad)."""

    initial_capital: float = Field(
        default=1_000_000.0, description="cash the paper portfolio starts with on its first session"
    )
    buy_cost_pct: float = Field(default=0.001, description="proportional cost on value bought")
    sell_cost_pct: float = Field(default=0.001, description="proportional cost on value sold")
    # The policy spreads weight over the whole universe, so a fixed share of the portfolio would mean a
    # different call over 500 names (equal weight 0.2 %) than over 3,000 (0.033 %): scale it by default.
    threshold_of_equal_weight: float = Field(
        default=DEFAULT_EQUAL_WEIGHT_FRACTION,
        description="BUY/SELL when the weight moves by more than this share of an equal-weight position "
        "over the session's tradable names (0.5 over 500 names = 0.1 % of the portfolio)",
    )
    threshold: float = Field(
        default=0.0, description="a fixed weight change for calls instead (0.001 = 0.1 %); 0: scaled"
    )
    model_version: str = Field(
        default="",
        description="model to serve; empty: the version recorded for a session already produced (a re-run "
        "reproduces it), else the production version",
    )


def _previous_book(context: dg.AssetExecutionContext, day: pd.Timestamp, capital: float) -> Book:
    """Yesterday's stored book; an all-cash one on the portfolio's first session. Anything else is refused:
    the portfolio is rolled forward in order and a session is never applied twice."""
    io_manager = context.resources.io_manager
    prev_key = previous_trading_day(day).strftime("%Y-%m-%d")
    try:
        book = Book.from_frame(io_manager.load_partition(PORTFOLIO_STATE, prev_key))
    except MissingPartitionError:
        stored = io_manager.stored_partitions(PORTFOLIO_STATE)
        inception = (
            Book.from_frame(io_manager.load_partition(PORTFOLIO_STATE, stored[0])).inception
            if stored
            else day
        )
        if inception != day:
            raise RuntimeError(
                f"portfolio_state {day.date()} needs the portfolio of the previous session {prev_key}, which "
                f"has not been materialised: the paper portfolio started on {inception.date()} and is rolled "
                "forward in order, so backfill from the earliest missing session (days before its start "
                "cannot be added)"
            ) from None
        context.log.info(f"paper portfolio starts on {day.date()} with {capital:,.2f} in cash")
        start = initial_portfolio(capital, previous_trading_day(day))
        return Book(start, {}, day, start.value)
    if book.state.date != pd.Timestamp(prev_key):
        raise ValueError(
            f"portfolio_state partition {prev_key} holds the portfolio of {book.state.date.date()}"
        )
    return book


def _policy(
    context: dg.AssetExecutionContext,
    registry: ModelRegistry,
    version: str,
    from_production: bool,
    spec_hash: str,
    cache: dict[tuple[str, str], Policy],
) -> Policy:
    """Load a version once per run; the registry checks its feature spec and SHA-256 before unpickling.

    When the production version is refused (corrupt or missing file, other feature spec), the previous
    approved version from the production history serves instead and a critical alert says so; a pinned or
    recorded version is never replaced (the run fails with the registry's reason)."""
    if (version, spec_hash) not in cache:
        candidates = [version, *fallback_versions(read_pointer(registry))] if from_production else [version]
        served, policy, refused = load_with_fallback(registry, candidates, spec_hash, policy_from_artifact)
        if refused:
            notifier: NotifierResource = context.resources.notifier
            details = {f"refused {r.version}": r.reason for r in refused}
            details["serving instead"] = served
            context.log.error(f"production model {version} refused; serving {served}: {details}")
            notifier.send_alert("critical", f"Production model {version} refused, serving {served}", details)
        cache[version, spec_hash] = policy
    return cache[version, spec_hash]


def _served_version(
    context: dg.AssetExecutionContext, registry: ModelRegistry, day_key: str, pinned: str
) -> tuple[str, bool]:
    """The pinned version, else the one recorded for the session (a re-run reproduces it), else production;
    with whether it is the production version (the only one a refused artifact may be replaced for)."""
    if pinned:
        return pinned, False
    try:
        recorded = context.resources.io_manager.load_partition(DAILY_RECOMMENDATIONS, day_key)
    except MissingPartitionError:
        recorded = None
    if recorded is not None and len(recorded):
        return str(recorded["model_version"].iloc[0]), False
    return production_version(registry), True


def _recommendation_metadata(recs: pd.DataFrame, inference_ms: float, days: int) -> dict:
    counts = recs["action"].value_counts()
    top = recs.head(TOP_ROWS)[
        ["rank", "ticker", "action", "current_weight", "target_weight", "delta", "confidence"]
    ]
    return {
        "n_buy": int(counts.get(BUY, 0)),
        "n_sell": int(counts.get(SELL, 0)),
        "n_hold": int(counts.get(HOLD, 0)),
        "inference_ms": inference_ms,
        "model_version": str(recs["model_version"].iloc[0]) if len(recs) else "",
        "sessions_in_run": days,
        "top_10": dg.MetadataValue.md(top.to_markdown(index=False, floatfmt=".4f") if len(top) else "none"),
    }


def _portfolio_metadata(book: Book, previous_value: float, frame: pd.DataFrame) -> dict:
    state = book.state
    return {
        "value": state.value,
        "cash": state.cash,
        "daily_return": state.value / previous_value - 1.0,
        "turnover": float(frame["turnover"].iloc[0]),
        "costs": float(frame["costs"].iloc[0]),
        "drawdown": state.value / book.peak_value - 1.0,
        "holdings": len(state.shares),
        "model_version": state.model_version,
        "inception": str(book.inception.date()),
    }


@dg.multi_asset(
    outs={
        "daily_recommendations": dg.AssetOut(
            key=DAILY_RECOMMENDATIONS,
            group_name="signals",
            kinds={"parquet", "pytorch"},
            owners=[OWNER],
            automation_condition=TRADING_AUTOMATION,
            description="BUY / SELL / HOLD for every active or held ticker of the session, with the current "
            "and target weight, a confidence and the model version, from the production policy on the "
            "session's feature tensor and the paper portfolio's holdings.",
        ),
        "portfolio_state": dg.AssetOut(
            key=PORTFOLIO_STATE,
            group_name="signals",
            kinds={"parquet"},
            owners=[OWNER],
            automation_condition=TRADING_AUTOMATION,
            description="The paper portfolio after the session's close: shares per ticker and cash, traded "
            "to the policy's targets net of costs; held by ticker, so it carries over model and slot-map "
            "changes.",
        ),
    },
    ins={
        "feature_tensor": dg.AssetIn(FEATURE_TENSOR),
        "slot_map": dg.AssetIn(SLOT_MAP),
    },
    deps=[dg.AssetDep(PORTFOLIO_STATE, partition_mapping=PREVIOUS_SESSION)],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    required_resource_keys={"io_manager", "model_registry", "notifier"},
    can_subset=True,
)
def paper_trading(
    context: dg.AssetExecutionContext,
    config: PaperTradingConfig,
    feature_tensor: dict,  # arrays of one session, or {session: arrays} for a range
    slot_map: pd.DataFrame,
):
    """Serve the production model on each session in order and roll the paper portfolio forward."""
    days = partition_days(context)
    keys = [d.strftime("%Y-%m-%d") for d in days]
    tensors = feature_tensor if len(days) > 1 else {keys[0]: feature_tensor}
    model_registry: ModelRegistryResource = context.resources.model_registry
    registry = model_registry.registry()
    book = _previous_book(context, days[0], config.initial_capital)
    policies: dict[tuple[str, str], Policy] = {}
    recs_out, books_out = {}, {}
    for day, key in zip(days, keys, strict=True):
        tensor = tensors[key]
        tickers, version = session_tickers(tensor, slot_map[slot_map["date"] == day], day)
        served, from_production = _served_version(context, registry, key, config.model_version)
        spec_hash = str(tensor["feature_spec_hash"].item())
        policy = _policy(context, registry, served, from_production, spec_hash, policies)
        previous_value = book.state.value
        costs = TradingCosts(config.buy_cost_pct, config.sell_cost_pct)
        threshold = call_threshold(tensor["tradable"], config.threshold_of_equal_weight, config.threshold)
        recs, result = trade_day(book, tensor, tickers, version, policy, costs, threshold, day)
        book, inference_ms = result.book, result.inference_ms
        recs_out[key], books_out[key] = recs, result.frame
        context.log.info(
            f"{key}: model {policy.version}, value {book.state.value:,.2f}, "
            f"{int((recs['action'] != HOLD).sum())} trade call(s)"
        )
    later = [k for k in context.resources.io_manager.stored_partitions(PORTFOLIO_STATE) if k > keys[-1]]
    if later:
        context.log.warning(
            f"portfolio_state holds later sessions {later[0]}..{later[-1]} computed from the previous book: "
            "re-run them in order if this run changed it"
        )
    single = len(days) == 1
    # Both are computed either way; a subset run (one key picked in the UI) stores only what was selected.
    # The portfolio first: Dagster wants outputs in dependency order, and recommendations read yesterday's.
    if PORTFOLIO_STATE in context.selected_asset_keys:
        yield dg.Output(
            books_out[keys[-1]] if single else books_out,
            output_name="portfolio_state",
            metadata=_portfolio_metadata(book, previous_value, books_out[keys[-1]]),
        )
    if DAILY_RECOMMENDATIONS in context.selected_asset_keys:
        yield dg.Output(
            recs_out[keys[-1]] if single else recs_out,
            output_name="daily_recommendations",
            metadata=_recommendation_metadata(recs_out[keys[-1]], inference_ms, len(days)),
        )
