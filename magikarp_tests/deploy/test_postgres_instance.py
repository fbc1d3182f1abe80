"""The production instance configuration (deploy/dagster.yaml) works against a real PostgreSQL 15: a day's
pipeline on the real sample runs with the instance stored there, and the runs and materialisations are
read back both from the database tables and through a freshly loaded instance."""

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from magikarp_assets.definitions import build_definitions
from magikarp_assets.settings import TRAINING_RUN_TAGS, WORKLOAD_TAG
from magikarp_tests.deploy import cycle

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DB_NAME = "dagster_test"


def _instance_dir(tmp_path: Path) -> Path:
    """deploy/dagster.yaml with its storage section untouched; only the compute-log bucket gets the local S3
    endpoint (the production file talks to AWS)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["compute_logs"]["config"]["endpoint_url"] = {"env": "MAGIKARP_S3_ENDPOINT_URL"}
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.fixture
def pg_env(postgres, monkeypatch, tmp_path, s3_endpoint, s3_bucket):
    """A fresh database and the variables deploy/dagster.yaml reads."""
    connection = psycopg2.connect(postgres.dsn())
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
            cursor.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        connection.close()
    variables = {
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": postgres.password,
        "DAGSTER_PG_HOST": postgres.host,
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_DB": DB_NAME,
        "MAGIKARP_S3_BUCKET": s3_bucket,
        "MAGIKARP_S3_ENDPOINT_URL": s3_endpoint,
        "MAGIKARP_DATA_ROOT": str(tmp_path / "data"),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAGIKARP_MARKET_DATA", raising=False)
    return postgres.dsn(DB_NAME)


def _query(dsn: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    connection.close()
    return rows


@pytest.mark.slow  # initdb + a day's pipeline on 500 real tickers: about 10-15 s on 2 shared cores
def test_a_days_pipeline_runs_on_the_postgres_instance_and_reads_back(pg_env, tmp_path):
    home = _instance_dir(tmp_path)
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    training = {"key": WORKLOAD_TAG, "value": TRAINING_RUN_TAGS[WORKLOAD_TAG], "limit": 1}
    assert training in limits
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2

    defs = build_definitions("local")
    cycle.prepare(defs, instance)
    day = cycle.KEYS[-2]
    served = cycle.serve(defs, instance, day)
    instance.dispose()

    # Straight from the tables: the run and its materialisations are in PostgreSQL.
    ((status,),) = _query(pg_env, "SELECT status FROM runs WHERE run_id = %s", served.run_id)
    assert status == "SUCCESS"
    stored = _query(
        pg_env,
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
        served.run_id,
        "ASSET_MATERIALIZATION",
    )
    assets = {dg.AssetKey.from_db_string(key).to_user_string() for key, _ in stored}
    assert assets == set(cycle.SIGNALS) and {partition for _, partition in stored} == {day}
    ((runs,),) = _query(pg_env, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
    assert runs == 4  # reference data, ingestion, features, the day's signals
    # Through a freshly loaded instance, as the webserver and daemon read them.
    again = dg.DagsterInstance.from_config(str(home))
    record = again.get_run_record_by_id(served.run_id)
    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    event = again.get_latest_materialization_event(dg.AssetKey("portfolio_state"))
    assert event is not None and event.run_id == served.run_id
    assert event.asset_materialization.partition == day
    assert event.asset_materialization.metadata["uri"].value.endswith(f"portfolio_state/{day}.parquet")
    features = again.get_materialized_partitions(dg.AssetKey("feature_tensor"))
    assert features == set(cycle.KEYS)
    again.dispose()
