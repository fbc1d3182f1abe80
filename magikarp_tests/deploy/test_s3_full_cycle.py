"""The dev deployment keeps everything on S3 by configuration alone: a full daily cycle on the real sample
(ingest, features, a promoted policy, recommendations, portfolio, performance, the email) against a real
local S3 server leaves only temporary files on disk, asks for server-side encryption on every object, and
a second run, with fresh resources, builds on the first run's stored outputs."""

import os
import tempfile
from email import message_from_bytes
from pathlib import Path

import dagster as dg
import pytest

from magikarp_assets.definitions import build_definitions
from magikarp_tests.deploy import cycle


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def isolated(tmp_path, monkeypatch, s3_endpoint, s3_bucket):
    """A dev deployment on the moto bucket, run from an empty working folder with its own DAGSTER_HOME,
    HOME and temporary folder, so every file the cycle writes can be found."""
    folders = {name: tmp_path / name for name in ("work", "dagster_home", "home", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.chdir(folders["work"])
    monkeypatch.setenv("DAGSTER_HOME", str(folders["dagster_home"]))
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("TMPDIR", str(folders["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(folders["tmp"]))
    # matplotlib's font cache is a cache, not data: the image points it at /tmp too (deploy/Dockerfile).
    monkeypatch.setenv("MPLCONFIGDIR", str(folders["tmp"] / "matplotlib"))
    monkeypatch.delenv("MAGIKARP_DATA_ROOT", raising=False)
    monkeypatch.delenv("MAGIKARP_MARKET_DATA", raising=False)
    monkeypatch.setenv("MAGIKARP_DEPLOYMENT", "dev")
    monkeypatch.setenv("MAGIKARP_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("MAGIKARP_S3_ENDPOINT_URL", s3_endpoint)
    return folders


@pytest.mark.slow  # the whole cycle on 500 real tickers, twice: about 10-20 s on 2 shared cores
def test_full_daily_cycle_on_s3_leaves_nothing_on_local_disk(isolated, s3_client, s3_bucket):
    first_day, second_day = cycle.KEYS[-2], cycle.KEYS[-1]
    defs = build_definitions()  # MAGIKARP_DEPLOYMENT=dev: no code names the storage
    instance = dg.DagsterInstance.ephemeral()
    cycle.prepare(defs, instance)
    first = cycle.serve(defs, instance, first_day)
    report = first.asset_materializations_for_node("daily_report")[0].metadata
    assert report["transport"].value == "outbox"
    assert report["target"].value.startswith(f"s3://{s3_bucket}/dev/outbox/")

    # A second run with freshly built resources (as a new process would) reads yesterday back from S3.
    defs_again = build_definitions("dev")
    cycle.serve(defs_again, dg.DagsterInstance.ephemeral(), second_day)
    book_1 = cycle.load(defs_again, "portfolio_state", first_day)
    book_2 = cycle.load(defs_again, "portfolio_state", second_day)
    assert book_2["value_before"].iloc[0] != 1_000_000.0  # not a fresh portfolio
    held = book_1[book_1["shares"] > 0]
    assert len(held) > 0 and held["shares"].sum() > 0
    metrics = cycle.load(defs_again, "performance_metrics", second_day)
    assert metrics["date"].dt.strftime("%Y-%m-%d").tolist() == [first_day, second_day]
    first_metrics = cycle.load(defs_again, "performance_metrics", first_day)
    assert metrics.iloc[0]["value"] == first_metrics.iloc[0]["value"] == book_1["value"].iloc[0]

    keys = [
        item["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for item in page.get("Contents", [])
    ]
    folders = {key.split("/")[1] for key in keys}
    assert all(key.startswith("dev/") for key in keys)
    for expected in (*cycle.INGEST, *cycle.FEATURES, "daily_recommendations", "portfolio_state"):
        assert expected in folders, expected
    assert {"models", "outbox", "performance_metrics"} <= folders
    assert f"dev/models/{cycle.MODEL_VERSION}/model.zip" in keys and "dev/models/production.json" in keys
    unencrypted = [
        key
        for key in keys
        if s3_client.head_object(Bucket=s3_bucket, Key=key).get("ServerSideEncryption") != "AES256"
    ]
    assert not unencrypted, f"objects stored without SSE: {unencrypted[:5]}"
    mails = [key for key in keys if key.startswith("dev/outbox/")]
    assert [key.split("/")[-1][:8] for key in mails] == [d.replace("-", "") for d in (first_day, second_day)]
    mail = message_from_bytes(s3_client.get_object(Bucket=s3_bucket, Key=mails[-1])["Body"].read())
    assert mail["Subject"].strip() == f"[TMagikarp INFO] Daily recommendations for {second_day}"

    # On local disk: nothing but temporary files (the delivery queue's lock under the temp folder).
    for name in ("work", "dagster_home", "home"):
        assert _files(isolated[name]) == [], name
    assert not any(p.suffix in (".parquet", ".npz", ".zip", ".eml") for p in isolated["tmp"].rglob("*"))
    assert not os.environ.get("MAGIKARP_DATA_ROOT")
