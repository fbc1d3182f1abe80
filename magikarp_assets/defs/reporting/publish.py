"""Where the HTML reports go (the platform's blob store: a local folder or S3) and what the reports' system
health section is made of, gathered from the Dagster instance."""

import datetime as dt
from urllib.parse import urlparse

import dagster as dg
import pandas as pd
from dagster._check import CheckError
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from magikarp_assets.core.promotion import read_pointer
from magikarp_assets.core.registry import ModelRegistry, RegistryError
from magikarp_assets.core.reports.daily import sample_sectors
from magikarp_assets.core.reports.health import (
    CheckFailure,
    JobRun,
    ModelAge,
    SourceFreshness,
    SystemHealth,
    model_age,
    sessions_between,
)
from magikarp_assets.defs.ingestion.assets import (
    BENCHMARK_PRICES,
    CHECK_QUARANTINE,
    RAW_FUNDAMENTALS,
    RAW_OHLCV,
    UNIVERSE,
)
from magikarp_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from magikarp_assets.defs.signals.sensors import WATCHED_CHECKS
from magikarp_assets.resources.io_manager import MissingPartitionError, PartitionedParquetIOManager

REPORTS_PREFIX = "reports"
# Sources the freshness table covers: (asset, whether it is partitioned by session).
SOURCES = ((RAW_OHLCV, True), (BENCHMARK_PRICES, True), (UNIVERSE, False), (RAW_FUNDAMENTALS, False))
RUNS_SCANNED = 500
FAILED_CHECK = AssetCheckExecutionRecordStatus.FAILED
QUARANTINE_CHECK = dg.AssetCheckKey(RAW_OHLCV, CHECK_QUARANTINE)


def write_report(
    io_manager: PartitionedParquetIOManager, name: str, html: str
) -> dict[str, dg.MetadataValue]:
    """Store a report at ``reports/{name}`` in the blob store; metadata linking to it (a clickable URL, and
    the local path when on disk).

    :param io_manager: the platform's IO manager (its blob store is used).
    :param name: key under ``reports/``, e.g. ``daily/2017-02-07.html``.
    :param html: the page.
    """
    store = io_manager.blob_store()
    key = f"{REPORTS_PREFIX}/{name}"
    store.put_bytes(key, html.encode("utf-8"))
    uri = store.uri(key)
    metadata = {"report_url": dg.MetadataValue.url(uri), "report_bytes": dg.MetadataValue.int(len(html))}
    if uri.startswith("file://"):
        metadata["report_path"] = dg.MetadataValue.path(urlparse(uri).path)
    return metadata


def _runs(instance: dg.DagsterInstance, exclude_run: str) -> tuple[JobRun, ...]:
    latest: dict[str, JobRun] = {}
    for record in instance.get_run_records(limit=RUNS_SCANNED):
        run = record.dagster_run
        if run.run_id == exclude_run or run.job_name in latest:
            continue
        tags = run.tags
        start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
        partition = tags.get("dagster/partition") or (f"{start}..{end}" if start and end else None)
        ended = dt.datetime.fromtimestamp(record.end_time, dt.UTC) if record.end_time else None
        latest[run.job_name] = JobRun(run.job_name, run.status.value, run.run_id, partition, ended)
    return tuple(sorted(latest.values(), key=lambda r: r.job))


def _failed_checks(context: dg.AssetExecutionContext) -> tuple[CheckFailure, ...]:
    try:  # runs launched from the code location see every check of the repository
        keys = set(context.repository_def.asset_graph.asset_check_keys)
    except CheckError:  # in-process runs (dg.materialize) only know their own assets: the watched checks
        keys = {*context.job_def.asset_layer.asset_graph.asset_check_keys, *WATCHED_CHECKS, QUARANTINE_CHECK}
    records = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys))
    failures = []
    for key, record in sorted(records.items(), key=lambda item: item[0].to_user_string()):
        if record.status != FAILED_CHECK:
            continue
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        reason, severity = "the check's step failed", "ERROR"
        if isinstance(evaluation, dg.AssetCheckEvaluation):
            severity = evaluation.severity.value
            reason = ", ".join(f"{k}: {v.value}" for k, v in evaluation.metadata.items())[:300] or "failed"
        failures.append(
            CheckFailure(key.name, key.asset_key.to_user_string(), record.partition, severity, reason)
        )
    return tuple(failures)


def _freshness(
    instance: dg.DagsterInstance, io_manager: PartitionedParquetIOManager, as_of: dt.date
) -> tuple[SourceFreshness, ...]:
    rows = []
    for key, partitioned in SOURCES:
        event = instance.get_latest_materialization_event(key)
        written = dt.datetime.fromtimestamp(event.timestamp, dt.UTC) if event else None
        meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
        latest, sources = None, str(meta["provider"].value) if "provider" in meta else "n/a"
        if partitioned:
            done = [p for p in instance.get_materialized_partitions(key) if p <= as_of.isoformat()]
            latest = max(done) if done else None
            if latest:
                try:
                    frame = io_manager.load_partition(key, latest)
                    sources = (
                        ", ".join(sorted(frame["source"].astype(str).unique()))
                        if "source" in frame
                        else sources
                    )
                except MissingPartitionError:
                    sources = "recorded but missing from storage"
        behind = sessions_between(latest, as_of) if partitioned else None
        rows.append(SourceFreshness(key.to_user_string(), sources, latest, written, behind))
    return tuple(rows)


def _model(registry: ModelRegistry, as_of: dt.date) -> ModelAge:
    pointer = read_pointer(registry)
    if pointer.version is None:
        return ModelAge()
    served = [e for e in pointer.history if e.version == pointer.version]
    try:
        training_end: str | None = registry.manifest(pointer.version).training_window.end
    except RegistryError:
        training_end = None
    promoted = served[-1].at if served else None
    return model_age(pointer.version, promoted, training_end, as_of, dt.datetime.now(dt.UTC))


def gather_health(
    context: dg.AssetExecutionContext,
    io_manager: PartitionedParquetIOManager,
    registry: ModelRegistry,
    as_of: dt.date,
) -> SystemHealth:
    """The system's health as the report of ``as_of`` sees it: latest run of each job (this one excluded),
    latest failed check evaluations, freshness of each ingested source and the production model's age.

    :param context: the asset's context (instance and repository).
    :param io_manager: to read which vendors delivered the latest partitions.
    :param registry: the model registry (production pointer and manifests).
    :param as_of: the report's session.
    """
    return SystemHealth(
        as_of=as_of,
        runs=_runs(context.instance, context.run_id),
        failed_checks=_failed_checks(context),
        freshness=_freshness(context.instance, io_manager, as_of),
        model=_model(registry, as_of),
    )


def top_markdown(frame: pd.DataFrame, columns: list[str], rows: int = 10) -> dg.MetadataValue:
    """The first ``rows`` rows of ``frame`` as a markdown table (for the asset's metadata).

    :param frame: rows, already ordered.
    :param columns: columns shown.
    :param rows: rows shown.
    """
    top = frame.head(rows)[columns]
    return dg.MetadataValue.md(top.to_markdown(index=False, floatfmt=".4f") if len(top) else "none")


def known_sectors(io_manager: PartitionedParquetIOManager) -> dict[str, str]:
    """Sector per ticker: the bundled constituents file's, overridden by the stored universe's where it
    names one (the IWV holdings in production); tickers in neither are ``unknown`` in the reports.

    :param io_manager: to read the stored universe_constituents, when materialised.
    """
    sectors = dict(sample_sectors())
    try:
        universe = io_manager.load_partition(UNIVERSE)
    except MissingPartitionError:
        return sectors
    named = universe[universe["sector"].notna() & (universe["sector"].astype(str).str.lower() != "unknown")]
    sectors.update(zip(named["ticker"].astype(str), named["sector"].astype(str), strict=True))
    return sectors
