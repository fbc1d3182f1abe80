"""One settings object: deployment name and every operator threshold, from env vars.

Every threshold can be overridden with an environment variable named in its field's metadata
(e.g. MAGIKARP_COVERAGE_MIN=0.99). The README's "Settings" table lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

DEPLOYMENTS = ("local", "dev", "staging", "prod")


@dataclass(frozen=True)
class Thresholds:
    """Operator thresholds, documented in the README."""

    coverage_min: float = field(default=0.995, metadata={"env": "MAGIKARP_COVERAGE_MIN"})
    # A day's quarantined share of rows above this fails the (non-blocking) quarantine check as a warning.
    quarantine_warn_ratio: float = field(default=0.0, metadata={"env": "MAGIKARP_QUARANTINE_WARN_RATIO"})

    @classmethod
    def from_env(cls) -> Thresholds:
        kwargs = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is not None:
                try:
                    kwargs[f.name] = type(f.default)(raw)
                except ValueError as exc:
                    raise ValueError(
                        f"setting {f.metadata['env']}={raw!r} is not a valid {type(f.default).__name__}"
                    ) from exc
        return cls(**kwargs)


def deployment() -> str:
    name = os.environ.get("MAGIKARP_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"MAGIKARP_DEPLOYMENT={name!r} is not one of {', '.join(DEPLOYMENTS)}")
    return name
