"""The reporting assets on a small real world spanning a month end: the daily HTML report (offline, with
system health), the recommendation history (DuckDB-queryable, the very outcomes the success rates count),
and the monthly report requested by its sensor once the month's last session is measured."""

import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb
import pandas as pd
import pytest

from magikarp_assets.core.calendar import trading_days
from magikarp_assets.core.notify import read_eml
from magikarp_assets.defs.ingestion.assets import CHECK_COVERAGE, RAW_OHLCV
from magikarp_assets.defs.reporting import assets as reporting_assets
from magikarp_assets.defs.signals import reporting
from magikarp_tests.reports.small_world import CYCLE, VERSION, build_world, resources, run, session_keys

RUN_DAYS = trading_days("2016-05-25", "2016-06-02")  # 25, 26, 27, 31 May; 1, 2 June
KEYS = session_keys(RUN_DAYS)
SHORT = {"ops": {"performance_metrics": {"config": {"success_horizons": [1, 2]}}}}
HISTORY_SHORT = {"ops": {"recommendation_history": {"config": {"success_horizons": [1, 2]}}}}


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    """The daily cycle run over every session once; tests add reports on top of copies of it."""
    root = tmp_path_factory.mktemp("report_world")
    build_world(root / "store", RUN_DAYS)
    instance = dg.DagsterInstance.ephemeral()
    res = resources(root / "store", root / "outbox")
    run(res, instance, CYCLE, KEYS[0], KEYS[-1], run_config=SHORT)
    return res, instance, root


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    mats = [m for m in result.get_asset_materialization_events() if m.materialization.asset_key == key]
    return {name: value.value for name, value in mats[-1].materialization.metadata.items()}


def _offline(html: str) -> None:
    """plotly.js is inline in the head, and nothing else on the page loads from elsewhere."""
    head = "<script type='text/javascript'>"
    start = html.index(head)
    end = html.index("</script>", start)
    assert end - start > 3_000_000 and "Plotly" in html[start:end]  # the whole library
    rest = html[:start] + html[end:]
    assert "Plotly.newPlot" in rest and not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://", rest)


def test_daily_report_is_an_offline_page_with_health_and_metadata(cycle):
    res, instance, root = cycle
    # A failed blocking check recorded in the instance must show up in the health section.
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=RAW_OHLCV, check_name=CHECK_COVERAGE, passed=False, metadata={"worst_day": KEYS[-1]}
        )
    )
    result = run(res, instance, [reporting.DAILY_REPORT], KEYS[-1])
    meta = _metadata(result, reporting.DAILY_REPORT)
    path = Path(meta["report_path"])
    assert urlparse(meta["report_url"]).path == str(path) and path.name == f"{KEYS[-1]}.html"
    html = path.read_text()
    _offline(html)
    recs = pd.read_parquet(root / "store" / "daily_recommendations" / f"{KEYS[-1]}.parquet")
    calls = recs[recs["action"].isin(["BUY", "SELL"])]
    assert len(calls) > 0 and f"Recommendations ({len(calls)} BUY/SELL calls)" in html
    assert html.count("Plotly.newPlot") == 3  # portfolio vs QQQ, sectors, changes since yesterday
    assert "Changes since the previous session" in html and "Weights by sector" in html
    # Health: the failed check with its reason, the production model and its training data's age.
    assert meta["health_failed_checks"] == 1.0 and "coverage_above_threshold" in html and "worst_day" in html
    assert VERSION in html and meta["model_sessions_since_training"] == len(RUN_DAYS)
    top = meta["top_recommendations"]
    first = calls.sort_values("rank").iloc[0]
    assert top.count("\n") == 1 + min(10, len(calls)) and f"| {first['ticker']} " in top
    assert "Portfolio value" not in top and "portfolio value" in meta["portfolio_summary"]
    mail = read_eml(next((root / "outbox").glob("*.eml")))
    assert str(path) in mail.get_body(("plain",)).get_content()  # the email links the full report


def test_recommendation_history_is_queryable_and_matches_the_success_rates(cycle, tmp_path):
    res, instance, root = cycle
    result = run(res, instance, [reporting_assets.RECOMMENDATION_HISTORY], run_config=HISTORY_SHORT)
    meta = _metadata(result, reporting_assets.RECOMMENDATION_HISTORY)
    table = root / "store" / "recommendation_history.parquet"
    history = pd.read_parquet(table)
    recs = pd.concat(
        [pd.read_parquet(root / "store" / "daily_recommendations" / f"{k}.parquet") for k in KEYS]
    )
    assert len(history) == len(recs) and meta["as_of"] == KEYS[-1]
    # DuckDB, straight on the parquet: every call of one ticker, with model version and return since.
    ticker = history.loc[history["action"] == "BUY", "ticker"].iloc[0]
    rows = duckdb.sql(
        f"select date, action, model_version, price, last_price, return_since from read_parquet('{table}') "
        "where ticker = $ticker order by date",
        params={"ticker": ticker},
    ).df()
    assert len(rows) == int((recs["ticker"] == ticker).sum()) and set(rows["model_version"]) == {VERSION}
    last_close = recs[(recs["ticker"] == ticker) & (recs["date"] == RUN_DAYS[-1])]["price"].iloc[0]
    expected = last_close / rows["price"] - 1
    pd.testing.assert_series_equal(rows["return_since"], expected, check_names=False, rtol=1e-12)
    by_date = duckdb.sql(f"select count(*) from read_parquet('{table}') where date = '{KEYS[2]}'").fetchall()[
        0
    ]
    assert by_date[0] == int((recs["date"] == RUN_DAYS[2]).sum())
    # The success rates performance_metrics reports are exactly the statuses counted here.
    perf = pd.read_parquet(root / "store" / "performance_metrics" / f"{KEYS[-1]}.parquet").iloc[-1]
    for horizon in (1, 2):
        status = history[f"status_{horizon}s"]
        assert int((status == "success").sum()) == perf[f"n_success_{horizon}d"]
        assert int(status.isin(["success", "failure"]).sum()) == perf[f"n_resolved_{horizon}d"] > 0
        assert meta[f"success_rate_{horizon}d"] == pytest.approx(perf[f"success_rate_{horizon}d"])
    assert set(history.loc[history["action"] == "HOLD", "status_1s"]) == {""}
    page = Path(meta["report_path"]).read_text()
    _offline(page)
    assert f'"{ticker}"' in page


def test_monthly_report_runs_after_the_last_session_of_the_month(cycle, tmp_path):
    res, instance, root = cycle
    shutil.rmtree(root / "outbox", ignore_errors=True)
    # Only May has its last session (31 May) measured: the sensor requests May, not June.
    for key in KEYS:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(reporting.PERFORMANCE_METRICS, partition=key)
        )
    context = dg.build_sensor_context(instance=instance)
    requests = reporting_assets.monthly_report_after_month_end(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [("2016-05-01", "monthly_report:2016-05")]
    result = run(res, instance, [reporting_assets.MONTHLY_REPORT], "2016-05-01")
    meta = _metadata(result, reporting_assets.MONTHLY_REPORT)
    perf = pd.read_parquet(root / "store" / "performance_metrics" / "2016-05-31.parquet").set_index("date")
    assert meta["last_session"] == "2016-05-31" and meta["sessions"] == 4.0
    assert meta["month_return"] == pytest.approx(
        perf["value"].iloc[-1] / perf["value"].iloc[0] - 1, rel=1e-12
    )
    assert meta["benchmark_month_return"] == pytest.approx(
        perf["benchmark"].iloc[-1] / perf["benchmark"].iloc[0] - 1, rel=1e-12
    )
    html = Path(meta["report_path"]).read_text()
    _offline(html)
    assert html.count("Plotly.newPlot") == 5  # equity, drawdown, rolling Sharpe, success, versions
    assert "force_promote" in html  # the forced promotion that started the series is marked
    assert "Model versions over time" in html and VERSION in html
    (mail_path,) = (root / "outbox").glob("*.eml")
    mail = read_eml(mail_path)
    assert mail["Subject"].strip() == "[TMagikarp INFO] Monthly performance 2016-05"
    text = mail.get_body(("plain",)).get_content()
    assert f"portfolio return: {meta['month_return']:+.2%}" in text and meta["report_path"] in text
    assert re.search(r"QQQ return: [+-]\d+\.\d\d%", text) and "success rate 1 sessions" in text
    # Once reported, May is not requested again; June is refused until its last session is measured.
    assert isinstance(reporting_assets.monthly_report_after_month_end(context), dg.SkipReason)
    failed = run(res, instance, [reporting_assets.MONTHLY_REPORT], "2016-06-01", raise_on_error=False)
    assert not failed.success
    error = failed.get_step_failure_events()[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    assert "performance_metrics of session 2016-06-30" in error.message
