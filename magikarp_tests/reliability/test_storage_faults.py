"""Storage faults on the real ingestion run: the S3 endpoint (a local moto server) stops mid-run, and a
stored Parquet partition is corrupted."""

import os
from collections.abc import Iterator

import boto3
import dagster as dg
import pandas as pd
import pytest
from moto.server import ThreadedMotoServer

from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.partitions import range_tags
from magikarp_assets.resources.io_manager import CorruptPartitionError, PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_tests.reliability.helpers import step_errors
from magikarp_tests.support_s3 import _DUMMY_ENV, REGION, _free_port

ASSETS = [ingestion.universe_constituents, ingestion.raw_ohlcv, ingestion.benchmark_prices]
START, END = "2016-06-01", "2016-06-08"  # six sessions
SESSIONS = ["2016-06-01", "2016-06-02", "2016-06-03", "2016-06-06", "2016-06-07", "2016-06-08"]


class StoppableS3:
    """A moto S3 server of our own (the shared one must not stop) that can stop and start on one port.
    moto keeps its buckets in process memory, so objects written before a stop are there after a start."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def s3(monkeypatch) -> Iterator[StoppableS3]:
    for name, value in _DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = StoppableS3()
    server.start()
    yield server
    server.stop()


def _stop_on_put(s3: StoppableS3, prefix: str, nth: int):
    """A botocore hook that stops the server just before the `nth` PutObject under `prefix` is sent."""
    seen = []

    def hook(params, **_):
        if params["Key"].startswith(prefix):
            seen.append(params["Key"])
            if len(seen) == nth:
                s3.stop()

    return hook


def _run(resources, instance, raise_on_error=True):
    return dg.materialize(
        ASSETS,
        resources=resources,
        instance=instance,
        tags=range_tags(START, END),
        selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE, ingestion.BENCHMARK_PRICES],
        raise_on_error=raise_on_error,
    )


def _objects(client, bucket: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


@pytest.mark.slow
def test_s3_stopping_mid_run_fails_clearly_leaves_no_partial_object_and_rerun_completes(s3):
    client = boto3.client("s3", endpoint_url=s3.url, region_name=REGION)
    client.create_bucket(Bucket="lake")
    io_manager = PartitionedParquetIOManager(
        backend="s3", s3_bucket="lake", s3_prefix="prod", s3_endpoint_url=s3.url, s3_region=REGION
    )
    resources = {"market_data": MarketDataResource(provider="sample"), "io_manager": io_manager}
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(ASSETS, resources=resources, instance=instance, selection=[ingestion.UNIVERSE])

    # Reference: what a run with a healthy endpoint stores (in another bucket).
    client.create_bucket(Bucket="reference")
    reference_store = PartitionedParquetIOManager(
        backend="s3", s3_bucket="reference", s3_prefix="prod", s3_endpoint_url=s3.url, s3_region=REGION
    )
    healthy = {"market_data": resources["market_data"], "io_manager": reference_store}
    dg.materialize(ASSETS, resources=healthy, instance=instance, selection=[ingestion.UNIVERSE])
    assert _run(healthy, instance).success
    reference = _objects(client, "reference")

    # The endpoint goes away while raw_ohlcv is writing its fourth partition.
    session = boto3._get_default_session()
    hook = _stop_on_put(s3, "prod/raw_ohlcv/", 4)
    session.events.register("before-parameter-build.s3.PutObject", hook)
    try:
        result = _run(resources, instance, raise_on_error=False)
    finally:
        session.events.unregister("before-parameter-build.s3.PutObject", hook)
    assert not result.success
    errors = step_errors(result)
    # The write that hit the dead endpoint, then the step's retry (which cannot even read its input).
    assert errors[0].startswith(
        "StorageUnavailableError: magikarp_assets.core.storage.StorageUnavailableError: S3 PutObject of "
        "s3://lake/prod/raw_ohlcv/2016-06-06.parquet failed"
    )
    assert all("StorageUnavailableError: S3 " in e for e in errors)
    assert not any("testing" in e for e in errors)  # the (dummy) credentials are never quoted

    s3.start()  # the endpoint is back: what is visible is complete, the failed partition is absent
    stored = _objects(client, "lake")
    written = sorted(k for k in stored if k.startswith("prod/raw_ohlcv/"))
    assert written == [f"prod/raw_ohlcv/{d}.parquet" for d in SESSIONS[:3]]
    for key in written:
        assert stored[key] == reference[key]  # same keys (the prefix), other bucket

    assert _run(resources, instance).success  # the re-run after the restart completes
    assert _objects(client, "lake") == reference  # every object, byte for byte
    for key in reference:  # and every write asked for server-side encryption
        assert client.head_object(Bucket="lake", Key=key)["ServerSideEncryption"] == "AES256"


def test_a_corrupted_partition_names_the_asset_and_the_partition(tmp_path):
    resources = {
        "market_data": MarketDataResource(provider="sample"),
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(tmp_path)),
    }
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(ASSETS, resources=resources, instance=instance, selection=[ingestion.UNIVERSE])
    assert _run(resources, instance).success
    path = tmp_path / "raw_ohlcv" / "2016-06-03.parquet"
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])  # a torn copy

    @dg.asset(partitions_def=ingestion.trading_day_partitions, ins={"bars": dg.AssetIn(ingestion.RAW_OHLCV)})
    def bar_count(bars: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"rows": [len(bars)]})

    with pytest.raises(CorruptPartitionError, match=r"asset raw_ohlcv partition 2016-06-03: stored file .*"):
        dg.materialize(
            [*ASSETS, bar_count],
            resources=resources,
            instance=instance,
            partition_key="2016-06-03",
            selection=[bar_count],
        )
    healthy = resources["io_manager"].load_partition(ingestion.RAW_OHLCV, "2016-06-02")
    assert len(healthy) > 480  # the other partitions still load
