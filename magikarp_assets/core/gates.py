"""The rules a model must pass before it serves (backtest and shadow gates) and the live triggers that roll
it back, each outcome stating the value, the limit and the rule so a human can see why."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from magikarp_assets.core.metrics import daily_returns, max_drawdown, sharpe_ratio

GATE_METRICS = ("sharpe_ratio", "max_drawdown", "average_turnover", "cumulative_return")


BACKTEST_GATE_ENV = "MAGIKARP_BACKTEST_GATE"
SHADOW_GATE_ENV = "MAGIKARP_SHADOW_GATE"
ROLLBACK_ENV = "MAGIKARP_ROLLBACK"


def _from_env(cls: type, prefix: str) -> Any:
    """``cls()`` with each field overridden by the environment variable ``{prefix}_{FIELD}`` when set."""
    kwargs, defaults = {}, cls()
    for f in fields(cls):
        name = f"{prefix}_{f.name.upper()}"
        raw = os.environ.get(name)
        if raw is not None:
            try:
                kind = type(getattr(defaults, f.name))
                kwargs[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"setting {name}={raw!r} is not a valid {kind.__name__}") from exc
    return cls(**kwargs)


@dataclass(frozen=True)
class GateThresholds:
    """Limits of one gate (backtest or shadow). Drawdowns and turnover are positive fractions.

    :param sharpe_margin: the candidate's Sharpe may trail the reference's by at most this much.
    :param max_drawdown: the candidate's worst fall from a peak may not exceed this (0.2 = 20 %).
    :param max_turnover: the candidate's average daily turnover may not exceed this (0.5 = 50 %/day).
    """

    sharpe_margin: float = 0.5
    max_drawdown: float = 0.20
    max_turnover: float = 0.50

    @classmethod
    def from_env(cls, prefix: str) -> GateThresholds:
        """Defaults overridden by ``{prefix}_SHARPE_MARGIN``, ``_MAX_DRAWDOWN``, ``_MAX_TURNOVER``.

        :param prefix: BACKTEST_GATE_ENV or SHADOW_GATE_ENV.
        """
        return _from_env(cls, prefix)


@dataclass(frozen=True)
class RollbackTriggers:
    """Live degradation that rolls the production model back.

    :param window: trailing sessions (of the serving version) the triggers look at.
    :param max_drawdown: roll back when the drawdown within the window exceeds this (0.1 = 10 %).
    :param sharpe_gap: roll back when the trailing Sharpe trails QQQ's by more than this.
    :param min_sessions: sessions the version must have served before the Sharpe trigger applies.
    """

    window: int = 20
    max_drawdown: float = 0.10
    sharpe_gap: float = 3.0
    min_sessions: int = 10

    @classmethod
    def from_env(cls) -> RollbackTriggers:
        """Defaults overridden by ``MAGIKARP_ROLLBACK_WINDOW``, ``_MAX_DRAWDOWN``, ``_SHARPE_GAP``,
        ``_MIN_SESSIONS``."""
        return _from_env(cls, ROLLBACK_ENV)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule applied: its name, the value measured, the limit, and whether it held."""

    rule: str
    value: float
    limit: float
    passed: bool

    def reason(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{verdict}: {self.rule} (value {self.value:.4f}, limit {self.limit:.4f})"


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict: passed only when every rule held; ``reasons`` states each rule's outcome."""

    gate: str
    outcomes: tuple[RuleOutcome, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def reasons(self) -> list[str]:
        return [o.reason() for o in self.outcomes]

    @property
    def failures(self) -> list[str]:
        return [o.reason() for o in self.outcomes if not o.passed]


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(float(value))


def evaluate_gate(
    gate: str,
    candidate: Mapping[str, float],
    reference: Mapping[str, float],
    reference_name: str,
    thresholds: GateThresholds,
) -> GateResult:
    """Apply a gate to a candidate's metrics against a reference's on the same days.

    Rules: every gate metric is a number (no NaN); Sharpe ``>= reference Sharpe - sharpe_margin``; max
    drawdown ``>= -max_drawdown``; average daily turnover ``<= max_turnover``.

    :param gate: the gate's name ("backtest" or "shadow").
    :param candidate: the candidate's performance_summary.
    :param reference: the reference's performance_summary (production model, or equal weight without one).
    :param reference_name: what the reference is, for the reasons.
    :param thresholds: the gate's limits.
    """
    nan = [name for name in GATE_METRICS if not _finite(candidate.get(name, float("nan")))]
    ref_sharpe = float(reference.get("sharpe_ratio", float("nan")))
    ref_sharpe = ref_sharpe if _finite(ref_sharpe) else 0.0
    sharpe = float(candidate.get("sharpe_ratio", float("nan")))
    drawdown = float(candidate.get("max_drawdown", float("nan")))
    turnover = float(candidate.get("average_turnover", float("nan")))
    floor = ref_sharpe - thresholds.sharpe_margin
    outcomes = (
        RuleOutcome(f"no NaN in {', '.join(GATE_METRICS)} (NaN: {', '.join(nan) or 'none'})",
                    len(nan), 0, not nan),
        RuleOutcome(
            f"Sharpe >= {reference_name}'s Sharpe {ref_sharpe:.4f} - margin {thresholds.sharpe_margin}",
            sharpe, floor, _finite(sharpe) and sharpe >= floor,
        ),
        RuleOutcome("max drawdown no deeper than the limit", drawdown, -thresholds.max_drawdown,
                    _finite(drawdown) and drawdown >= -thresholds.max_drawdown),
        RuleOutcome("average daily turnover <= limit", turnover, thresholds.max_turnover,
                    _finite(turnover) and turnover <= thresholds.max_turnover),
    )  # fmt: skip
    return GateResult(gate, outcomes)


def rollback_check(values: pd.Series, benchmark: pd.Series, triggers: RollbackTriggers) -> GateResult:
    """Evaluate the automatic-rollback triggers on the serving version's trailing sessions: it "passes"
    (keeps serving) unless a trigger fires.

    :param values: the paper portfolio's value per session while the version served (plus the session
        before, as the base), index increasing; only the last ``window + 1`` are used.
    :param benchmark: QQQ total-return price on the same sessions.
    :param triggers: the limits.
    """
    values = pd.Series(values, dtype=np.float64).iloc[-(triggers.window + 1) :]
    bench = pd.Series(benchmark, dtype=np.float64).reindex(values.index)
    drawdown = max_drawdown(values) if len(values) else 0.0
    outcomes = [
        RuleOutcome(
            f"drawdown over the last {len(values) - 1} session(s) no deeper than the trigger",
            drawdown, -triggers.max_drawdown, not drawdown < -triggers.max_drawdown,
        )
    ]  # fmt: skip
    sessions = len(values) - 1
    if sessions >= triggers.min_sessions and not bench.isna().any():
        mine, theirs = sharpe_ratio(daily_returns(values)), sharpe_ratio(daily_returns(bench))
        if _finite(mine) and _finite(theirs):
            gap = theirs - mine
            outcomes.append(
                RuleOutcome(
                    f"trailing {sessions}-session Sharpe {mine:.4f} within the gap of QQQ's {theirs:.4f}",
                    gap, triggers.sharpe_gap, gap <= triggers.sharpe_gap,
                )
            )  # fmt: skip
    return GateResult("rollback", tuple(outcomes))
