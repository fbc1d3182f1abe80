"""The Dagster CLI materialises sample partitions and month backfills, and refuses non-sessions."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _cli(tmp_path, *args):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "MAGIKARP_DATA_ROOT": str(tmp_path / "store")}
    cmd = [DAGSTER, "asset", "materialize", "-m", "magikarp_assets.definitions", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_materialises_a_session_and_a_month_and_refuses_a_saturday(tmp_path):
    assert _cli(tmp_path, "--select", "universe_constituents").returncode == 0
    day = _cli(tmp_path, "--select", "raw_ohlcv,ohlcv_quarantine", "--partition", "2016-06-15")
    assert day.returncode == 0, day.stderr[-2000:]
    month = _cli(
        tmp_path, "--select", "raw_ohlcv,ohlcv_quarantine", "--partition-range", "2016-06-01...2016-06-30"
    )
    assert month.returncode == 0, month.stderr[-2000:]
    files = sorted((tmp_path / "store" / "raw_ohlcv").glob("*.parquet"))
    assert len(files) == 22  # June 2016 sessions
    assert pd.read_parquet(files[-1])["date"].unique().tolist() == [pd.Timestamp("2016-06-30")]
    saturday = _cli(tmp_path, "--select", "raw_ohlcv,ohlcv_quarantine", "--partition", "2016-06-18")
    assert saturday.returncode != 0
    assert "2016-06-18" in saturday.stderr and "PartitionsDefinition" in saturday.stderr
