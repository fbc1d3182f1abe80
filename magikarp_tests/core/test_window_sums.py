"""Streamed window sums (macros window_sum, stream_check) equal DuckDB's framed fixed-point SUM exactly
wherever the window lies inside its partition."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core.sql_models import load_macros

STREAMED = """
WITH running AS (
    SELECT
        *,
        row_number() OVER stream AS pos,
        sum(coalesce(to_fixed(x), 0)) OVER stream AS c,
        count(x) OVER stream AS n
    FROM (SELECT * FROM data ORDER BY k, i)
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
)
SELECT
    k,
    i,
    rn,
    window_sum(c, lag(c, {w}) OVER stream, n, lag(n, {w}) OVER stream) AS s,
    stream_check(pos, lag(pos) OVER stream, true, 'test') AS checked
FROM running
WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
ORDER BY k, i
"""
FRAMED = """
SELECT k, i, from_fixed(sum(to_fixed(x)) OVER (PARTITION BY k ORDER BY i ROWS {w_1} PRECEDING)) AS s
FROM data
ORDER BY k, i
"""


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for sql in load_macros().values():
        con.execute(sql)
    rng = np.random.default_rng(7)
    parts = []
    for k, length in enumerate([1, 3, 14, 15, 40, 250, 210]):
        x = rng.lognormal(0, 2, length) * rng.choice([-1, 1], length)
        x[rng.random(length) < 0.2] = np.nan  # NULLs
        if k == 2:
            x[:5] = np.nan  # windows with no value at all
        if k == 6:
            x[:] = np.nan  # every window of every length up to 210 without a value
        parts.append(pd.DataFrame({"k": f"T{k:02d}", "i": np.arange(length) * 3 + k, "x": x}))
    data = pd.concat(parts).sample(frac=1, random_state=1)  # the streamed version sorts itself
    data["rn"] = data.groupby("k")["i"].rank(method="first").astype("int64")
    con.register("data", data)
    return con


@pytest.mark.parametrize("w", [1, 2, 14, 200])
def test_streamed_window_sum_equals_the_framed_sum_exactly(con: duckdb.DuckDBPyConnection, w: int) -> None:
    """Exactly equal on every row at least the w-th of its partition (the rows a model may use)."""
    streamed = con.sql(STREAMED.replace("{w}", str(w))).df()
    framed = con.sql(FRAMED.replace("{w_1}", str(w - 1))).df()
    assert streamed["checked"].all()
    full = (streamed["rn"] >= w).to_numpy()
    pd.testing.assert_series_equal(
        streamed["s"][full].reset_index(drop=True), framed["s"][full].reset_index(drop=True), check_exact=True
    )
    assert framed["s"][full].isna().any()  # windows of NULLs only stay NULL


def test_stream_check_refuses_rows_out_of_order(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT stream_check(5, 4, true, 'm')").fetchone() == (True,)
    with pytest.raises(duckdb.Error, match="m: rows left the stream order at row 5"):
        con.execute("SELECT stream_check(5, 3, true, 'm')").fetchall()
