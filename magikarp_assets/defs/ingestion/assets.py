"""Ingestion assets: the universe, daily bars with their quality checks, benchmarks and fundamentals."""

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import ensure_trading_day, previous_trading_day
from magikarp_assets.core.ingestion import build_day_tables, expected_pairs
from magikarp_assets.core.market_data.base import describe_tickers
from magikarp_assets.core.market_data.fallback import fetch_with_fallback
from magikarp_assets.core.quality import BENCHMARK_SCHEMA, split_quarantine
from magikarp_assets.core.slots import SlotMap
from magikarp_assets.core.spec import BENCHMARK_TICKERS, SLOT_ACTIVE, SLOT_ARCHIVE
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.resources.io_manager import MissingPartitionError
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.settings import Thresholds

UNIVERSE = dg.AssetKey("universe_constituents")
RAW_OHLCV = dg.AssetKey("raw_ohlcv")
OHLCV_QUARANTINE = dg.AssetKey("ohlcv_quarantine")
BENCHMARK_PRICES = dg.AssetKey("benchmark_prices")
RAW_FUNDAMENTALS = dg.AssetKey("raw_fundamentals")
SLOT_MAP = dg.AssetKey("slot_map")  # defined with its asset in defs/universe, which imports this module

CHECK_COVERAGE = "coverage_above_threshold"
CHECK_FRESHNESS = "data_is_fresh"
CHECK_QUARANTINE = "quarantined_rows"

OWNER = "team:data-platform"
# Transient source failures: retry the step with exponential backoff and jitter.
FETCH_RETRY = dg.RetryPolicy(
    max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def partition_days(context: dg.AssetExecutionContext) -> pd.DatetimeIndex:
    """The sessions this run covers (one, or a range in a single-run backfill), each validated."""
    keys = context.partition_keys
    return pd.DatetimeIndex([ensure_trading_day(k) for k in keys])


@dg.asset(
    key=UNIVERSE,
    group_name="ingestion",
    kinds={"parquet"},
    owners=[OWNER],
    retry_policy=FETCH_RETRY,
)
def universe_constituents(context: dg.AssetExecutionContext, market_data: MarketDataResource) -> pd.DataFrame:
    """The investable universe: Russell 3000 members from iShares' IWV holdings in production (the bundled
    S&P 500 sample offline), with name, sector, index weight and the first session each is expected to
    trade."""
    universe = market_data.universe()
    if universe.empty:
        raise ValueError(f"universe from provider {market_data.provider!r} is empty: refusing to replace it")
    context.add_output_metadata(
        {
            "tickers": len(universe),
            "sectors": universe["sector"].nunique(),
            "provider": market_data.provider,
            "preview": dg.MetadataValue.md(universe.head(10).to_markdown(index=False)),
        }
    )
    return universe


def _slot_map_leavers(
    context: dg.AssetExecutionContext, first_day: pd.Timestamp, universe: set[str]
) -> list[str]:
    """Names in the previous session's stored slot map (active or archived) that are not in the universe:
    the paper portfolio may still hold them and must be able to value and sell them, so they are priced too
    (best effort: coverage is judged on the universe alone). None before the slot history starts."""
    prev_key = previous_trading_day(first_day).strftime("%Y-%m-%d")
    try:
        previous = SlotMap.from_frame(
            context.resources.io_manager.load_partition(SLOT_MAP, prev_key).drop(columns="date")
        )
    except MissingPartitionError:
        return []
    return sorted((set(previous.tickers(SLOT_ACTIVE)) | set(previous.tickers(SLOT_ARCHIVE))) - universe)


@dg.multi_asset(
    outs={
        "raw_ohlcv": dg.AssetOut(
            key=RAW_OHLCV,
            group_name="ingestion",
            kinds={"parquet"},
            owners=[OWNER],
            description="Daily OHLCV bars of every universe ticker, one partition per NYSE session, with the "
            "source that delivered each row and when; only rows that passed the hard quality rules.",
        ),
        "ohlcv_quarantine": dg.AssetOut(
            key=OHLCV_QUARANTINE,
            group_name="ingestion",
            kinds={"parquet"},
            owners=[OWNER],
            description="Bars that broke a hard rule (prices missing, not positive or outside [low, high], "
            "duplicates), kept aside with the rule and the source for review; never fed to features.",
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_COVERAGE,
            asset=RAW_OHLCV,
            blocking=True,
            description="Share of expected universe tickers with a clean bar is at least the threshold.",
        ),
        dg.AssetCheckSpec(
            CHECK_FRESHNESS,
            asset=RAW_OHLCV,
            blocking=True,
            description="The latest bar is dated on the partition's session (no stale data).",
        ),
        dg.AssetCheckSpec(
            CHECK_QUARANTINE,
            asset=RAW_OHLCV,
            description="Rows quarantined for breaking hard rules (warns when any).",
        ),
    ],
    ins={"universe": dg.AssetIn(UNIVERSE)},
    # Read, not loaded: names of yesterday's slot map that left the universe are still priced (below).
    deps=[
        dg.AssetDep(SLOT_MAP, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))
    ],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=FETCH_RETRY,
    required_resource_keys={"io_manager", "market_data"},
    can_subset=False,
)
def raw_ohlcv(context: dg.AssetExecutionContext, universe: pd.DataFrame):
    """Fetch, screen and store the day's bars (primary source first, backups for the gaps)."""
    market_data: MarketDataResource = context.resources.market_data
    thresholds = Thresholds.from_env()
    days = partition_days(context)
    expected = expected_pairs(universe, days)
    leavers = _slot_map_leavers(context, days[0], set(universe["ticker"]))
    if leavers:
        context.log.info(
            f"also pricing {len(leavers)} slot-map name(s) outside the universe: "
            f"{describe_tickers(leavers, 10)}"
        )
    # Fetch one earlier session too: its closes only serve to flag suspect overnight gaps.
    start = previous_trading_day(days.min())
    fetched, report = market_data.fetch_ohlcv(
        universe["ticker"].tolist() + leavers, start.date(), days.max().date(), screen=split_quarantine
    )
    clean, quarantine, coverage = build_day_tables(fetched, report, expected, days)
    worst = min(coverage, key=lambda c: c.ratio)
    sources = clean["source"].value_counts().to_dict()
    yield dg.Output(
        clean,
        output_name="raw_ohlcv",
        metadata={
            "rows": len(clean),
            "tickers_fetched": int(clean["ticker"].nunique()),
            "coverage": worst.ratio,
            "fetch_seconds": report.seconds,
            "rows_quarantined": len(quarantine),
            "suspect_returns": int(clean["suspect_return"].sum()),
            **{f"rows_from_{name.replace(':', '_')}": int(n) for name, n in sources.items()},
            "source_errors": dg.MetadataValue.json(report.errors),
        },
    )
    yield dg.Output(quarantine, output_name="ohlcv_quarantine", metadata={"rows": len(quarantine)})
    failing = [c for c in coverage if c.ratio < thresholds.coverage_min]
    yield dg.AssetCheckResult(
        check_name=CHECK_COVERAGE,
        asset_key=RAW_OHLCV,
        passed=not failing,
        metadata={
            "coverage_min_day": worst.ratio,
            "threshold": thresholds.coverage_min,
            "worst_day": worst.date,
            "missing_on_worst_day": describe_tickers(worst.missing, 25),
            "failing_days": ", ".join(c.date for c in failing) or "none",
        },
    )
    stale = [c.date for c in coverage if c.delivered == 0]
    yield dg.AssetCheckResult(
        check_name=CHECK_FRESHNESS,
        asset_key=RAW_OHLCV,
        passed=not stale,
        metadata={
            "latest_bar": str(clean["date"].max().date()) if len(clean) else "none",
            "days_without_bars": ", ".join(stale) or "none",
        },
    )
    ratio = len(quarantine) / max(1, len(clean) + len(quarantine))
    yield dg.AssetCheckResult(
        check_name=CHECK_QUARANTINE,
        asset_key=RAW_OHLCV,
        passed=ratio <= thresholds.quarantine_warn_ratio,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows_quarantined": len(quarantine),
            "quarantined_ratio": ratio,
            "rows": dg.MetadataValue.md(
                quarantine[["date", "ticker", "rule", "source"]]
                .assign(date=quarantine["date"].dt.date)
                .to_markdown(index=False)
                if len(quarantine)
                else "none"
            ),
        },
    )


@dg.asset(
    key=BENCHMARK_PRICES,
    group_name="ingestion",
    kinds={"parquet"},
    owners=[OWNER],
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=FETCH_RETRY,
)
def benchmark_prices(context: dg.AssetExecutionContext, market_data: MarketDataResource) -> pd.DataFrame:
    """Daily closes (and dividend-adjusted closes) of QQQ, the benchmark the portfolio is judged against,
    and SPY."""
    days = partition_days(context)
    rows, report = fetch_with_fallback(
        market_data.benchmark_sources(), list(BENCHMARK_TICKERS), days.min().date(), days.max().date()
    )
    # Index series have no dividends: where a source gives no adjusted close, the close is the total return.
    rows = rows.assign(adj_close=rows["adj_close"].fillna(rows["close"]))
    out = BENCHMARK_SCHEMA.validate(
        rows[["date", "ticker", "close", "adj_close", "source"]].reset_index(drop=True)
    )
    missing = sorted(
        {(t, d.strftime("%Y-%m-%d")) for t in BENCHMARK_TICKERS for d in days}
        - set(zip(out["ticker"], out["date"].dt.strftime("%Y-%m-%d"), strict=True))
    )
    if missing:
        raise ValueError(
            f"benchmark prices missing for {missing[:10]} (rule: every benchmark on every session)"
        )
    context.add_output_metadata(
        {
            "rows": len(out),
            "qqq_close": float(out.loc[out.ticker == "QQQ", "close"].iloc[-1]),
            "fetch_seconds": report.seconds,
        }
    )
    return out


@dg.asset(
    key=RAW_FUNDAMENTALS,
    group_name="ingestion",
    kinds={"parquet"},
    owners=[OWNER],
    retry_policy=FETCH_RETRY,
)
def raw_fundamentals(context: dg.AssetExecutionContext, market_data: MarketDataResource) -> pd.DataFrame:
    """Reported company fundamentals (revenue, earnings, equity, debt, shares) with the date each report
    became public, so features only ever see what an investor could have known on the day."""
    out = market_data.fundamentals()
    if out.empty:
        raise ValueError(
            f"no fundamentals from provider {market_data.provider!r}: refusing to replace the history"
        )
    context.add_output_metadata(
        {
            "reports": len(out),
            "tickers": int(out["ticker"].nunique()),
            "estimated_public_dates": int(out["public_date_estimated"].sum()),
            "latest_public_date": str(pd.Timestamp(out["public_date"].max()).date()),
        }
    )
    return out
