"""Fixed shapes of the platform, defined once."""

from __future__ import annotations

N_SLOTS = 3600  # fixed width of every tensor and of the policy's action
MAX_ACTIVE = 3000  # current index constituents
N_ARCHIVE = 300  # names that left the index, kept so the portfolio can still sell them
N_PADDING = N_SLOTS - MAX_ACTIVE - N_ARCHIVE  # always masked
N_FEATURES = 32

# Slot states, as stored in the slot map and in the tensor's `slot_state` vector.
SLOT_PADDING = 0
SLOT_ACTIVE = 1
SLOT_ARCHIVE = 2

BENCHMARK_TICKERS = ("QQQ", "SPY")
PRIMARY_BENCHMARK = "QQQ"
