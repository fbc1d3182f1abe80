"""One settings object: the deployment (local, dev, staging, prod) with what it runs on, and every operator
threshold, from env vars.

Every threshold can be overridden with an environment variable named in its field's metadata
(e.g. MAGIKARP_COVERAGE_MIN=0.99). The README's "Settings" table lists them. What each deployment uses
(storage, data source, email transport, alert recipients, alert sensors) is the ENVIRONMENTS mapping below:
the one place to read or change it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

DEPLOYMENTS = ("local", "dev", "staging", "prod")
# Run tags: the queued run coordinator allows one training run at a time (deploy/dagster.yaml), and the ECS
# run launcher starts training runs on a larger task (sizes in deploy/settings.yaml, checked by the tests).
WORKLOAD_TAG = "magikarp/workload"
TRAINING_RUN_TAGS = {WORKLOAD_TAG: "training", "ecs/cpu": "4096", "ecs/memory": "16384"}
ALERT_RECIPIENTS_ENV = "MAGIKARP_ALERT_RECIPIENTS"
REPORT_RECIPIENTS_ENV = "MAGIKARP_REPORT_RECIPIENTS"


@dataclass(frozen=True)
class Environment:
    """What one deployment runs on.

    :param name: the deployment name (MAGIKARP_DEPLOYMENT).
    :param storage: "local" (a folder under DAGSTER_HOME) or "s3" (MAGIKARP_S3_BUCKET, SSE on every PUT):
        assets, model registry and the email archive all live there.
    :param market_data: "sample" (bundled real sample, offline) or "live" (Yahoo with backups); the
        MAGIKARP_MARKET_DATA variable overrides it (e.g. a dev stack replaying the sample).
    :param email_transport: "outbox" (messages are only stored) or "ses" (real email through Amazon SES).
    :param alert_sensors: whether the run-failure and blocking-check alert sensors are deployed.
    :param recipients: per alert level, the environment variable holding its comma-separated addresses.
    """

    name: str
    storage: str
    market_data: str
    email_transport: str
    alert_sensors: bool
    recipients: dict[str, str] = field(default_factory=dict)

    @property
    def cloud(self) -> bool:
        """True when the deployment keeps everything on S3 (nothing durable on local disk)."""
        return self.storage == "s3"


_OPERATORS = {"critical": ALERT_RECIPIENTS_ENV, "warning": ALERT_RECIPIENTS_ENV}
ENVIRONMENTS: dict[str, Environment] = {
    "local": Environment("local", storage="local", market_data="sample", email_transport="outbox",
                         alert_sensors=False),
    "dev": Environment("dev", storage="s3", market_data="sample", email_transport="outbox",
                       alert_sensors=False),
    # Staging mails only the operators, reports included; production mails the reports to their readers.
    "staging": Environment("staging", storage="s3", market_data="live", email_transport="ses",
                           alert_sensors=True, recipients={**_OPERATORS, "info": ALERT_RECIPIENTS_ENV}),
    "prod": Environment("prod", storage="s3", market_data="live", email_transport="ses",
                        alert_sensors=True, recipients={**_OPERATORS, "info": REPORT_RECIPIENTS_ENV}),
}  # fmt: skip


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
    """The deployment named by MAGIKARP_DEPLOYMENT (default "local")."""
    name = os.environ.get("MAGIKARP_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"MAGIKARP_DEPLOYMENT={name!r} is not one of {', '.join(DEPLOYMENTS)}")
    return name


def environment(name: str | None = None) -> Environment:
    """What a deployment runs on, from ENVIRONMENTS.

    :param name: a deployment name; default the one named by MAGIKARP_DEPLOYMENT.
    :raises ValueError: for an unknown name.
    """
    name = name or deployment()
    if name not in ENVIRONMENTS:
        raise ValueError(
            f"unknown deployment {name!r}: MAGIKARP_DEPLOYMENT is one of {', '.join(DEPLOYMENTS)}"
        )
    return ENVIRONMENTS[name]
