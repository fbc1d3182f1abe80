"""Daily paper trading: the production policy's recommendations for a session and the paper portfolio
rolled forward to them, computed together so each day starts from the stored book of the previous one."""

import time
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from stable_baselines3.common.base_class import BaseAlgorithm

from magikarp_assets.core.calendar import previous_trading_day
from magikarp_assets.core.portfolio import PortfolioState, apply_targets, initial_portfolio, slot_weights
from magikarp_assets.core.portfolio import weights_by_ticker as to_ticker_weights
from magikarp_assets.core.promotion import production_version
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.rl.inference import build_observation, infer_target_weights
from magikarp_assets.core.rl.training import load_policy
from magikarp_assets.core.signals import BUY, HOLD, SELL, recommend
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR
from magikarp_assets.defs.ingestion.assets import partition_days
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.universe.assets import SLOT_MAP
from magikarp_assets.resources.io_manager import MissingPartitionError
from magikarp_assets.resources.model_registry import ModelRegistryResource

DAILY_RECOMMENDATIONS = dg.AssetKey("daily_recommendations")
PORTFOLIO_STATE = dg.AssetKey("portfolio_state")
OWNER = "team:ml-platform"
PREVIOUS_SESSION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
# Day-level columns stored beside PortfolioState.to_frame(): the price each holding was valued at (today's
# close, else its last known close: tomorrow's fallback), the portfolio's first session and the day's trading.
BOOK_COLUMNS = ["price", "inception", "value_before", "traded_value", "costs", "turnover", "peak_value"]
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


# The daily call threshold: 0.1 % of the portfolio. The core's 0.5 % default suits concentrated books;
# the policy spreads weight over the whole universe (an equal-weight position over the 500-name sample is
# 0.2 %), where 0.5 % would call almost nothing but HOLD while the portfolio still trades.
SIGNAL_THRESHOLD = 0.001


class PaperTradingConfig(dg.Config):
    """How the paper portfolio trades (typed run config, visible in the launchpad)."""

    initial_capital: float = Field(
        default=1_000_000.0, description="cash the paper portfolio starts with on its first session"
    )
    buy_cost_pct: float = Field(default=0.001, description="proportional cost on value bought")
    sell_cost_pct: float = Field(default=0.001, description="proportional cost on value sold")
    threshold: float = Field(
        default=SIGNAL_THRESHOLD, description="weight change that makes a BUY/SELL call (0.001 = 0.1 %)"
    )
    model_version: str = Field(
        default="",
        description="model to serve; empty: the version recorded for a session already produced (a re-run "
        "reproduces it), else the production version",
    )


@dataclass(frozen=True)
class Policy:
    """A loaded production model and how it was trained to read its scores."""

    version: str
    model: BaseAlgorithm
    temperature: float


@dataclass(frozen=True)
class Book:
    """The paper portfolio after a session, with what the next session needs beyond PortfolioState."""

    state: PortfolioState
    last_price: dict[str, float]
    inception: pd.Timestamp
    peak_value: float

    def to_frame(self, value_before: float, traded_value: float, costs: float) -> pd.DataFrame:
        """PortfolioState.to_frame() plus BOOK_COLUMNS, with the session's trading figures.

        :param value_before: the book's value at the session's prices before trading.
        :param traded_value: gross value bought plus sold.
        :param costs: costs paid on those trades.
        """
        frame = self.state.to_frame()
        frame["price"] = frame["ticker"].map(self.last_price).astype(np.float64)
        frame["inception"] = pd.Series([self.inception] * len(frame), dtype="datetime64[ns]")
        frame["value_before"] = value_before
        frame["traded_value"] = traded_value
        frame["costs"] = costs
        frame["turnover"] = traded_value / value_before if value_before > 0 else 0.0
        frame["peak_value"] = self.peak_value
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Book":
        """Rebuild a book stored by :meth:`to_frame`.

        :param frame: one stored portfolio_state partition.
        """
        missing = [c for c in BOOK_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"stored portfolio_state lacks column(s) {missing}")
        state = PortfolioState.from_frame(frame)
        held = frame[frame["ticker"].isin(list(state.shares))]
        return cls(
            state=state,
            last_price=dict(zip(held["ticker"], held["price"].astype(float), strict=True)),
            inception=pd.Timestamp(frame["inception"].iloc[0]),
            peak_value=float(frame["peak_value"].iloc[0]),
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
    registry: ModelRegistry, version: str, spec_hash: str, cache: dict[tuple[str, str], Policy]
) -> Policy:
    """Load a version once per run; the registry checks its feature spec and SHA-256 before unpickling."""
    if (version, spec_hash) not in cache:
        manifest = registry.manifest(version)
        artifact = registry.load(version, expected_feature_spec_hash=spec_hash)
        env_kwargs = dict(manifest.hyper_parameters.get("env_kwargs", {}))
        temperature = float(env_kwargs.get("temperature", 1.0))
        cache[version, spec_hash] = Policy(version, load_policy(artifact, manifest.algorithm), temperature)
    return cache[version, spec_hash]


def _served_version(
    context: dg.AssetExecutionContext, registry: ModelRegistry, day_key: str, pinned: str
) -> str:
    """The pinned version, else the one recorded for the session (a re-run reproduces it), else production."""
    if pinned:
        return pinned
    try:
        recorded = context.resources.io_manager.load_partition(DAILY_RECOMMENDATIONS, day_key)
    except MissingPartitionError:
        recorded = None
    if recorded is not None and len(recorded):
        return str(recorded["model_version"].iloc[0])
    return production_version(registry)


def _day_inputs(
    tensor: dict[str, np.ndarray], slot_map: pd.DataFrame, day: pd.Timestamp
) -> tuple[np.ndarray, str]:
    """Tickers aligned on the tensor's slots, after checking both describe the same slot map."""
    rows = slot_map.sort_values("slot", kind="stable")
    label = f"session {day.date()}"
    for key in ("features", "tradable", "close", "slot_state", "slot_map_version", "feature_spec_hash"):
        if key not in tensor:
            raise KeyError(f"feature_tensor of {label} lacks array {key!r}")
    n_slots = tensor["close"].shape[0]
    if len(rows) != n_slots or not np.array_equal(rows["slot"].to_numpy(), np.arange(n_slots)):
        raise ValueError(f"slot_map of {label} has {len(rows)} rows; the tensor has {n_slots} slots")
    versions = set(rows["version"].astype(str))
    tensor_version = str(tensor["slot_map_version"].item())
    if versions != {tensor_version}:
        raise ValueError(
            f"feature_tensor of {label} was packed on slot map {tensor_version} but slot_map holds "
            f"{sorted(versions)}: re-materialise feature_tensor for that session"
        )
    if not np.array_equal(rows["state"].to_numpy(np.int8), tensor["slot_state"]):
        raise ValueError(f"feature_tensor and slot_map of {label} disagree on slot states")
    return rows["ticker"].to_numpy(object), tensor_version


def trade_day(
    book: Book,
    tensor: dict[str, np.ndarray],
    tickers: np.ndarray,
    slot_map_version: str,
    policy: Policy,
    config: PaperTradingConfig,
    day: pd.Timestamp,
) -> tuple[pd.DataFrame, Book, pd.DataFrame, float]:
    """One session: mark yesterday's book to today's closes, ask the policy for target weights, call
    BUY / SELL / HOLD and trade the book to the targets at the close (the environment's own maths).

    :param book: the portfolio after the previous session.
    :param tensor: the session's feature_tensor arrays.
    :param tickers: object [S] ticker of each slot ("" for padding), from the session's slot map.
    :param slot_map_version: version of that slot map.
    :param policy: the model serving the session.
    :param config: costs and the call threshold.
    :param day: the session.
    :return: the recommendations, the new book, its stored frame and the inference time in ms.
    """
    close, tradable = tensor["close"], tensor["tradable"].astype(bool)
    priced = np.isfinite(close) & (close > 0)
    today = {t: float(p) for t, p in zip(tickers[priced], close[priced], strict=True)}
    held_tickers = list(book.state.shares)
    prices = {**{t: book.last_price.get(t, np.nan) for t in held_tickers}, **today}
    current = slot_weights(book.state, tickers, prices, day)
    held = np.isin(tickers, held_tickers)
    locked, sell_only = held & ~priced, held & priced & ~tradable

    started = time.perf_counter()
    obs = build_observation(tensor["features"], tradable, held & priced, current[:-1], current[-1])
    target = infer_target_weights(
        policy.model,
        obs,
        tradable,
        np.where(sell_only, current[:-1], 0.0),
        np.where(locked, current[:-1], 0.0) if locked.any() else None,
        policy.temperature,
    )
    inference_ms = (time.perf_counter() - started) * 1000.0
    recs = recommend(
        target, current, tradable, tensor["slot_state"], tickers, close, policy.version, slot_map_version,
        day, config.threshold,
    )  # fmt: skip
    state, _, summary = apply_targets(
        book.state, to_ticker_weights(target, tickers), prices, config.buy_cost_pct, config.sell_cost_pct,
        day, policy.version, slot_map_version, locked=tickers[locked].tolist(),
        sell_only=tickers[sell_only].tolist(),
    )  # fmt: skip
    new_book = Book(
        state,
        {t: prices[t] for t in state.shares},
        book.inception,
        max(book.peak_value, state.value),
    )
    frame = new_book.to_frame(summary.value_before, summary.traded_value, summary.costs)
    return recs, new_book, frame, inference_ms


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
    required_resource_keys={"io_manager", "model_registry"},
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
        tickers, version = _day_inputs(tensor, slot_map[slot_map["date"] == day], day)
        served = _served_version(context, registry, key, config.model_version)
        policy = _policy(registry, served, str(tensor["feature_spec_hash"].item()), policies)
        previous_value = book.state.value
        recs, book, frame, inference_ms = trade_day(book, tensor, tickers, version, policy, config, day)
        recs_out[key], books_out[key] = recs, frame
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
