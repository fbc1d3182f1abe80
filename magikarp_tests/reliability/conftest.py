"""Fixtures of the reliability suite: production step retries without their waits."""

import dagster as dg
import pytest

from magikarp_assets.defs.ingestion import assets as ingestion

FETCH_ASSETS = (ingestion.universe_constituents, ingestion.raw_ohlcv, ingestion.benchmark_prices)


@pytest.fixture(autouse=True)
def step_retries_without_waits(monkeypatch):
    """The fetching assets keep retrying their step (once here, three times in production) but without the
    30 s+ exponential delay, so a fault that outlives the retries fails the run in test time."""
    for asset in FETCH_ASSETS:
        monkeypatch.setattr(asset.op, "_retry_policy", dg.RetryPolicy(max_retries=1, delay=0))
