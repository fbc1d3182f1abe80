"""The dbt-like SQL loader: headers, refs, dependency order, cycles, rendering and running on DuckDB."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from magikarp_assets.core import sql_models
from magikarp_assets.core.features.inputs import sample_feature_inputs
from magikarp_assets.core.sql_models import (
    SqlModelError,
    discover_models,
    external_inputs,
    input_window,
    load_models,
    parse_model,
    required_dates,
    run_model,
    topological_order,
)


def _write(folder: Path, name: str, body: str, lookback: int = 0) -> Path:
    path = folder / f"{name}.sql"
    path.write_text(f"-- {name}: test model\n-- grain: daily\n-- lookback: {lookback}\n{body}\n")
    return path


def test_parse_model_reads_header_and_refs_once_in_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "b",
        "SELECT * FROM {{ ref('a') }} JOIN {{ref(\"c\")}} USING (date) JOIN {{ ref('a') }} USING (date)",
        lookback=7,
    )
    model = parse_model(path)
    assert (model.name, model.refs, model.lookback, model.path) == ("b", ("a", "c"), 7, path)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("-- grain: daily\n", "lookback"),
        ("-- grain: daily\n-- lookback: seven\n", "not a non-negative integer"),
        ("-- grain: monthly\n-- lookback: 1\n", "not supported"),
        (
            "-- grain: daily\n-- lookback: 1\n-- per_ticker: yes\n",
            "per_ticker 'yes' is not 'true' or 'false'",
        ),
    ],
)
def test_malformed_header_is_refused_naming_the_file(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "bad.sql"
    path.write_text(header + "SELECT 1 AS date\n")
    with pytest.raises(SqlModelError, match=message) as err:
        parse_model(path)
    assert "bad.sql" in str(err.value)


def test_models_come_upstream_first_and_external_inputs_are_listed(tmp_path: Path) -> None:
    _write(tmp_path, "a_final", "SELECT * FROM {{ ref('m_middle') }} JOIN {{ ref('z_first') }} USING (date)")
    _write(tmp_path, "m_middle", "SELECT * FROM {{ ref('z_first') }}")
    _write(tmp_path, "z_first", "SELECT * FROM {{ ref('raw') }}")
    models = discover_models(tmp_path)
    assert list(models) == ["z_first", "m_middle", "a_final"]
    assert external_inputs(models) == ["raw"]


def test_a_cycle_is_refused_naming_the_models_on_it(tmp_path: Path) -> None:
    _write(tmp_path, "a", "SELECT * FROM {{ ref('b') }}")
    _write(tmp_path, "b", "SELECT * FROM {{ ref('c') }}")
    _write(tmp_path, "c", "SELECT * FROM {{ ref('a') }}")
    _write(tmp_path, "d", "SELECT * FROM {{ ref('raw') }}")
    with pytest.raises(SqlModelError, match="cycle") as err:
        discover_models(tmp_path)
    on_cycle = str(err.value).rsplit(":", 1)[1].split(" -> ")
    assert {name.strip() for name in on_cycle} == {"a", "b", "c"}


def test_render_replaces_refs_target_dates_and_lookback(tmp_path: Path) -> None:
    model = parse_model(
        _write(tmp_path, "m", "SELECT {{ lookback }} FROM {{ ref('raw') }}, {{ target_dates }}", 3)
    )
    sql = model.render({"raw": "stored raw"})
    assert 'SELECT 3 FROM "stored raw", "__target_dates__m"' in sql and "{{" not in sql


def test_run_model_chains_upstream_models_and_returns_only_the_requested_days(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "doubled",
        "SELECT CAST(date AS DATE) AS date, ticker, 2 * x AS x FROM {{ ref('raw') }}\n"
        "WHERE CAST(date AS DATE) IN (SELECT date FROM {{ target_dates }})",
    )
    _write(
        tmp_path,
        "summed",
        "SELECT date, ticker, sum(x) OVER (PARTITION BY ticker ORDER BY date ROWS {{ lookback }} PRECEDING)\n"
        "AS x FROM {{ ref('doubled') }} QUALIFY date IN (SELECT date FROM {{ target_dates }})",
        lookback=1,
    )
    days = pd.bdate_range("2016-06-13", "2016-06-17")
    raw = pd.DataFrame({"date": days, "ticker": "T", "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = run_model("summed", {"raw": raw}, ["2016-06-15", "2016-06-16"], sql_dir=tmp_path)
    assert out["x"].tolist() == [10.0, 14.0]  # 2*(2+3), 2*(3+4): the upstream ran for the window only
    assert out["date"].dtype == "datetime64[ns]"
    stored = run_model("summed", {"doubled": raw.assign(x=raw["x"])}, ["2016-06-15"], sql_dir=tmp_path)
    assert stored["x"].tolist() == [5.0]  # a stored upstream output given as input is used as is


def test_output_is_sorted_by_date_and_ticker_or_by_the_declared_order(tmp_path: Path) -> None:
    body = (
        "SELECT CAST(date AS DATE) AS date, ticker, slot FROM {{ ref('raw') }}\n"
        "WHERE CAST(date AS DATE) IN (SELECT date FROM {{ target_dates }})"
    )
    _write(tmp_path, "by_ticker", body)
    (tmp_path / "by_slot.sql").write_text(
        "-- by_slot: test model\n-- grain: daily\n-- lookback: 0\n-- order_by: date, slot\n" + body + "\n"
    )
    days = pd.to_datetime(["2016-06-14", "2016-06-13"])
    raw = pd.DataFrame({"date": days.repeat(2), "ticker": ["B", "A"] * 2, "slot": [0, 1, 1, 0]})
    by_ticker = run_model("by_ticker", {"raw": raw}, days, sql_dir=tmp_path)
    assert list(zip(by_ticker["date"].dt.day, by_ticker["ticker"], strict=True)) == [
        (13, "A"),
        (13, "B"),
        (14, "A"),
        (14, "B"),
    ]
    assert parse_model(tmp_path / "by_slot.sql").order_by == ("date", "slot")
    by_slot = run_model("by_slot", {"raw": raw}, days, sql_dir=tmp_path)
    assert list(zip(by_slot["date"].dt.day, by_slot["slot"], strict=True)) == [
        (13, 0),
        (13, 1),
        (14, 0),
        (14, 1),
    ]
    assert by_slot["ticker"].tolist() == ["A", "B", "B", "A"]


def test_run_model_names_a_missing_input(tmp_path: Path) -> None:
    _write(tmp_path, "m", "SELECT * FROM {{ ref('raw') }}")
    with pytest.raises(SqlModelError, match="needs input 'raw'"):
        run_model("m", {}, ["2016-06-15"], sql_dir=tmp_path)
    with pytest.raises(SqlModelError, match="unknown SQL model 'nope'"):
        run_model("nope", {}, ["2016-06-15"], sql_dir=tmp_path)


def test_project_models_declare_daily_grain_lookbacks_and_raw_inputs() -> None:
    models = load_models()
    assert set(models) == {
        "slot_membership",
        "stg_prices",
        "technical_features",
        "fundamental_features",
        "stock_features",
    }
    assert topological_order(models).index("stg_prices") < topological_order(models).index(
        "technical_features"
    )
    assert external_inputs(models) == ["raw_fundamentals", "raw_ohlcv", "slot_map"]
    assert {m.name: m.lookback for m in models.values()} == {
        "slot_membership": 0,
        "stg_prices": 6,
        "technical_features": 199,
        "fundamental_features": 0,
        "stock_features": 0,
    }
    assert all(m.grain == "daily" and "{{ target_dates }}" in m.sql for m in models.values())
    assert {m.name for m in models.values() if m.per_ticker} == {
        "stg_prices",
        "technical_features",
        "fundamental_features",
    }


def test_required_dates_follow_the_lookback_windows_in_sessions() -> None:
    need = required_dates("stock_features", ["2016-06-15"], load_models())
    assert list(need["stock_features"]) == [pd.Timestamp("2016-06-15")]
    technical = input_window(load_models()["technical_features"], "2016-06-15")
    assert len(technical) == 200 and technical[-1] == pd.Timestamp("2016-06-15")
    assert list(need["stg_prices"]) == list(technical)
    assert len(need["raw_ohlcv"]) == 206 and need["raw_ohlcv"][0] < technical[0]


def test_stg_prices_refuses_two_bars_for_one_ticker_and_session() -> None:
    bar = {
        "ticker": "AAPL",
        "open": 1.0,
        "high": 1.0,
        "low": 1.0,
        "close": 1.0,
        "adj_close": 1.0,
        "volume": 10.0,
        "source": "test",
    }
    raw = pd.DataFrame(
        [
            {**bar, "date": "2016-06-14"},
            {**bar, "date": "2016-06-15"},
            {**bar, "date": "2016-06-15", "close": 2.0},
        ]
    )
    with pytest.raises(Exception, match="stg_prices: two bars for AAPL dated 2016-06-15"):
        run_model("stg_prices", {"raw_ohlcv": raw}, ["2016-06-15"])


def test_consecutive_per_ticker_models_share_ticker_chunks_unless_they_wait_for_another_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pt = "-- per_ticker: true\n"
    dated = "WHERE CAST(date AS DATE) IN (SELECT date FROM {{ target_dates }})"
    _write(tmp_path, "a", pt + "SELECT CAST(date AS DATE) AS date, ticker, x FROM {{ ref('raw') }} " + dated)
    _write(tmp_path, "b", "SELECT date, ticker, x - avg(x) OVER (PARTITION BY date) AS x FROM {{ ref('a') }}")
    _write(tmp_path, "c", pt + "SELECT date, ticker, 10 * x AS x FROM {{ ref('a') }}")
    _write(tmp_path, "d", pt + "SELECT date, ticker, x + 1 AS x FROM {{ ref('b') }}")
    _write(
        tmp_path,
        "e",
        "SELECT date, ticker, c.x AS c, d.x AS d\n"
        "FROM {{ ref('c') }} AS c JOIN {{ ref('d') }} AS d USING (date, ticker)",
    )
    models = load_models(tmp_path)
    plan = sql_models._plan("e", models, {"raw": pd.DataFrame()})
    assert [m.name for m in sql_models._ticker_group(plan, models, {"raw"})] == ["a", "c"]  # d waits for b
    raw = pd.DataFrame(
        {"date": pd.Timestamp("2016-06-15"), "ticker": ["A", "B", "C", "D"], "x": [1.0, 2.0, 3.0, 6.0]}
    )
    chunked = run_model("e", {"raw": raw}, ["2016-06-15"], sql_dir=tmp_path)
    assert chunked["c"].tolist() == [10.0, 20.0, 30.0, 60.0]  # a then c on the same chunks
    assert chunked["d"].tolist() == [-1.0, 0.0, 1.0, 4.0]  # b across all tickers (mean 3), then d
    monkeypatch.setattr(sql_models, "THREADS", 1)
    pd.testing.assert_frame_equal(chunked, run_model("e", {"raw": raw}, ["2016-06-15"], sql_dir=tmp_path))


def test_per_ticker_models_give_the_same_rows_in_ticker_chunks_as_in_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path,
        "ranked",
        "-- per_ticker: true\nSELECT CAST(date AS DATE) AS date, ticker, x,\n"
        "row_number() OVER (PARTITION BY ticker ORDER BY date) AS n FROM {{ ref('raw') }}\n"
        "QUALIFY CAST(date AS DATE) IN (SELECT date FROM {{ target_dates }})",
        lookback=2,
    )
    days = pd.bdate_range("2016-06-13", "2016-06-17")
    raw = pd.DataFrame({"date": list(days) * 3, "ticker": ["A"] * 5 + ["B"] * 5 + ["C"] * 5, "x": range(15)})
    assert load_models(tmp_path)["ranked"].per_ticker
    chunked = run_model("ranked", {"raw": raw}, ["2016-06-17"], sql_dir=tmp_path)
    # every ticker once (no row lost or doubled across chunks), numbered over its own rows only
    assert chunked["ticker"].tolist() == ["A", "B", "C"] and chunked["n"].tolist() == [5, 5, 5]
    monkeypatch.setattr(sql_models, "THREADS", 1)
    pd.testing.assert_frame_equal(
        chunked, run_model("ranked", {"raw": raw}, ["2016-06-17"], sql_dir=tmp_path)
    )

    days = ["2015-03-10", "2016-06-15"]
    inputs = sample_feature_inputs(days)
    one_run = run_model("stock_features", inputs, days)
    monkeypatch.setattr(sql_models, "THREADS", 2)
    pd.testing.assert_frame_equal(run_model("stock_features", inputs, days), one_run, check_exact=True)
