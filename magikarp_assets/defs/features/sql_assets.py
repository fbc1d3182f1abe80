"""Each SQL model of dbt_like_sql/ becomes a daily asset: its refs are its inputs, its lookback a window."""

import hashlib

import dagster as dg
import pandas as pd

from magikarp_assets.core.sql_models import HEADER_KEYS, SqlModel, load_models, run_model
from magikarp_assets.defs.ingestion.assets import RAW_FUNDAMENTALS, partition_days
from magikarp_assets.defs.partitions import trading_day_partitions

# Upstream tables that are not daily partitions: read whole (point-in-time filtering happens in SQL).
UNPARTITIONED_REFS = {RAW_FUNDAMENTALS.to_user_string()}
OWNER = "team:ml-platform"


def _description(model: SqlModel) -> str:
    """The model's leading comment block, which states what it computes and its rules."""
    lines = []
    for line in model.sql.splitlines():
        if not line.startswith("--"):
            break
        text = line.removeprefix("--").strip()
        if not text.startswith(tuple(f"{key}:" for key in HEADER_KEYS)):
            lines.append(text)
    return " ".join(lines).split(":", 1)[-1].strip() or model.name


def _input(model: SqlModel, ref: str) -> dg.AssetIn:
    if ref in UNPARTITIONED_REFS:
        return dg.AssetIn(dg.AssetKey(ref))
    window = dg.TimeWindowPartitionMapping(
        start_offset=-model.lookback, allow_nonexistent_upstream_partitions=True
    )
    return dg.AssetIn(dg.AssetKey(ref), partition_mapping=window)


def build_sql_asset(model: SqlModel) -> dg.AssetsDefinition:
    @dg.asset(
        name=model.name,
        ins={ref: _input(model, ref) for ref in model.refs},
        partitions_def=trading_day_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="features",
        kinds={"duckdb", "sql", "parquet"},
        owners=[OWNER],
        description=_description(model),
        code_version=hashlib.sha256(model.sql.encode()).hexdigest()[:12],
        metadata={
            "sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"),
            "lookback_sessions": model.lookback,
            "dagster/code_references": dg.CodeReferencesMetadataValue(
                code_references=[dg.LocalFileCodeReference(file_path=str(model.path), line_number=1)]
            ),
        },
    )
    def _sql_asset(context: dg.AssetExecutionContext, **inputs: pd.DataFrame) -> pd.DataFrame:
        days = partition_days(context)
        out = run_model(model.name, inputs, days)
        context.add_output_metadata(
            {"rows": len(out), "tickers": int(out["ticker"].nunique()) if "ticker" in out else 0}
        )
        return out

    return _sql_asset


sql_assets = [build_sql_asset(model) for model in load_models().values()]
# The SQL feature assets' names, upstream first: what a run of the feature stage selects.
SQL_FEATURE_ASSETS = [model.name for model in load_models().values()]
