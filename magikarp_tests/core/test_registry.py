"""The model registry verifies every artifact before handing it out and keeps the last 20 versions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from magikarp_assets.core.registry import (
    FeatureSpecMismatchError,
    Manifest,
    ManifestError,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelRegistry,
    ModelVersionExistsError,
)
from magikarp_assets.core.storage import LocalBlobStore, S3BlobStore

SPEC_HASH = "f" * 16


def fields(**overrides: Any) -> dict[str, Any]:
    base = {
        "algorithm": "PPO",
        "hyper_parameters": {"learning_rate": 3e-4, "n_steps": 2048, "net_arch": [64, 64]},
        "training_window": {"start": "2015-01-02", "end": dt.date(2016, 12, 30)},
        "feature_spec_hash": SPEC_HASH,
        "slot_map_version": "2017-01-03",
        "metrics": {"sharpe": 1.23, "max_drawdown": -0.18, "episodes": 40},
    }
    return {**base, **overrides}


def ticking_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that advances one hour per call, so registration order is unambiguous."""
    state = {"now": start}

    def now() -> dt.datetime:
        state["now"] += dt.timedelta(hours=1)
        return state["now"]

    return now


class Detonator:
    """Unpickling this object writes a file: proof of whether anything unpickled the artifact."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).write_text, ("unpickled",))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    clock = ticking_clock(dt.datetime(2017, 2, 1, 21, tzinfo=dt.UTC))
    return ModelRegistry(LocalBlobStore(tmp_path / "store"), clock=clock)


def test_register_and_load_round_trip(registry: ModelRegistry, tmp_path: Path) -> None:
    artifact = pickle.dumps({"weights": list(range(100))})
    manifest = registry.register(artifact, fields(), by="monthly_retrain", note="2017-02 run")

    assert re.fullmatch(r"v20170201-[0-9a-f]{8}", manifest.version)
    digest = hashlib.sha256(artifact).hexdigest()
    assert manifest.version.endswith(hashlib.sha256(f"{digest}:{SPEC_HASH}".encode()).hexdigest()[:8])
    assert manifest.sha256 == hashlib.sha256(artifact).hexdigest()
    assert manifest.size_bytes == len(artifact)
    assert manifest.training_window.start == "2015-01-02" and manifest.training_window.end == "2016-12-30"
    assert manifest.status == "registered" and manifest.status_history[0].by == "monthly_retrain"
    assert registry.load(manifest.version, SPEC_HASH) == artifact
    assert registry.manifest(manifest.version) == manifest

    stored = tmp_path / "store" / "models" / manifest.version
    assert sorted(p.name for p in stored.iterdir()) == ["manifest.json", "model.zip"]
    document = json.loads((stored / "manifest.json").read_text())
    assert set(document) == {
        "version",
        "algorithm",
        "hyper_parameters",
        "training_window",
        "feature_spec_hash",
        "slot_map_version",
        "metrics",
        "sha256",
        "size_bytes",
        "created_at",
        "status_history",
    }
    assert document["status_history"][0] == {
        "status": "registered",
        "at": "2017-02-01T22:00:00+00:00",
        "by": "monthly_retrain",
        "note": "2017-02 run",
    }
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_caller_supplied_version_and_idempotent_reregistration(registry: ModelRegistry) -> None:
    first = registry.register(b"artifact-1", fields(version="ppo-2017-02"))
    assert first.version == "ppo-2017-02"
    assert registry.register(b"artifact-1", fields(version="ppo-2017-02")) == first
    with pytest.raises(ModelVersionExistsError, match=rf"ppo-2017-02.*{first.sha256}"):
        registry.register(b"artifact-2", fields(version="ppo-2017-02"))
    with pytest.raises(
        ModelVersionExistsError, match=r"refusing to overwrite it with sha256 .* for feature spec f"
    ):
        registry.register(b"artifact-1", fields(version="ppo-2017-02", feature_spec_hash="f" * 64))
    assert registry.load("ppo-2017-02", SPEC_HASH) == b"artifact-1"


def test_the_same_bytes_for_another_feature_spec_register_as_another_version(registry: ModelRegistry) -> None:
    old = registry.register(b"weights", fields())
    assert registry.register(b"weights", fields()) == old
    new = registry.register(b"weights", fields(feature_spec_hash="f" * 64))
    assert new.version != old.version and new.sha256 == old.sha256
    assert registry.manifest(new.version).feature_spec_hash == "f" * 64
    assert registry.load(new.version, "f" * 64) == b"weights"


def test_tampered_artifact_is_refused_before_anyone_unpickles_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    manifest = registry.register(pickle.dumps({"weights": [1, 2, 3]}), fields())
    marker = tmp_path / "unpickled.txt"
    evil = pickle.dumps(Detonator(str(marker)))
    (tmp_path / "store" / "models" / manifest.version / "model.zip").write_bytes(evil)

    with pytest.raises(ModelIntegrityError) as info:
        pickle.loads(registry.load(manifest.version, SPEC_HASH))
    message = str(info.value)
    assert manifest.version in message
    assert manifest.sha256 in message
    assert hashlib.sha256(evil).hexdigest() in message
    assert not marker.exists()


def test_missing_version_and_missing_artifact(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="v20990101-deadbeef is not registered"):
        registry.load("v20990101-deadbeef", SPEC_HASH)
    manifest = registry.register(b"weights", fields())
    (tmp_path / "store" / "models" / manifest.version / "model.zip").unlink()
    with pytest.raises(
        ModelNotFoundError, match=rf"{manifest.version} has a manifest but no artifact at file://"
    ):
        registry.load(manifest.version, SPEC_HASH)


def test_feature_spec_mismatch_names_both_hashes(registry: ModelRegistry) -> None:
    manifest = registry.register(b"weights", fields())
    with pytest.raises(FeatureSpecMismatchError, match=rf"{SPEC_HASH}.*0123abcd"):
        registry.load(manifest.version, "0123abcd")


def test_status_history_is_appended_and_persisted(registry: ModelRegistry) -> None:
    version = registry.register(b"weights", fields()).version
    registry.set_status(version, "shadow", by="shadow_report")
    registry.set_status(version, "production", by="alice", note="approved after 7 shadow days")
    manifest = registry.manifest(version)
    assert [e.status for e in manifest.status_history] == ["registered", "shadow", "production"]
    assert manifest.status_history[-1].note == "approved after 7 shadow days"
    assert manifest.status == "production"
    with pytest.raises(ValueError, match="unknown model status 'live'"):
        registry.set_status(version, "live", by="alice")
    with pytest.raises(ModelNotFoundError):
        registry.set_status("v00000000-00000000", "shadow", by="alice")


def test_versions_are_newest_first_and_prune_keeps_20_plus_production(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registered = [registry.register(f"weights-{i}".encode(), fields()).version for i in range(25)]
    assert registry.versions() == registered[::-1]
    production = registered[0]  # the oldest one is still in production

    removed = registry.prune(protected={production, "v-not-registered"})

    assert removed == registered[1:5][::-1]
    assert registry.versions() == [*registered[5:][::-1], production]
    assert registry.load(production, SPEC_HASH) == b"weights-0"
    remaining_dirs = {p.name for p in (tmp_path / "store" / "models").iterdir() if any(p.iterdir())}
    assert remaining_dirs == {production, *registered[5:]}
    with pytest.raises(ModelNotFoundError):
        registry.load(registered[1], SPEC_HASH)
    assert registry.prune(protected={production}) == []


def test_register_rejects_incomplete_or_unknown_fields(registry: ModelRegistry) -> None:
    incomplete = fields()
    del incomplete["feature_spec_hash"]
    with pytest.raises(ManifestError, match="feature_spec_hash"):
        registry.register(b"x", incomplete)
    with pytest.raises(ManifestError, match="sha256"):
        registry.register(b"x", fields(sha256="0" * 64))
    with pytest.raises(ManifestError, match="start 2017-01-01 is after its end"):
        registry.register(b"x", fields(training_window=("2017-01-01", "2016-01-01")))
    with pytest.raises(ManifestError, match="version"):
        registry.register(b"x", fields(version="../escape"))
    assert registry.versions() == []


def test_corrupt_manifest_names_the_problem(registry: ModelRegistry, tmp_path: Path) -> None:
    version = registry.register(b"weights", fields()).version
    path = tmp_path / "store" / "models" / version / "manifest.json"
    document = json.loads(path.read_text())
    del document["metrics"]
    path.write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=rf"{version} is missing field\(s\) \['metrics'\]"):
        registry.load(version, SPEC_HASH)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        registry.manifest(version)


def test_registry_over_s3(s3_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    store = S3BlobStore(s3_bucket, prefix="prod", endpoint_url=s3_endpoint, region="us-east-1")
    registry = ModelRegistry(store, keep_last=2, clock=ticking_clock(dt.datetime(2017, 3, 1, tzinfo=dt.UTC)))
    versions = [registry.register(f"weights-{i}".encode(), fields()).version for i in range(4)]
    registry.set_status(versions[0], "production", by="alice")
    assert registry.load(versions[3], SPEC_HASH) == b"weights-3"

    assert registry.prune(protected={versions[0]}) == [versions[1]]
    assert registry.versions() == [versions[3], versions[2], versions[0]]
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == sorted(
        f"prod/models/{v}/{name}"
        for v in versions
        if v != versions[1]
        for name in (
            "manifest.json",
            "model.zip",
        )
    )
    for key in keys:
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"

    s3_client.put_object(Bucket=s3_bucket, Key=f"prod/models/{versions[3]}/model.zip", Body=b"tampered")
    with pytest.raises(ModelIntegrityError, match=versions[3]):
        registry.load(versions[3], SPEC_HASH)
