"""Versioned store of trained policies: each version keeps its artifact and a manifest of where it came
from, and the artifact's SHA-256 is verified before any caller can unpickle it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from magikarp_assets.core.storage import BlobNotFoundError, BlobStore

MODELS_PREFIX = "models"
ARTIFACT_NAME = "model.zip"
MANIFEST_NAME = "manifest.json"
DEFAULT_KEEP_LAST = 20
MODEL_STATUSES = (
    "registered",
    "backtested",
    "shadow",
    "awaiting_approval",
    "approved",
    "production",
    "rejected",
    "retired",
    "rolled_back",
)
REQUIRED_FIELDS = (
    "algorithm",
    "hyper_parameters",
    "training_window",
    "feature_spec_hash",
    "slot_map_version",
    "metrics",
)
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(Exception):
    """Base class of every model registry error."""


class ModelNotFoundError(RegistryError, LookupError):
    """The version, its manifest or its artifact does not exist."""


class ModelIntegrityError(RegistryError):
    """The stored artifact's SHA-256 differs from the one recorded in its manifest."""


class FeatureSpecMismatchError(RegistryError):
    """The model was trained on a different feature specification than the caller's."""


class ModelVersionExistsError(RegistryError):
    """A different artifact is already registered under the requested version."""


class ManifestError(RegistryError):
    """A manifest is missing a field, has a field of the wrong type, or is not valid JSON."""


@dataclass(frozen=True)
class StatusEvent:
    """One entry of a model's status history."""

    status: str
    at: str
    by: str
    note: str = ""


@dataclass(frozen=True)
class TrainingWindow:
    """First and last session (ISO dates, inclusive) of the data the model was trained on."""

    start: str
    end: str


@dataclass(frozen=True)
class Manifest:
    """Provenance and integrity record of one registered model version."""

    version: str
    algorithm: str
    hyper_parameters: Mapping[str, Any]
    training_window: TrainingWindow
    feature_spec_hash: str
    slot_map_version: str
    metrics: Mapping[str, float]
    sha256: str
    size_bytes: int
    created_at: str
    status_history: tuple[StatusEvent, ...]

    @property
    def status(self) -> str:
        """The latest status in the history."""
        return self.status_history[-1].status

    def to_json(self) -> str:
        """Serialise to indented, key-sorted JSON."""
        try:
            return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
        except TypeError as error:
            raise ManifestError(
                f"manifest of model {self.version}: hyper_parameters and metrics must be JSON-serialisable "
                f"({error})"
            ) from error

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse a manifest written by :meth:`to_json`, checking every field.

        :param text: the JSON document.
        :raises ManifestError: naming the missing or malformed field.
        """
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ManifestError(f"manifest is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise ManifestError(f"manifest must be a JSON object, got {type(raw).__name__}")
        label = raw.get("version", "<unknown version>")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw]
        if missing:
            raise ManifestError(f"manifest of model {label} is missing field(s) {missing}")
        try:
            window = TrainingWindow(**raw["training_window"])
            history = tuple(StatusEvent(**event) for event in raw["status_history"])
            manifest = cls(**{**raw, "training_window": window, "status_history": history})
        except TypeError as error:
            raise ManifestError(f"manifest of model {label}: malformed or unknown field: {error}") from None
        _check_manifest(manifest)
        return manifest


def _check_manifest(manifest: Manifest) -> None:
    label = f"manifest of model {manifest.version}"
    if not _SHA256_PATTERN.match(str(manifest.sha256)):
        raise ManifestError(f"{label}: sha256 must be 64 lowercase hex digits, got {manifest.sha256!r}")
    if not isinstance(manifest.size_bytes, int) or manifest.size_bytes < 0:
        raise ManifestError(f"{label}: size_bytes must be an integer >= 0, got {manifest.size_bytes!r}")
    if not manifest.status_history:
        raise ManifestError(f"{label}: status_history must not be empty")
    for name in ("algorithm", "feature_spec_hash", "slot_map_version"):
        if not isinstance(getattr(manifest, name), str) or not getattr(manifest, name):
            raise ManifestError(f"{label}: {name} must be a non-empty string")
    window = manifest.training_window
    if window.start > window.end:
        raise ManifestError(f"{label}: training_window start {window.start} is after its end {window.end}")


def _iso_date(value: Any, field: str) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ManifestError(f"training_window {field} must be an ISO date, got {value!r}") from None


def _training_window(value: Any) -> TrainingWindow:
    if isinstance(value, TrainingWindow):
        return value
    if isinstance(value, Mapping):
        start, end = value.get("start"), value.get("end")
    elif isinstance(value, list | tuple) and len(value) == 2:
        start, end = value
    else:
        raise ManifestError(f"training_window must be {{start, end}} or a (start, end) pair, got {value!r}")
    return TrainingWindow(_iso_date(start, "start"), _iso_date(end, "end"))


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ModelRegistry:
    """Model versions in a blob store, laid out as ``models/{version}/model.zip`` and ``.../manifest.json``.

    The manifest is written after the artifact, so a version exists (is listed) only once both are stored.
    """

    def __init__(
        self,
        store: BlobStore,
        keep_last: int = DEFAULT_KEEP_LAST,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        """:param store: where artifacts and manifests live (local folder or S3).
        :param keep_last: how many of the newest versions :meth:`prune` keeps.
        :param clock: returns the current time as a timezone-aware datetime (injectable for tests).
        """
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.store = store
        self.keep_last = keep_last
        self._clock = clock

    @staticmethod
    def artifact_key(version: str) -> str:
        """Store key of a version's artifact.

        :param version: the model version id.
        """
        return f"{MODELS_PREFIX}/{version}/{ARTIFACT_NAME}"

    @staticmethod
    def manifest_key(version: str) -> str:
        """Store key of a version's manifest.

        :param version: the model version id.
        """
        return f"{MODELS_PREFIX}/{version}/{MANIFEST_NAME}"

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"registry clock must return a timezone-aware datetime, got {now!r}")
        return now.astimezone(dt.UTC)

    def register(
        self, artifact: bytes, manifest_fields: Mapping[str, Any], by: str = "system", note: str = ""
    ) -> Manifest:
        """Store a trained model and its manifest as a new version with status ``registered``.

        Registering the same artifact for the same feature spec under the same version again returns the
        existing manifest unchanged; a generated version covers the artifact and the feature spec.

        :param artifact: the serialised model (e.g. a Stable-Baselines3 zip).
        :param manifest_fields: algorithm, hyper_parameters, training_window (start, end),
            feature_spec_hash, slot_map_version, metrics, and optionally version; the registry adds
            sha256, size_bytes, created_at and the status history.
        :param by: who registers it (recorded in the status history).
        :param note: free text for the first status event.
        :raises ManifestError: for a missing or unknown field.
        :raises ModelVersionExistsError: if the version already holds a different artifact.
        """
        missing = [name for name in REQUIRED_FIELDS if name not in manifest_fields]
        unknown = sorted(set(manifest_fields) - {*REQUIRED_FIELDS, "version"})
        if missing or unknown:
            raise ManifestError(f"register: missing manifest field(s) {missing}, unknown field(s) {unknown}")
        digest = hashlib.sha256(artifact).hexdigest()
        now = self._now()
        # The same bytes fed another feature spec are another model (features can keep their values while
        # their spec changes), so the generated version covers both.
        identity = hashlib.sha256(f"{digest}:{manifest_fields['feature_spec_hash']}".encode()).hexdigest()
        version = manifest_fields.get("version") or f"v{now:%Y%m%d}-{identity[:8]}"
        if not _VERSION_PATTERN.match(version):
            raise ManifestError(f"model version {version!r} must match {_VERSION_PATTERN.pattern}")
        created_at = now.isoformat()
        metrics = manifest_fields["metrics"]
        manifest = Manifest(
            version=version,
            algorithm=manifest_fields["algorithm"],
            hyper_parameters=dict(manifest_fields["hyper_parameters"]),
            training_window=_training_window(manifest_fields["training_window"]),
            feature_spec_hash=manifest_fields["feature_spec_hash"],
            slot_map_version=manifest_fields["slot_map_version"],
            metrics={str(name): float(value) for name, value in metrics.items()},
            sha256=digest,
            size_bytes=len(artifact),
            created_at=created_at,
            status_history=(StatusEvent("registered", created_at, by, note),),
        )
        _check_manifest(manifest)
        document = manifest.to_json()
        if self.store.exists(self.manifest_key(version)):
            existing = self.manifest(version)
            if (existing.sha256, existing.feature_spec_hash) == (digest, manifest.feature_spec_hash):
                return existing
            raise ModelVersionExistsError(
                f"model version {version} already holds an artifact with sha256 {existing.sha256} for "
                f"feature spec {existing.feature_spec_hash}; refusing to overwrite it with sha256 {digest} "
                f"for feature spec {manifest.feature_spec_hash}"
            )
        self.store.put_bytes(self.artifact_key(version), artifact)
        self.store.put_bytes(self.manifest_key(version), document.encode())
        return manifest

    def manifest(self, version: str) -> Manifest:
        """Read one version's manifest.

        :param version: the model version id.
        :raises ModelNotFoundError: if the version is not registered.
        """
        key = self.manifest_key(version)
        try:
            document = self.store.get_bytes(key)
        except BlobNotFoundError:
            raise ModelNotFoundError(
                f"model version {version} is not registered: no manifest at {self.store.uri(key)}"
            ) from None
        manifest = Manifest.from_json(document)
        if manifest.version != version:
            raise ManifestError(
                f"manifest at {self.store.uri(key)} names version {manifest.version}, not {version}"
            )
        return manifest

    def load(self, version: str, expected_feature_spec_hash: str) -> bytes:
        """Return a model's artifact bytes after checking its feature spec and its SHA-256.

        Callers must only deserialise (unpickle) what this returns.

        :param version: the model version id.
        :param expected_feature_spec_hash: hash of the feature spec the caller will feed the model.
        :raises ModelNotFoundError: if the manifest or the artifact is missing.
        :raises FeatureSpecMismatchError: if the model was trained on another feature spec.
        :raises ModelIntegrityError: if the artifact's SHA-256 differs from the manifest's.
        """
        manifest = self.manifest(version)
        if manifest.feature_spec_hash != expected_feature_spec_hash:
            raise FeatureSpecMismatchError(
                f"model {version} was trained on feature spec {manifest.feature_spec_hash}, "
                f"but the caller uses feature spec {expected_feature_spec_hash}"
            )
        key = self.artifact_key(version)
        try:
            artifact = self.store.get_bytes(key)
        except BlobNotFoundError:
            raise ModelNotFoundError(
                f"model {version} has a manifest but no artifact at {self.store.uri(key)}"
            ) from None
        actual = hashlib.sha256(artifact).hexdigest()
        if actual != manifest.sha256:
            raise ModelIntegrityError(
                f"model {version} artifact at {self.store.uri(key)} is corrupt or tampered: manifest sha256 "
                f"{manifest.sha256}, stored artifact sha256 {actual} ({len(artifact)} bytes, "
                f"expected {manifest.size_bytes})"
            )
        return artifact

    def versions(self) -> list[str]:
        """All registered versions, newest first (by creation time, then version id)."""
        suffix = f"/{MANIFEST_NAME}"
        keys = [key for key in self.store.list(f"{MODELS_PREFIX}/") if key.endswith(suffix)]
        manifests = [self.manifest(key[len(MODELS_PREFIX) + 1 : -len(suffix)]) for key in keys]
        manifests.sort(key=lambda m: (m.created_at, m.version), reverse=True)
        return [m.version for m in manifests]

    def set_status(self, version: str, status: str, by: str, note: str = "") -> Manifest:
        """Append a status event (e.g. shadow, approved, production, rolled_back) to a version's history.

        :param version: the model version id.
        :param status: one of :data:`MODEL_STATUSES`.
        :param by: who or what made the change (a user, a sensor, an asset).
        :param note: why.
        :raises ValueError: for an unknown status or an empty ``by``.
        """
        if status not in MODEL_STATUSES:
            raise ValueError(f"unknown model status {status!r} for {version}; allowed: {MODEL_STATUSES}")
        if not by:
            raise ValueError(f"set_status({version}, {status}) needs a non-empty 'by'")
        manifest = self.manifest(version)
        event = StatusEvent(status, self._now().isoformat(), by, note)
        updated = dataclasses.replace(manifest, status_history=(*manifest.status_history, event))
        self.store.put_bytes(self.manifest_key(version), updated.to_json().encode())
        return updated

    def prune(self, protected: Set[str]) -> list[str]:
        """Delete every version except the newest ``keep_last`` and the protected ones.

        :param protected: versions that must survive whatever their age (the production version, a
            rollback target); names that are not registered are ignored.
        :return: the deleted versions, newest first.
        """
        ordered = self.versions()
        doomed = [v for v in ordered[self.keep_last :] if v not in protected]
        for version in doomed:
            # Manifest first: once it is gone the version is no longer listed, even if a later delete fails.
            self.store.delete(self.manifest_key(version))
            for key in self.store.list(f"{MODELS_PREFIX}/{version}/"):
                self.store.delete(key)
        return doomed
