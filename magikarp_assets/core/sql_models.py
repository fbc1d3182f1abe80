"""Loads the dbt-like SQL models (one file per model) and runs them on DuckDB for a set of trading days.

A model file declares its upstream tables with ``{{ ref('name') }}`` and carries a header::

    -- grain: daily
    -- lookback: 199

An optional ``-- per_ticker: true`` says each ticker's output rows depend only on that ticker's rows of
the ticker-keyed inputs; such a model runs as independent ticker chunks on parallel connections (DuckDB
runs a streaming window on one core), and its output is the same rows whatever the chunking. Per_ticker
models that read only each other and the inputs run on the same chunks, one after the other, and what
only they read never leaves the chunk's connection.

``lookback: N`` means the output for session t reads the upstream daily tables over the sessions
[t-N, t] (N + 1 sessions) and nothing older; upstream tables that are not daily partitions (the full
fundamentals history) are read whole. ``{{ target_dates }}`` names a one-column table (``date``) of the
sessions to output, ``{{ sessions }}`` the NYSE calendar (``date``, ``sess``: the session's absolute number,
so windows count sessions even across a day with no data), and ``{{ lookback }}`` renders the header's
number, so the SQL states its window once. An optional ``-- order_by: date, slot`` names the output's sort
key (default ``date, ticker``; it must make the order unique so outputs compare byte for byte).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from magikarp_assets.core.calendar import ensure_trading_day, nyse

SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
MACRO_SUBDIR = "macros"  # *.sql files of CREATE MACRO statements, run on every connection before the models
_REF = re.compile(r"\{\{\s*ref\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\)\s*\}\}")
_TARGET_DATES = re.compile(r"\{\{\s*target_dates\s*\}\}")
_LOOKBACK_VAR = re.compile(r"\{\{\s*lookback\s*\}\}")
_SESSIONS_VAR = re.compile(r"\{\{\s*sessions\s*\}\}")
SESSIONS_TABLE = "__sessions__"
HEADER_KEYS = ("grain", "lookback", "per_ticker", "order_by")  # the `-- key: value` header lines
_HEADER = re.compile(rf"^--\s*({'|'.join(HEADER_KEYS)})\s*:\s*(\S.*?)\s*$", re.MULTILINE)
DEFAULT_ORDER = ("date", "ticker")
THREADS = 2  # DuckDB threads per run, and ticker chunks run side by side for per_ticker models


class SqlModelError(ValueError):
    """A model file is malformed, the model graph has a cycle, or a run lacks an input."""


@dataclass(frozen=True)
class SqlModel:
    """One SQL model: its name (file stem), raw SQL text, upstream refs, lookback in sessions and path;
    per_ticker when each ticker's rows depend on that ticker's input rows only; order_by the output's sort
    key."""

    name: str
    sql: str
    refs: tuple[str, ...]
    lookback: int
    path: Path
    grain: str = "daily"
    per_ticker: bool = False
    order_by: tuple[str, ...] = DEFAULT_ORDER

    def render(self, tables: Mapping[str, str] | None = None) -> str:
        """SQL with each ref replaced by a quoted DuckDB table name and the template variables filled.

        :param tables: ref name -> table name (default: the ref name itself).
        """
        tables = tables or {}
        sql = _REF.sub(lambda m: _quote(tables.get(m.group(1), m.group(1))), self.sql)
        sql = _TARGET_DATES.sub(_quote(target_table(self.name)), sql)
        sql = _SESSIONS_VAR.sub(_quote(SESSIONS_TABLE), sql)
        return _LOOKBACK_VAR.sub(str(self.lookback), sql)


def target_table(model: str) -> str:
    return f"__target_dates__{model}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_model(path: Path) -> SqlModel:
    """Read one model file; raises SqlModelError naming the file when its header is missing or wrong."""
    sql = path.read_text(encoding="utf-8")
    header = dict(_HEADER.findall(sql))
    if "lookback" not in header or "grain" not in header:
        raise SqlModelError(f"{path}: header must declare '-- grain: daily' and '-- lookback: N'")
    if header["grain"] != "daily":
        raise SqlModelError(f"{path}: grain {header['grain']!r} is not supported (only 'daily')")
    if not header["lookback"].isdigit():
        raise SqlModelError(f"{path}: lookback {header['lookback']!r} is not a non-negative integer")
    per_ticker = header.get("per_ticker", "false")
    if per_ticker not in ("true", "false"):
        raise SqlModelError(f"{path}: per_ticker {per_ticker!r} is not 'true' or 'false'")
    refs = tuple(dict.fromkeys(_REF.findall(sql)))
    return SqlModel(
        name=path.stem,
        sql=sql,
        refs=refs,
        lookback=int(header["lookback"]),
        path=path,
        per_ticker=per_ticker == "true",
        order_by=tuple(c.strip() for c in header["order_by"].split(","))
        if "order_by" in header
        else DEFAULT_ORDER,
    )


def discover_models(sql_dir: Path = SQL_DIR) -> dict[str, SqlModel]:
    """Every ``*.sql`` model of the folder, in dependency order (upstream first).

    :param sql_dir: folder of model files.
    """
    models = {p.stem: parse_model(p) for p in sorted(sql_dir.glob("*.sql"))}
    if not models:
        raise SqlModelError(f"no *.sql model files in {sql_dir}")
    return {name: models[name] for name in topological_order(models)}


def load_macros(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Macro file name -> SQL text (``CREATE MACRO`` statements shared by the models)."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((sql_dir / MACRO_SUBDIR).glob("*.sql"))}


@lru_cache(maxsize=4)
def _cached_models(sql_dir: Path) -> dict[str, SqlModel]:
    return discover_models(sql_dir)


def load_models(sql_dir: Path = SQL_DIR) -> dict[str, SqlModel]:
    """:func:`discover_models`, read once per process."""
    return dict(_cached_models(sql_dir))


def topological_order(models: Mapping[str, SqlModel]) -> list[str]:
    """Model names, upstream first (deterministic for a given set); refs to non-models are external inputs.

    :raises SqlModelError: when the refs form a cycle; the message lists the models on it.
    """
    graph = {name: {r for r in m.refs if r in models} for name, m in sorted(models.items())}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SqlModelError(
            f"SQL models reference each other in a cycle (each feeds the next): {cycle}"
        ) from exc


def external_inputs(models: Mapping[str, SqlModel]) -> list[str]:
    """Refs that no model produces: the tables a run must be given."""
    return sorted({r for m in models.values() for r in m.refs} - set(models))


def input_window(model: SqlModel, day: str | dt.date | pd.Timestamp) -> pd.DatetimeIndex:
    """The sessions [day - lookback, day] of the upstream daily tables the model reads for `day`."""
    return _sessions_back(ensure_trading_day(day), model.lookback)


def _sessions_back(day: pd.Timestamp, n: int) -> pd.DatetimeIndex:
    sessions = nyse().sessions
    pos = int(sessions.searchsorted(day))
    return pd.DatetimeIndex(sessions[max(0, pos - n) : pos + 1]).tz_localize(None)


def required_dates(
    name: str, dates: Iterable[str | dt.date | pd.Timestamp], models: Mapping[str, SqlModel]
) -> dict[str, pd.DatetimeIndex]:
    """The sessions each node of `name`'s upstream graph must provide so `name` can output `dates`.

    Models map to the sessions they must output; external inputs (refs no model produces) to the sessions
    of their rows that are read (meaningless for an input that is not a daily partition, which is read whole).

    :param name: the model requested.
    :param dates: the sessions requested.
    :param models: all models (from :func:`load_models`).
    """
    sessions = _naive_sessions()
    # session positions (numbers) of each node's needed days: a lookback window is a range of positions
    need: dict[str, np.ndarray] = {name: sessions.get_indexer([ensure_trading_day(d) for d in dates])}
    for current in reversed(topological_order(models)):
        if current not in need:
            continue
        positions = np.unique(need[current])
        need[current] = positions
        lookback = models[current].lookback
        if lookback and len(positions):
            # union of the windows [p - lookback, p], clipped at the calendar's first session
            covered = np.zeros(int(positions[-1]) + 1, dtype=np.int64)
            np.add.at(covered, np.maximum(positions - lookback, 0), 1)
            np.add.at(covered, positions[positions + 1 < len(covered)] + 1, -1)
            window = np.flatnonzero(np.cumsum(covered) > 0)
        else:
            window = positions
        for ref in models[current].refs:
            need[ref] = np.concatenate([need[ref], window]) if ref in need else window
    return {m: pd.DatetimeIndex(sessions[np.unique(pos)]) for m, pos in need.items()}


@lru_cache(maxsize=1)
def _naive_sessions() -> pd.DatetimeIndex:
    """The NYSE calendar's sessions as tz-naive midnight timestamps."""
    return pd.DatetimeIndex(nyse().sessions).tz_localize(None)


def run_model(
    name: str,
    inputs: Mapping[str, pd.DataFrame],
    dates: Iterable[str | dt.date | pd.Timestamp],
    sql_dir: Path = SQL_DIR,
) -> pd.DataFrame:
    """Run model `name` in an in-memory DuckDB and return its rows for `dates` only.

    Refs found in `inputs` are read from there (an upstream model's stored output may be given instead of
    being recomputed); any other upstream model is computed first, for the sessions its consumers need.

    :param name: model name (file stem).
    :param inputs: ref name -> frame: the external inputs (raw_ohlcv, raw_fundamentals, slot_map) and/or
        stored outputs of upstream models, each covering the sessions the model reads (see
        :func:`input_window`; raw_fundamentals whole).
    :param dates: the sessions to output.
    :param sql_dir: folder of model files.
    :raises SqlModelError: unknown model or missing input.
    """
    models = load_models(sql_dir)
    if name not in models:
        raise SqlModelError(f"unknown SQL model {name!r}; models in {sql_dir}: {', '.join(models)}")
    plan = _plan(name, models, inputs)
    needed = required_dates(name, dates, {m: models[m] for m in plan})
    macros = list(load_macros(sql_dir).values())
    # Arrow tables: scanned without the GIL, so connections on parallel threads do not wait for each other.
    tables: dict[str, pa.Table] = {ref: _arrow(frame) for ref, frame in inputs.items()}
    con = _connect(macros, THREADS)
    try:
        for ref, table in tables.items():
            con.register(ref, table)
        chunked: set[str] = set()  # models already run on ticker chunks with an earlier model
        for step, model_name in enumerate(plan):
            model = models[model_name]
            if model_name in chunked:
                source = _quote(model_name)
            elif model.per_ticker and THREADS > 1:
                for ref in model.refs:  # upstream models computed in this connection
                    if ref not in tables:
                        tables[ref] = con.sql(f"SELECT * FROM {_quote(ref)}").to_arrow_table()
                group = _ticker_group(plan[step:], models, set(tables))
                chunked |= {m.name for m in group}
                read_later = {r for m in plan if m not in chunked for r in models[m].refs}
                wanted = [m.name for m in group if m.name == name or m.name in read_later]
                targets = {m.name: _dates_table(needed[m.name]) for m in group}
                outputs = _run_by_ticker(group, tables, targets, wanted, macros, THREADS)
                for out_name, table in outputs.items():
                    tables[out_name] = table
                    con.register(out_name, table)
                source = _quote(model_name)
            else:
                con.register(target_table(model_name), _dates_table(needed[model_name]))
                source = f"({model.render()})"
                if model_name != name:
                    con.execute(f"CREATE TEMP TABLE {_quote(model_name)} AS SELECT * FROM {source}")
            if model_name == name:
                return _fetch(con, source, model.order_by)
    finally:
        con.close()
    raise AssertionError(f"plan {plan} does not end with {name}")  # _plan always includes name


def _dates_table(days: pd.DatetimeIndex) -> pa.Table:
    return _arrow(pd.DataFrame({"date": days.date}))


def _ticker_group(plan: list[str], models: Mapping[str, SqlModel], available: set[str]) -> list[SqlModel]:
    """The first model of `plan` (per_ticker) and each later per_ticker model whose inputs are all
    `available` or earlier in the group: they run together on the same ticker chunks."""
    group = [models[plan[0]]]
    for name in plan[1:]:
        model = models[name]
        if model.per_ticker and set(model.refs) <= available | {m.name for m in group}:
            group.append(model)
    return group


def _connect(macros: list[str], threads: int) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the shared macros and the session calendar."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads TO {threads}")
    con.execute("SET enable_progress_bar = false")
    # projection_placement costs ~70 ms per model on these wide CTE queries and gains nothing measurable.
    # build_side_probe_side off: a join builds its hash table on the side written on the right, as the models
    # are written (stock_features probes with the day-ordered slot members, so its per-day quartiles and
    # final sort see rows in day order: 1.3 s less CPU at 3,000 stocks over 3 years).
    con.execute("SET disabled_optimizers = 'projection_placement,build_side_probe_side'")
    for macro_sql in macros:
        con.execute(macro_sql)
    con.register(SESSIONS_TABLE, _session_table())
    return con


def _arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    return frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)


def _run_by_ticker(
    group: list[SqlModel],
    tables: Mapping[str, pa.Table],
    targets: Mapping[str, pa.Table],
    wanted: list[str],
    macros: list[str],
    chunks: int,
) -> dict[str, pa.Table]:
    """The `wanted` outputs of a group of per_ticker models (upstream first): the models run on `chunks`
    disjoint sets of tickers (by hash) side by side, each set on its own one-thread connection where every
    ticker-keyed input is cut to the set's tickers and the group's other outputs stay in DuckDB."""
    inside = {m.name for m in group}
    inputs = sorted({ref for m in group for ref in m.refs} - inside)

    def run_chunk(chunk: int) -> dict[str, pa.Table]:
        con = _connect(macros, 1)
        try:
            for ref in inputs:
                con.register(f"{ref}__all", tables[ref])
                keep = (
                    f"WHERE hash(ticker) % {chunks} = {chunk}" if "ticker" in tables[ref].column_names else ""
                )
                con.execute(f"CREATE VIEW {_quote(ref)} AS SELECT * FROM {_quote(ref + '__all')} {keep}")
            out = {}
            for model in group:
                con.register(target_table(model.name), targets[model.name])
                if model.name in wanted:
                    out[model.name] = con.sql(model.render()).to_arrow_table()
                    con.register(model.name, out[model.name])
                else:
                    con.execute(f"CREATE TEMP TABLE {_quote(model.name)} AS {model.render()}")
            return out
        finally:
            con.close()

    with ThreadPoolExecutor(max_workers=chunks) as pool:
        parts = list(pool.map(run_chunk, range(chunks)))
    return {name: pa.concat_tables([part[name] for part in parts]) for name in wanted}


@lru_cache(maxsize=1)
def _session_table() -> pa.Table:
    sessions = pd.DatetimeIndex(nyse().sessions).tz_localize(None)
    return _arrow(pd.DataFrame({"date": sessions.date, "sess": np.arange(len(sessions), dtype=np.int64)}))


def _plan(name: str, models: Mapping[str, SqlModel], inputs: Mapping[str, pd.DataFrame]) -> list[str]:
    """Models to execute, upstream first: `name` and every upstream model not supplied in `inputs`."""
    chain: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        chain.add(current)
        for ref in models[current].refs:
            if ref in inputs:
                continue
            if ref not in models:
                raise SqlModelError(
                    f"SQL model {current!r} needs input {ref!r}, which was not given "
                    f"(inputs given: {', '.join(sorted(inputs)) or 'none'})"
                )
            stack.append(ref)
    return [m for m in topological_order(models) if m in chain]


def _fetch(con: duckdb.DuckDBPyConnection, source: str, order_by: tuple[str, ...]) -> pd.DataFrame:
    """The rows of `source` (a table or a parenthesised query) sorted by the `order_by` columns it has, so
    outputs compare byte for byte; dates as datetime64[ns]."""
    rows = con.sql(f"SELECT * FROM {source}")
    keys = [c for c in order_by if c in rows.columns]
    ordered = rows.order(", ".join(keys)) if keys else rows
    # One block per column: no copy into a consolidated 2-D block (the values are the same). The frame's
    # memory comes from the system allocator: pyarrow's default (mimalloc) took 3-4x longer to fault in
    # fresh pages on the benchmark machine (1.5 s vs 0.4 s for the 3,000-stock 3-year stock_features).
    return ordered.to_arrow_table().to_pandas(
        date_as_object=False,
        coerce_temporal_nanoseconds=True,
        split_blocks=True,
        memory_pool=pa.system_memory_pool(),
    )
