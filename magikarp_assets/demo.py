"""`make demo`: the whole daily cycle on the bundled real sample, offline, ending with the day's
recommendations printed and the email written to the outbox.

Steps: reference data; ingestion, slot maps and features over enough history for the 200-session
indicators and the training window; a DEMO model (PPO with a small, documented budget, force-approved with
the reason recorded: it has not been through the backtest and shadow gates); then recommendations, the paper
portfolio, performance metrics and the email for the sample's last sessions.
"""

import argparse
import time

import dagster as dg
import pandas as pd

from magikarp_assets.core.calendar import trading_day_window
from magikarp_assets.core.market_data.sample import SAMPLE_LAST_DAY
from magikarp_assets.core.promotion import promote
from magikarp_assets.definitions import build_definitions
from magikarp_assets.defs.features.sql_assets import SQL_FEATURE_ASSETS
from magikarp_assets.defs.partitions import range_tags

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
INGESTION = ["raw_ohlcv", "ohlcv_quarantine", "benchmark_prices", "slot_map"]
FEATURES = [*SQL_FEATURE_ASSETS, "feature_tensor"]
SIGNALS = ["daily_recommendations", "portfolio_state", "performance_metrics"]
# The demo model: small budget so the demo stays within minutes on 2 cores. Not a production model.
DEMO_TRAINING = {
    "total_timesteps": 1024,
    "n_steps": 128,
    "batch_size": 64,
    "n_epochs": 2,
    "training_sessions": 120,
    "backtest_months": 1,
    "seed": 0,
}
FEATURE_HISTORY_SESSIONS = 200 + 120 + 21  # indicator lookback + training window + backtest month


class Demo:
    def __init__(self) -> None:
        self.defs = build_definitions("local")
        self.instance = dg.DagsterInstance.get()

    def run(
        self,
        label: str,
        selection: list[str],
        days: pd.DatetimeIndex | None = None,
        partition: str | None = None,
        run_config: dict | None = None,
    ) -> dg.ExecuteInProcessResult:
        started = time.perf_counter()
        tags = range_tags(f"{days[0].date()}", f"{days[-1].date()}") if days is not None else None
        result = dg.materialize(
            list(self.defs.assets),
            instance=self.instance,
            resources=self.defs.resources,
            selection=selection,
            tags=tags,
            partition_key=partition,
            run_config={**QUIET, **(run_config or {})},
            raise_on_error=False,
        )
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure]
            raise SystemExit(f"{label} failed (run {result.run_id}):\n" + "\n".join(failures))
        print(f"  {label}: done in {time.perf_counter() - started:.0f} s", flush=True)
        return result


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    mats = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--end", default=str(SAMPLE_LAST_DAY.date()), help="last session (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=5, help="sessions of recommendations to run")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    serve = trading_day_window(args.end, args.days)
    history = trading_day_window(args.end, FEATURE_HISTORY_SESSIONS + args.days)
    month = serve[0].to_period("M").to_timestamp()
    demo = Demo()
    print(
        "TMagikarp demo on the bundled real sample (offline): "
        f"history {history[0].date()}..{history[-1].date()}, "
        f"recommendations for {serve[0].date()}..{serve[-1].date()}"
    )
    demo.run("reference data (universe, fundamentals)", ["universe_constituents", "raw_fundamentals"])
    ingest = demo.run(f"ingestion + slot maps, {len(history)} sessions", INGESTION, history)
    meta = _metadata(ingest, "raw_ohlcv")
    print(
        f"    {meta.get('rows')} bars, worst-day coverage {meta.get('coverage', 0):.2%}, "
        f"{meta.get('rows_quarantined')} quarantined rows, {meta.get('suspect_returns')} suspect gaps"
    )
    demo.run(f"features (SQL on DuckDB) + tensors, {len(history)} sessions", FEATURES, history)
    trained = demo.run(
        f"demo model: PPO {DEMO_TRAINING['total_timesteps']} steps at 3,600 slots",
        ["candidate_model"],
        partition=str(month.date()),
        run_config={"ops": {"candidate_model": {"config": DEMO_TRAINING}}},
    )
    version = _metadata(trained, "candidate_model")["version"]
    registry = demo.defs.resources["model_registry"].registry()
    promote(
        registry,
        version,
        approver="make demo",
        note="demo cycle",
        force_reason="demo model trained with a small budget; not through the backtest and shadow gates",
    )
    print(f"    {version} force-promoted for the demo (recorded in the production history)")
    # Pinned: sessions an earlier demo already served record that model, and a re-run would reproduce it.
    signals = demo.run(
        f"recommendations, paper portfolio, metrics, {len(serve)} sessions",
        SIGNALS,
        serve,
        run_config={"ops": {"paper_trading": {"config": {"model_version": version}}}},
    )
    email = demo.run("daily email + HTML report", ["daily_report"], partition=str(serve[-1].date()))
    demo.run("recommendation history (table + page)", ["recommendation_history"])
    _print_day(demo, signals, email, serve[-1])
    print(f"demo finished in {time.perf_counter() - began:.0f} s; open the UI with `make dev`")


def _print_day(
    demo: Demo, result: dg.ExecuteInProcessResult, email: dg.ExecuteInProcessResult, day: pd.Timestamp
) -> None:
    store = demo.defs.resources["io_manager"]
    recs = store.load_partition(dg.AssetKey("daily_recommendations"), f"{day.date()}")
    counts = recs["action"].value_counts().to_dict()
    print(
        f"\nRecommendations for {day.date()} (model {recs['model_version'].iloc[0]}): "
        f"{counts.get('BUY', 0)} BUY, {counts.get('SELL', 0)} SELL, {counts.get('HOLD', 0)} HOLD"
    )
    cols = ["rank", "ticker", "action", "current_weight", "target_weight", "confidence", "price"]
    top = recs.sort_values("rank").head(15)[cols]
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(top.to_string(index=False))
    book = _metadata(result, "portfolio_state")
    perf = _metadata(result, "performance_metrics")
    report = _metadata(email, "daily_report")
    value, cash = book.get("value", float("nan")), book.get("cash", float("nan"))
    mine, qqq = (
        perf.get("cumulative_return", float("nan")),
        perf.get("benchmark_cumulative_return", float("nan")),
    )
    print(f"\nPaper portfolio: value {value:,.0f}, cash {cash:,.0f}; return {mine:.2%} vs QQQ {qqq:.2%}")
    print(f"Email ({report.get('transport')}): {report.get('subject')} -> {report.get('target')}")
    print(f"Daily report (offline HTML): {report.get('report_path', report.get('report_url'))}")


if __name__ == "__main__":
    main()
