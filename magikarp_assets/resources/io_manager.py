"""IO manager that stores each asset partition as its own Parquet (tables) or .npz (tensors) object, in a
local folder or on S3, so re-running a partition replaces exactly that partition."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_origin

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from magikarp_assets.core.storage import (
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    arrays_to_npz_bytes,
    frame_to_parquet_bytes,
    npz_bytes_to_arrays,
    parquet_bytes_to_frame,
)

PARQUET = ".parquet"
NPZ = ".npz"
DATE_COLUMN = "date"
DATA_ROOT_ENV = "MAGIKARP_DATA_ROOT"
BACKENDS = ("local", "s3")

Arrays = Mapping[str, np.ndarray]


class MissingPartitionError(FileNotFoundError):
    """An upstream partition (or unpartitioned asset) has never been materialised."""


class CorruptPartitionError(ValueError):
    """A stored partition exists but cannot be parsed."""


class PartitionSplitError(ValueError):
    """A multi-partition output cannot be split into exactly the run's partitions."""


def default_data_root() -> str:
    """The local storage folder: $MAGIKARP_DATA_ROOT, else $DAGSTER_HOME/storage, else ./storage."""
    configured = os.environ.get(DATA_ROOT_ENV)
    if configured:
        return configured
    return str(Path(os.environ.get("DAGSTER_HOME") or os.getcwd()) / "storage")


def _is_arrays(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _has_default_index(frame: pd.DataFrame) -> bool:
    return isinstance(frame.index, pd.RangeIndex) and frame.index.name is None


def _serialise(obj: Any, label: str) -> tuple[str, bytes, dict[str, Any]]:
    """Pick the format from the value's type; return (extension, bytes, metadata)."""
    if isinstance(obj, pd.DataFrame):
        data = frame_to_parquet_bytes(obj)
        return PARQUET, data, {"rows": len(obj)}
    if _is_arrays(obj):
        shapes = {name: list(array.shape) for name, array in obj.items()}
        return NPZ, arrays_to_npz_bytes(obj), {"arrays": dg.MetadataValue.json(shapes)}
    raise TypeError(
        f"{label}: PartitionedParquetIOManager stores a pandas DataFrame (Parquet) or a non-empty "
        f"dict[str, np.ndarray] (.npz), got {type(obj).__name__}; an asset that writes nothing should be "
        "annotated '-> None' or return dg.MaterializeResult"
    )


def make_blob_store(
    backend: str,
    root: str | None = None,
    s3_bucket: str | None = None,
    s3_prefix: str = "",
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> BlobStore:
    """The blob store a storage configuration names: a local folder or an S3 bucket (SSE on every PUT)."""
    if backend == "local":
        return LocalBlobStore(root or default_data_root())
    if backend == "s3":
        if not s3_bucket:
            raise ValueError("storage backend 's3' needs s3_bucket")
        return S3BlobStore(s3_bucket, s3_prefix, endpoint_url=s3_endpoint_url, region=s3_region)
    raise ValueError(f"storage backend must be one of {BACKENDS}, got {backend!r}")


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs as ``{asset/key/path}/{partition_key}.parquet`` (or ``.npz`` for tensors),
    unpartitioned assets as ``{asset/key/path}.parquet``, in a local folder or an S3 bucket (SSE on).

    A run covering several partitions (single-run backfill) may return ``{partition_key: value}`` or one
    DataFrame with a ``date`` column, which is split so each partition gets its own file (empty partitions
    get an empty frame with the same schema). Loading several partitions concatenates DataFrames in
    partition order, or returns ``{partition_key: arrays}`` for tensors.
    """

    backend: str = Field(default="local", description="'local' (a folder) or 's3'.")
    root: str | None = Field(
        default=None,
        description="Local folder; default $MAGIKARP_DATA_ROOT, else $DAGSTER_HOME/storage, else ./storage.",
    )
    s3_bucket: str | None = Field(default=None, description="Bucket name (backend 's3').")
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (moto, MinIO).")
    s3_region: str | None = Field(default=None, description="AWS region; default from the environment.")

    _store: BlobStore | None = PrivateAttr(default=None)

    def blob_store(self) -> BlobStore:
        """The configured blob store, built once per resource instance."""
        if self._store is None:
            self._store = make_blob_store(
                self.backend, self.root, self.s3_bucket, self.s3_prefix, self.s3_endpoint_url, self.s3_region
            )
        return self._store

    @staticmethod
    def _base_key(context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
        """(key without partition or extension, label for messages)."""
        if context.has_asset_key:
            return "/".join(context.asset_key.path), f"asset {context.asset_key.to_user_string()}"
        identifier = "/".join(context.get_identifier())
        return identifier, f"output {identifier}"

    @staticmethod
    def _partition_keys(context: dg.InputContext | dg.OutputContext) -> list[str] | None:
        if not (context.has_asset_key and context.has_asset_partitions):
            return None
        keys = []
        for key in context.asset_partition_keys:
            if isinstance(key, dg.MultiPartitionKey):
                key = "/".join(v for _, v in sorted(key.keys_by_dimension.items()))
            keys.append(str(key))
        return keys

    @staticmethod
    def _object_key(base: str, partition: str | None, extension: str) -> str:
        return f"{base}/{partition}{extension}" if partition is not None else f"{base}{extension}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        base, label = self._base_key(context)
        partitions = self._partition_keys(context)
        parts: dict[str | None, Any]
        if partitions is None or len(partitions) == 1:
            parts = {partitions[0] if partitions else None: obj}
        else:
            parts = {key: value for key, value in _split_partitions(obj, partitions, label).items()}
        store = self.blob_store()
        total_bytes, total_rows, uri = 0, 0, ""
        extra: dict[str, Any] = {}
        for partition, value in parts.items():
            where = label if partition is None else f"{label} partition {partition}"
            extension, data, extra = _serialise(value, where)
            key = self._object_key(base, partition, extension)
            store.put_bytes(key, data)
            # A partition switching format must not leave its old file behind to be loaded instead.
            store.delete(self._object_key(base, partition, NPZ if extension == PARQUET else PARQUET))
            total_bytes += len(data)
            total_rows += extra.pop("rows", 0)
            uri = store.uri(key)
        metadata: dict[str, Any] = {"bytes": total_bytes, **extra}
        if len(parts) == 1:
            metadata["uri"] = dg.MetadataValue.path(uri)
        else:
            metadata["uri"] = dg.MetadataValue.path(store.uri(base))
            metadata["partitions"] = len(parts)
        if any(isinstance(value, pd.DataFrame) for value in parts.values()):
            metadata["rows"] = total_rows
            metadata["dagster/row_count"] = total_rows
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        base, label = self._base_key(context)
        typing_type = context.dagster_type.typing_type
        wants_mapping = get_origin(typing_type) in (dict, Mapping) or typing_type in (dict, Mapping)
        order = (NPZ, PARQUET) if wants_mapping else (PARQUET, NPZ)
        partitions = self._partition_keys(context)
        if partitions is None:
            return self._read(base, None, order, label)
        if not partitions:
            raise MissingPartitionError(f"{label}: the input maps to no upstream partition")
        if len(partitions) > 1:
            partitions = self._after_history_start(context, partitions)
        values = {partition: self._read(base, partition, order, label) for partition in partitions}
        if len(values) == 1:
            return next(iter(values.values()))
        if wants_mapping or not all(isinstance(v, pd.DataFrame) for v in values.values()):
            return values
        return _concat_in_order(list(values.values()))

    def _after_history_start(self, context: dg.InputContext, partitions: list[str]) -> list[str]:
        """A lookback window reaching before the asset's first stored partition starts at that partition
        (history begins there, as at the start of the data); a gap inside the history still fails."""
        if not context.has_asset_key:
            return partitions
        stored = self.stored_partitions(context.asset_key)
        # Partitions being written by this same run count as present (a range run computes them first).
        first = stored[0] if stored else partitions[-1]
        return [p for p in partitions if p >= first] or partitions[-1:]

    def load_partition(self, asset_key: dg.AssetKey, partition_key: str | None = None) -> Any:
        """Read one stored partition outside Dagster's input loading (e.g. a self-dependent asset's
        previous day); MissingPartitionError when it was never materialised."""
        label = f"asset {asset_key.to_user_string()}"
        return self._read("/".join(asset_key.path), partition_key, (PARQUET, NPZ), label)

    def stored_partitions(self, asset_key: dg.AssetKey) -> list[str]:
        """Partition keys of an asset present in storage, sorted."""
        prefix = "/".join(asset_key.path) + "/"
        return sorted(key[len(prefix) :].rsplit(".", 1)[0] for key in self.blob_store().list(prefix))

    def _read(self, base: str, partition: str | None, order: Sequence[str], label: str) -> Any:
        store = self.blob_store()
        where = f"{label}" + (f" partition {partition}" if partition is not None else "")
        tried = []
        for extension in order:
            key = self._object_key(base, partition, extension)
            try:
                data = store.get_bytes(key)
            except BlobNotFoundError:
                tried.append(store.uri(key))
                continue
            try:
                return parquet_bytes_to_frame(data) if extension == PARQUET else npz_bytes_to_arrays(data)
            except Exception as error:
                raise CorruptPartitionError(
                    f"{where}: stored file {store.uri(key)} is corrupt or unreadable ({error})"
                ) from error
        raise MissingPartitionError(f"{where} has not been materialised: no file at {' or '.join(tried)}")


def _split_partitions(obj: Any, partitions: list[str], label: str) -> Mapping[str, Any]:
    """Split a multi-partition output into exactly one value per partition of the run."""
    if isinstance(obj, pd.DataFrame):
        return _split_frame_by_date(obj, partitions, label)
    if isinstance(obj, Mapping) and not _is_arrays(obj):
        unknown = sorted(set(obj) - set(partitions))
        if unknown:
            raise PartitionSplitError(
                f"{label}: output has keys {unknown[:5]} that are not partitions of this run "
                f"({partitions[0]}..{partitions[-1]})"
            )
        missing = [p for p in partitions if p not in obj]
        frames = [v for v in obj.values() if isinstance(v, pd.DataFrame)]
        if missing and not frames:
            raise PartitionSplitError(f"{label}: output has no value for partition(s) {missing[:5]}")
        empty = frames[0].iloc[0:0] if frames else None
        return {p: obj.get(p, empty) for p in partitions}
    raise PartitionSplitError(
        f"{label}: this run covers {len(partitions)} partitions ({partitions[0]}..{partitions[-1]}); "
        f"return a dict {{partition_key: value}} or a DataFrame with a '{DATE_COLUMN}' column, "
        f"not {type(obj).__name__}"
    )


def _split_frame_by_date(frame: pd.DataFrame, partitions: list[str], label: str) -> dict[str, pd.DataFrame]:
    if DATE_COLUMN not in frame.columns:
        raise PartitionSplitError(
            f"{label}: a DataFrame covering {len(partitions)} partitions needs a '{DATE_COLUMN}' column "
            f"to be split per partition; columns are {list(frame.columns)}"
        )
    days = pd.to_datetime(frame[DATE_COLUMN]).dt.strftime("%Y-%m-%d")
    if days.isna().any():
        raise PartitionSplitError(f"{label}: {int(days.isna().sum())} row(s) have no '{DATE_COLUMN}'")
    outside = sorted(set(days.unique()) - set(partitions))
    if outside:
        raise PartitionSplitError(
            f"{label}: rows dated {outside[:5]} do not match any partition of this run "
            f"({partitions[0]}..{partitions[-1]}); '{DATE_COLUMN}' as YYYY-MM-DD must equal the partition key"
        )
    positions = days.groupby(days.to_numpy(), sort=False).indices
    reset = _has_default_index(frame)
    parts = {}
    for partition in partitions:
        part = frame.iloc[positions.get(partition, np.array([], dtype=np.intp))]
        parts[partition] = part.reset_index(drop=True) if reset else part
    return parts


def _concat_in_order(frames: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(non_empty, ignore_index=all(_has_default_index(f) for f in non_empty))
