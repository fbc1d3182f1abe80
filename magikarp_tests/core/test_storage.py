"""Blob stores keep every write all-or-nothing, and serialisation is byte-for-byte reproducible."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from magikarp_assets.core import storage
from magikarp_assets.core.storage import (
    BlobNotFoundError,
    LocalBlobStore,
    S3BlobStore,
    arrays_to_npz_bytes,
    frame_to_parquet_bytes,
    npz_bytes_to_arrays,
    parquet_bytes_to_frame,
    write_parquet,
)

SAMPLE = (
    Path(__file__).resolve().parents[2] / "magikarp_assets" / "data" / "sample" / "sp500_prices_5yr.parquet"
)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Real daily bars of three tickers for January 2017, from the bundled sample."""
    frame = pd.read_parquet(
        SAMPLE,
        filters=[("ticker", "in", ["AAPL", "MSFT", "JPM"]), ("date", ">=", pd.Timestamp("2017-01-01"))],
    )
    frame = frame[frame["date"] < "2017-02-01"].sort_values(["date", "ticker"]).reset_index(drop=True)
    assert len(frame) == 3 * 20  # 20 NYSE sessions in January 2017
    return frame


@pytest.fixture
def tensor() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "features": rng.standard_normal((3600, 32)).astype(np.float32),
        "mask": rng.random(3600) > 0.2,
        "slot_state": rng.integers(0, 3, 3600).astype(np.int8),
    }


def test_parquet_round_trip_keeps_values_and_dtypes(prices: pd.DataFrame) -> None:
    back = parquet_bytes_to_frame(frame_to_parquet_bytes(prices))
    pd.testing.assert_frame_equal(back, prices)


def test_parquet_bytes_are_identical_when_written_twice_and_in_another_process(
    prices: pd.DataFrame, tmp_path: Path
) -> None:
    first = frame_to_parquet_bytes(prices)
    assert frame_to_parquet_bytes(prices.copy()) == first
    store = LocalBlobStore(tmp_path)
    store.put_bytes("prices.parquet", first)
    store.put_with("prices.parquet", lambda sink: write_parquet(prices, sink))
    assert (tmp_path / "prices.parquet").read_bytes() == first
    # A fresh interpreter (new hash seed, new clock) must produce the very same bytes.
    prices.to_pickle(tmp_path / "frame.pkl")
    script = (
        "import hashlib, sys, pandas as pd;"
        "from magikarp_assets.core.storage import frame_to_parquet_bytes;"
        "print(hashlib.sha256(frame_to_parquet_bytes(pd.read_pickle(sys.argv[1]))).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "frame.pkl")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == hashlib.sha256(first).hexdigest()


def test_parquet_uses_zstd(prices: pd.DataFrame) -> None:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(io.BytesIO(frame_to_parquet_bytes(prices))).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_npz_round_trip_is_deterministic_and_readable_by_numpy(tensor: dict[str, np.ndarray]) -> None:
    data = arrays_to_npz_bytes(tensor)
    assert arrays_to_npz_bytes(tensor) == data
    # np.savez stamps the wall clock into each zip entry; ours must not.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert npz.files == ["features", "mask", "slot_state"]
    back = npz_bytes_to_arrays(data)
    for name, array in tensor.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype


def test_npz_decoding_is_serialised_across_threads(tensor: dict[str, np.ndarray]) -> None:
    """numpy parses .npy headers with ast.literal_eval, not thread-safe on Python 3.11 (CPython gh-106905):
    a decode waits while another holds the lock, then completes with the right arrays."""
    data = arrays_to_npz_bytes(tensor)
    done: list[dict[str, np.ndarray]] = []
    with storage._NPY_HEADER_LOCK:
        reader = threading.Thread(target=lambda: done.append(npz_bytes_to_arrays(data)))
        reader.start()
        reader.join(timeout=0.3)
        assert reader.is_alive() and not done
    reader.join(timeout=10)
    assert len(done) == 1
    np.testing.assert_array_equal(done[0]["features"], tensor["features"])


def test_npz_refuses_object_arrays() -> None:
    with pytest.raises(ValueError, match=r"[Oo]bject arrays cannot be saved"):
        arrays_to_npz_bytes({"bad": np.array([{"a": 1}], dtype=object)})


def test_local_store_basic_operations(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put_bytes("a/2017-01-03.parquet", b"one")
    store.put_bytes("a/2017-01-04.parquet", b"two")
    store.put_bytes("ab/x.npz", b"three")
    assert store.get_bytes("a/2017-01-04.parquet") == b"two"
    assert store.exists("a/2017-01-03.parquet") and not store.exists("a/missing")
    assert store.list("a/") == ["a/2017-01-03.parquet", "a/2017-01-04.parquet"]
    assert store.list("a") == ["a/2017-01-03.parquet", "a/2017-01-04.parquet", "ab/x.npz"]
    assert store.uri("ab/x.npz") == (tmp_path / "ab" / "x.npz").resolve().as_uri()
    store.delete("a/2017-01-03.parquet")
    store.delete("a/2017-01-03.parquet")  # deleting a missing key is a no-op
    assert store.list("") == ["a/2017-01-04.parquet", "ab/x.npz"]


def test_missing_key_error_names_key_and_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFoundError, match=r"'raw_ohlcv/2017-01-03.parquet'.*local blob store") as info:
        store.get_bytes("raw_ohlcv/2017-01-03.parquet")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a\\b", "a/./b"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        LocalBlobStore(tmp_path / "root").put_bytes(key, b"x")
    assert not (tmp_path / "outside").exists()


def test_failed_serialisation_leaves_old_file_and_no_temp_file(prices: pd.DataFrame, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put_bytes("prices/2017-01-03.parquet", frame_to_parquet_bytes(prices))
    old = (tmp_path / "prices" / "2017-01-03.parquet").read_bytes()
    unserialisable = pd.DataFrame({"date": ["2017-01-03", "2017-01-03"], "close": [1.5, {"not": "a float"}]})
    seen_during_write: list[str] = []

    def write_half_then_fail(sink: io.BufferedWriter) -> None:
        sink.write(old[: len(old) // 2])  # half a file already on disk...
        sink.flush()
        seen_during_write.extend(os.listdir(tmp_path / "prices"))
        write_parquet(unserialisable, sink)  # ...then serialisation raises

    with pytest.raises(Exception, match="float"):
        store.put_with("prices/2017-01-03.parquet", write_half_then_fail)
    assert len(seen_during_write) == 2  # the temp file really existed next to the target
    assert os.listdir(tmp_path / "prices") == ["2017-01-03.parquet"]
    assert (tmp_path / "prices" / "2017-01-03.parquet").read_bytes() == old


def test_concurrent_writers_never_expose_a_mix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    payloads = [bytes([i]) * 2_000_000 for i in range(3)]
    store.put_bytes("k.bin", payloads[0])
    done = threading.Event()
    reads: list[bytes] = []

    def writer(payload: bytes) -> None:
        for _ in range(10):
            store.put_bytes("k.bin", payload)

    def reader() -> None:
        while not done.is_set():
            reads.append(store.get_bytes("k.bin"))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads[1:]]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert reads
    assert all(r in payloads for r in reads)
    assert store.get_bytes("k.bin") in payloads[1:]
    assert os.listdir(tmp_path) == ["k.bin"]


def test_s3_round_trip_with_encryption_on_every_put(
    prices: pd.DataFrame, s3_client: Any, s3_bucket: str
) -> None:
    client = s3_client
    put_params: list[dict] = []
    client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: put_params.append(params)
    )
    store = S3BlobStore(s3_bucket, prefix="/data/", client=client)
    data = frame_to_parquet_bytes(prices)
    store.put_bytes("prices/2017-01-03.parquet", data)
    store.put_with("prices/2017-01-04.parquet", lambda sink: write_parquet(prices.head(3), sink))
    store.put_bytes("tensors/2017-01-03.npz", arrays_to_npz_bytes({"x": np.arange(4)}))

    pd.testing.assert_frame_equal(
        parquet_bytes_to_frame(store.get_bytes("prices/2017-01-03.parquet")), prices
    )
    assert store.get_bytes("prices/2017-01-03.parquet") == data
    assert store.list("prices/") == ["prices/2017-01-03.parquet", "prices/2017-01-04.parquet"]
    assert store.uri("prices/2017-01-03.parquet") == f"s3://{s3_bucket}/data/prices/2017-01-03.parquet"
    assert len(put_params) == 3
    assert all(p["ServerSideEncryption"] == "AES256" for p in put_params)
    objects = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert len(objects) == 3
    for item in objects:
        assert item["Key"].startswith("data/")
        assert client.head_object(Bucket=s3_bucket, Key=item["Key"])["ServerSideEncryption"] == "AES256"


def test_s3_missing_delete_and_failed_write(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3BlobStore(s3_bucket, endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(BlobNotFoundError, match=rf"'nope.parquet'.*s3://{s3_bucket}/"):
        store.get_bytes("nope.parquet")
    assert not store.exists("nope.parquet")
    store.put_bytes("a.bin", b"old")

    def fail(sink: io.BytesIO) -> None:
        sink.write(b"partial")
        raise RuntimeError("serialisation failed midway")

    with pytest.raises(RuntimeError, match="midway"):
        store.put_with("a.bin", fail)
    assert store.get_bytes("a.bin") == b"old"
    store.delete("a.bin")
    store.delete("a.bin")
    assert store.list() == []


def test_s3_store_refuses_to_write_unencrypted() -> None:
    with pytest.raises(ValueError, match="server-side encryption"):
        S3BlobStore("bucket", sse="", client=object())
