"""Blob stores (a local folder or S3) that never expose a half-written object, plus deterministic
Parquet and .npz serialisation so the same data always produces the same bytes."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import threading
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
# S3: a few quick retries (standard mode backs off with jitter), then a clear error instead of a hang.
S3_MAX_ATTEMPTS = 3
S3_CONNECT_TIMEOUT = 5.0
S3_READ_TIMEOUT = 60.0
PARQUET_COMPRESSION_LEVEL = 3
# Fixed zip entry time: np.savez stamps entries with the wall clock, which changes the bytes every run.
_NPZ_ENTRY_TIME = (1980, 1, 1, 0, 0, 0)
# numpy parses each .npy header with ast.literal_eval, which is not thread-safe on Python 3.11 (CPython
# gh-106905: concurrent parses can fail with "SystemError: AST constructor recursion depth mismatch", seen
# when the training loader read tensors on 8 threads). Decoding holds this lock; fetching the bytes does not.
_NPY_HEADER_LOCK = threading.Lock()
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")

Writer = Callable[[BinaryIO], object]


class StorageUnavailableError(OSError):
    """A blob store could not be reached or refused an operation; names the operation, the object's URI and
    the cause (never credentials). Nothing was written: each write is all-or-nothing."""


class BlobNotFoundError(FileNotFoundError):
    """Raised when a key does not exist in a blob store; names the key and the store."""

    def __init__(self, key: str, store: BlobStore) -> None:
        super().__init__(f"no object at key {key!r} in {store.describe()} (uri {store.uri(key)})")
        self.key = key
        self.uri = store.uri(key)


def validate_key(key: str) -> str:
    """Check that a key is a relative '/'-separated path that cannot escape the store's root.

    :param key: the object key, e.g. ``raw_ohlcv/2017-02-01.parquet``.
    :return: the key unchanged.
    :raises ValueError: for an empty key, a leading '/', a backslash, or an empty/'.'/'..' segment.
    """
    segments = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(s in ("", ".", "..") for s in segments):
        raise ValueError(
            f"invalid blob key {key!r}: must be a relative '/'-separated path without empty, '.' or '..' "
            "segments or backslashes"
        )
    return key


class BlobStore(ABC):
    """A flat key -> bytes store where every write is all-or-nothing."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        :param key: the object key.
        :param data: the full content.
        """
        self.put_with(key, lambda sink: sink.write(data))

    @abstractmethod
    def put_with(self, key: str, write: Writer) -> None:
        """Store what ``write`` writes to a binary sink; nothing becomes visible unless it returns normally.

        :param key: the object key.
        :param write: a callable that writes the full content to the given binary file object.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the content stored under ``key``.

        :param key: the object key.
        :raises BlobNotFoundError: if the key does not exist.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Tell whether ``key`` holds an object.

        :param key: the object key.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is a no-op.

        :param key: the object key.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """All keys starting with ``prefix`` (a plain string prefix, not only a folder), sorted.

        :param prefix: the key prefix to match, '' for everything.
        """

    @abstractmethod
    def uri(self, key: str) -> str:
        """The absolute location of ``key`` (``file://`` path or ``s3://`` URI), for messages and metadata.

        :param key: the object key.
        """

    @abstractmethod
    def describe(self) -> str:
        """A one-line human description of the store, used in error messages."""


class LocalBlobStore(BlobStore):
    """Objects as files under a root folder; writes go to a temp file in the same folder, then os.replace."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """:param root: the folder holding the objects; created on first write."""
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put_with(self, key: str, write: Writer) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "xb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key, self) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> builtins.list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not start.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and not _TEMP_NAME.match(name):
                    keys.append(key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def describe(self) -> str:
        return f"local blob store at {self.root}"


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX: the directory entry lives in the folder's inode)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3BlobStore(BlobStore):
    """Objects in an S3 bucket under a key prefix; each write is one PutObject with server-side encryption."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        sse: str = "AES256",
        client: Any = None,
    ) -> None:
        """:param bucket: the bucket name.
        :param prefix: a key prefix (folder) inside the bucket, '' for the bucket root.
        :param endpoint_url: an S3-compatible endpoint (moto, MinIO); None for AWS.
        :param region: the AWS region; None uses the environment's default.
        :param sse: the ServerSideEncryption value sent on every PUT ("AES256" or "aws:kms").
        :param client: an existing boto3 S3 client; built from the other arguments when None.
        """
        if not bucket:
            raise ValueError("S3BlobStore needs a bucket name")
        if not sse:
            raise ValueError("S3BlobStore requires server-side encryption: sse must be 'AES256' or 'aws:kms'")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.sse = sse
        if client is None:
            import boto3  # deferred: only S3 deployments pay for the import
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
            )
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client

    @contextlib.contextmanager
    def _calling(self, operation: str, key: str | None) -> Iterator[None]:
        """Turn transport and service failures into StorageUnavailableError naming the operation and URI."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.uri(key) if key is not None else f"s3://{self.bucket}/{self.prefix}"
        try:
            yield
        except (BotoCoreError, ClientError) as error:
            failure = f"{type(error).__name__}: {error}"
        else:
            return
        # Raised outside the except block: botocore's exception (and its request) is not chained.
        raise StorageUnavailableError(
            f"S3 {operation} of {where} failed ({self.describe()}): {failure}"
        ) from None

    def _full_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put_with(self, key: str, write: Writer) -> None:
        full_key = self._full_key(key)
        buffer = io.BytesIO()
        write(buffer)
        with self._calling("PutObject", key):
            self.client.put_object(
                Bucket=self.bucket, Key=full_key, Body=buffer.getvalue(), ServerSideEncryption=self.sse
            )

    def get_bytes(self, key: str) -> bytes:
        with self._calling("GetObject", key):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._full_key(key))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise BlobNotFoundError(key, self) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._calling("HeadObject", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._full_key(key))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def delete(self, key: str) -> None:
        with self._calling("DeleteObject", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full_key(key))

    def list(self, prefix: str = "") -> builtins.list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        with self._calling("ListObjectsV2", None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def describe(self) -> str:
        return f"S3 blob store s3://{self.bucket}/{self.prefix}"


def write_parquet(frame: pd.DataFrame, sink: BinaryIO) -> None:
    """Write a DataFrame as Parquet with fixed settings (zstd level 3), so equal frames give equal bytes.

    :param frame: the table to write; its index is kept as pandas metadata.
    :param sink: a binary file object.
    """
    table = pa.Table.from_pandas(frame)
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL)


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a DataFrame to deterministic Parquet bytes.

    :param frame: the table to serialise.
    """
    buffer = io.BytesIO()
    write_parquet(frame, buffer)
    return buffer.getvalue()


def parquet_bytes_to_frame(data: bytes) -> pd.DataFrame:
    """Read Parquet bytes back into a DataFrame (dtypes and index restored from the pandas metadata).

    :param data: bytes produced by :func:`frame_to_parquet_bytes` or any Parquet writer.
    """
    return pq.read_table(pa.BufferReader(data)).to_pandas()


def write_npz(arrays: Mapping[str, np.ndarray], sink: BinaryIO) -> None:
    """Write named arrays in the ``np.savez`` format (uncompressed zip of .npy files) with fixed entry times.

    :param arrays: array name -> array; object arrays are refused (no pickles).
    :param sink: a binary file object.
    """
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"npz array names must be non-empty strings, got {name!r}")
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_NPZ_ENTRY_TIME)
            with archive.open(entry, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def arrays_to_npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named numpy arrays to deterministic .npz bytes.

    :param arrays: array name -> array.
    """
    buffer = io.BytesIO()
    write_npz(arrays, buffer)
    return buffer.getvalue()


def npz_bytes_to_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Read .npz bytes into a dict of arrays, in stored order, refusing pickled objects.

    :param data: bytes produced by :func:`arrays_to_npz_bytes` or ``np.savez``.
    """
    with _NPY_HEADER_LOCK, np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
