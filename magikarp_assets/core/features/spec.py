"""The 32 features of every slot, defined once: name, order, group, description, normalisation.

`FEATURE_SPEC_HASH` covers this table and the SQL of every model, so any change to a definition gives
models trained on the old features a different hash, and the registry refuses to serve them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from magikarp_assets.core.spec import N_FEATURES
from magikarp_assets.core.sql_models import SQL_DIR

ROBUST_Z = "robust z-score across the day's stocks: (x - median) / (1.4826 MAD), clipped to +-3, / 3"


@dataclass(frozen=True)
class Feature:
    name: str
    group: str  # technical | fundamental | temporal | padding
    description: str
    normalisation: str


_T, _F = "technical", "fundamental"
FEATURES: tuple[Feature, ...] = (
    Feature("ret_1d", _T, "1-session total return", ROBUST_Z),
    Feature("ret_5d", _T, "5-session total return", ROBUST_Z),
    Feature("ret_21d", _T, "21-session total return", ROBUST_Z),
    Feature("ret_63d", _T, "63-session total return", ROBUST_Z),
    Feature("volatility_21d", _T, "standard deviation of daily returns over 21 sessions", ROBUST_Z),
    Feature("rsi_14", _T, "RSI(14), Cutler's variant (simple averages of gains and losses)", ROBUST_Z),
    Feature("macd", _T, "MACD from simple 12/26-session averages, relative to price", ROBUST_Z),
    Feature("macd_signal", _T, "9-session simple average of MACD", ROBUST_Z),
    Feature("bollinger_pct_b", _T, "Bollinger %B over 20 sessions, 2 standard deviations", ROBUST_Z),
    Feature("atr_ratio_14", _T, "14-session simple average true range / close", ROBUST_Z),
    Feature("volume_zscore_21", _T, "z-score of today's volume against the last 21 sessions", ROBUST_Z),
    Feature("price_vs_sma50", _T, "close / 50-session simple average - 1", ROBUST_Z),
    Feature("price_vs_sma200", _T, "close / 200-session simple average - 1", ROBUST_Z),
    Feature("adx_14", _T, "ADX(14) with simple averages (finite window)", ROBUST_Z),
    Feature("cci_20", _T, "CCI(20) on typical price", ROBUST_Z),
    Feature("pe_ratio", _F, "price / EPS of the last public report", ROBUST_Z),
    Feature("pb_ratio", _F, "market cap / total equity", ROBUST_Z),
    Feature("ps_ratio", _F, "market cap / revenue (last public fiscal year offline)", ROBUST_Z),
    Feature("eps_ttm", _F, "EPS of the last 12 reported months (last fiscal year offline)", ROBUST_Z),
    Feature("eps_growth", _F, "EPS growth against the report a year earlier", ROBUST_Z),
    Feature("roe", _F, "net income / total equity", ROBUST_Z),
    Feature("debt_to_equity", _F, "long-term debt / total equity", ROBUST_Z),
    Feature("profit_margin", _F, "net income / revenue", ROBUST_Z),
    Feature("revenue_growth", _F, "revenue growth against the report a year earlier", ROBUST_Z),
    Feature("log_market_cap", _F, "log of close x shares outstanding", ROBUST_Z),
    Feature(
        "tenure", "temporal", "years since the ticker entered the universe", "0..10 years mapped onto [-1, 1]"
    ),
    Feature("slot_state", "temporal", "active (+1) or archived (-1) slot", "as is"),
    *(Feature(f"pad_{i}", "padding", "reserved, always zero", "zero") for i in range(1, 6)),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
assert len(FEATURES) == N_FEATURES, f"feature spec defines {len(FEATURES)} features, expected {N_FEATURES}"


def _spec_hash() -> str:
    digest = hashlib.sha256(json.dumps([asdict(f) for f in FEATURES], sort_keys=True).encode())
    for path in sorted(SQL_DIR.rglob("*.sql")):
        digest.update(path.relative_to(SQL_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


FEATURE_SPEC_HASH = _spec_hash()
