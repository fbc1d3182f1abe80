"""The 32 per-stock model inputs, defined once: name, position, group, meaning and normalisation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from magikarp_assets.core.spec import N_FEATURES
from magikarp_assets.core.sql_models import SQL_DIR, load_macros, load_models

TECHNICAL = "technical"
FUNDAMENTAL = "fundamental"
TEMPORAL = "temporal"
PADDING = "padding"

# Normalisation rules, applied per day across the stocks holding a slot (stock_features.sql).
ROBUST_Z = "robust_z"  # (x - median) / (IQR / 1.349), clipped to [-3, 3], divided by 3; missing -> 0
TENURE_LINEAR = "tenure_linear"  # years in the universe, 0..10 mapped linearly onto [-1, 1]
STATE_SIGN = "state_sign"  # +1 active slot, -1 archive slot
ZERO = "zero"  # always 0


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: `index` is its column in the tensor, `description` its exact raw definition."""

    name: str
    index: int
    group: str
    description: str
    normalisation: str


# (name, exact raw definition); every technical and fundamental feature is normalised with ROBUST_Z.
_TECHNICAL = [
    ("ret_1d", "Total return over 1 session: adj_close ratio when both bars have one, else close ratio."),
    ("ret_5d", "Total return over 5 sessions (same basis rule as ret_1d)."),
    ("ret_21d", "Total return over 21 sessions (same basis rule as ret_1d)."),
    ("ret_63d", "Total return over 63 sessions (same basis rule as ret_1d)."),
    (
        "volatility_21d",
        "Sample standard deviation (ddof 1) of the last 21 one-session returns, times sqrt(252).",
    ),
    (
        "rsi_14",
        "RSI, Cutler's variant: 100 * sum(gains) / (sum(gains) + sum(losses)) over the last 14 "
        "close-to-close changes (simple sums instead of Wilder's exponential smoothing); 50 when nothing "
        "moved.",
    ),
    (
        "macd",
        "MACD from simple moving averages (finite windows instead of EMAs): "
        "(SMA12(close) - SMA26(close)) / close.",
    ),
    ("macd_signal", "Signal line: simple 9-session average of macd (instead of an EMA)."),
    (
        "bollinger_pct_b",
        "Bollinger %B: (close - (SMA20 - 2 sd)) / (4 sd), sd the population standard deviation of the last "
        "20 closes.",
    ),
    (
        "atr_ratio_14",
        "Simple 14-session average of the true range (instead of Wilder's smoothing), divided by close.",
    ),
    (
        "volume_zscore_21",
        "z-score of ln(1 + volume) against the last 21 sessions including today (sample standard deviation).",
    ),
    ("price_vs_sma50", "close / SMA50(close) - 1."),
    ("price_vs_sma200", "close / SMA200(close) - 1."),
    (
        "adx_14",
        "ADX with simple sums (instead of Wilder's smoothing): 14-session average of DX = 100 * "
        "|sum14(+DM) - sum14(-DM)| / (sum14(+DM) + sum14(-DM)) (the DIs' common sum14(TR) cancels).",
    ),
    (
        "cci_20",
        "CCI: (TP - SMA20(TP)) / (0.015 * mean |TP - SMA20(TP)| over the 20 sessions), "
        "TP = (high + low + close) / 3.",
    ),
]
_FUNDAMENTAL = [
    ("pe_ratio", "close / EPS of the last visible report; missing when EPS <= 0."),
    ("pb_ratio", "market cap / total equity; missing when equity <= 0."),
    ("ps_ratio", "market cap / revenue; missing when revenue <= 0."),
    (
        "eps_ttm",
        "EPS of the last visible report (offline the reports are annual: 'TTM' is the last reported fiscal "
        "year).",
    ),
    (
        "eps_growth",
        "(EPS - previous fiscal year's EPS) / |previous EPS|; the previous report must be visible too.",
    ),
    ("roe", "net income / total equity; missing when equity <= 0."),
    ("debt_to_equity", "long-term debt / total equity; missing when equity <= 0."),
    ("profit_margin", "net income / revenue; missing when revenue <= 0."),
    ("revenue_growth", "revenue / previous fiscal year's revenue - 1."),
    ("log_market_cap", "ln(close * shares outstanding of the last visible report)."),
]
_DEFINITIONS: list[tuple[str, str, str, str]] = [
    *((name, TECHNICAL, desc, ROBUST_Z) for name, desc in _TECHNICAL),
    *((name, FUNDAMENTAL, desc, ROBUST_Z) for name, desc in _FUNDAMENTAL),
    (
        "tenure",
        TEMPORAL,
        "Years since the ticker entered the universe (slot map first_added).",
        TENURE_LINEAR,
    ),
    ("slot_state", TEMPORAL, "Slot state: active or archive.", STATE_SIGN),
    *((f"pad_{i}", PADDING, "Reserved, always 0.", ZERO) for i in range(1, 6)),
]
FEATURES: tuple[FeatureSpec, ...] = tuple(
    FeatureSpec(name=name, index=i, group=group, description=desc, normalisation=norm)
    for i, (name, group, desc, norm) in enumerate(_DEFINITIONS)
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
TECHNICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == TECHNICAL)
FUNDAMENTAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == FUNDAMENTAL)

# Shared rules, stated once (the SQL models implement them; tests hold them to it).
COMMON_RULES = {
    "windows": "Counted in sessions over stg_prices rows, where a missing session repeats the ticker's last "
    "bar (at most 5 sessions old). The whole window is required (else missing); values needing the previous "
    "bar need one more session.",
    "point_in_time": "A report is visible on day t only when public_date <= t; a report whose fiscal period "
    "ended more than 550 days before t is stale (missing).",
    "missing": "A missing or non-finite raw value becomes 0 after normalisation; the stock's `valid` flag "
    "says whether it had a bar dated that day.",
}

if len(FEATURES) != N_FEATURES or len(set(FEATURE_NAMES)) != N_FEATURES:
    raise RuntimeError(f"feature spec must define {N_FEATURES} distinct features, has {len(FEATURES)}")


def canonical_spec() -> str:
    """The spec as canonical JSON (sorted keys, no whitespace variation)."""
    payload = {"features": [asdict(f) for f in FEATURES], "rules": COMMON_RULES}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def feature_spec_hash(sql_texts: Mapping[str, str]) -> str:
    """sha256 over the canonical spec and every SQL text (models and macros), so any definition change shows.

    :param sql_texts: file name -> SQL text.
    """
    digest = hashlib.sha256(canonical_spec().encode())
    for name in sorted(sql_texts):
        digest.update(b"\0" + name.encode() + b"\0" + sql_texts[name].encode())
    return digest.hexdigest()


def sql_texts(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Every model and macro file's text, keyed by its path relative to the SQL folder."""
    texts = {f"{m.name}.sql": m.sql for m in load_models(sql_dir).values()}
    texts.update({f"macros/{name}": text for name, text in load_macros(sql_dir).items()})
    return texts


FEATURE_SPEC_HASH = feature_spec_hash(sql_texts())
