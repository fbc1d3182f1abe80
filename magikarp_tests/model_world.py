"""A small storage world on the real bundled sample for the model-safety tests: per-session feature tensors
(3,600 slots, trailing-only indicators from the sample's closes), slot maps and QQQ/SPY benchmark prices,
written where the IO manager reads them."""

from pathlib import Path

import pandas as pd

from magikarp_assets.core.storage import LocalBlobStore, arrays_to_npz_bytes, npz_bytes_to_arrays
from magikarp_tests.support.world import store_world


def build_world(root: Path, days: pd.DatetimeIndex) -> None:
    """Store feature_tensor, slot_map and benchmark_prices partitions for ``days`` under ``root``."""
    store_world(LocalBlobStore(root), days)


def crash_closes(root: Path, day: str, factor: float) -> None:
    """Inject a market crash into a stored session: every close times ``factor`` (features unchanged)."""
    store = LocalBlobStore(root)
    key = f"feature_tensor/{day}.npz"
    arrays = dict(npz_bytes_to_arrays(store.get_bytes(key)))
    arrays["close"] = arrays["close"] * factor
    store.put_bytes(key, arrays_to_npz_bytes(arrays))
