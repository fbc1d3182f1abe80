"""Resources per deployment, picked from one mapping by MAGIKARP_DEPLOYMENT (local, dev, staging, prod)."""

from __future__ import annotations

import os

import dagster as dg

from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_assets.settings import deployment


def _optional_secret(name: str) -> dg.EnvVar | None:
    """An API key is an EnvVar (resolved at run time, never logged) when the variable is set."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _live_market_data() -> MarketDataResource:
    return MarketDataResource(
        provider="live",
        polygon_api_key=_optional_secret("POLYGON_API_KEY"),
        alphavantage_api_key=_optional_secret("ALPHAVANTAGE_API_KEY"),
    )


def _s3_io_manager() -> PartitionedParquetIOManager:
    return PartitionedParquetIOManager(
        backend="s3",
        s3_bucket=dg.EnvVar("MAGIKARP_S3_BUCKET"),
        s3_prefix=os.environ.get("MAGIKARP_S3_PREFIX", deployment()),
        s3_endpoint_url=os.environ.get("MAGIKARP_S3_ENDPOINT_URL"),
    )


def _recipients(name: str) -> list[str]:
    return [a.strip() for a in os.environ.get(name, "").split(",") if a.strip()]


def _email_notifier() -> NotifierResource:
    """Real email in the cloud deployments: SES by default, SMTP when MAGIKARP_SMTP_HOST is set."""
    smtp_host = os.environ.get("MAGIKARP_SMTP_HOST")
    return NotifierResource(
        transport="smtp" if smtp_host else "ses",
        smtp_host=smtp_host,
        smtp_port=int(os.environ.get("MAGIKARP_SMTP_PORT", "587")),
        smtp_username=os.environ.get("MAGIKARP_SMTP_USERNAME"),
        smtp_password=_optional_secret("MAGIKARP_SMTP_PASSWORD"),
        ses_region=os.environ.get("AWS_REGION", "us-east-1"),
        sender=os.environ.get("MAGIKARP_EMAIL_SENDER", "tmagikarp@localhost"),
        critical_recipients=_recipients("MAGIKARP_ALERT_RECIPIENTS"),
        warning_recipients=_recipients("MAGIKARP_ALERT_RECIPIENTS"),
        info_recipients=_recipients("MAGIKARP_REPORT_RECIPIENTS"),
    )


def resources_for(name: str) -> dict[str, object]:
    """The resource set of a deployment. Local runs offline on the bundled sample."""
    if name == "local":
        return {
            "market_data": MarketDataResource(provider=os.environ.get("MAGIKARP_MARKET_DATA", "sample")),
            "io_manager": PartitionedParquetIOManager(backend="local"),
            "model_registry": ModelRegistryResource(backend="local"),
            "notifier": NotifierResource(transport="outbox"),
        }
    if name in ("dev", "staging", "prod"):
        io_manager = _s3_io_manager()
        registry = ModelRegistryResource(
            backend="s3",
            s3_bucket=io_manager.s3_bucket,
            s3_prefix=io_manager.s3_prefix,
            s3_endpoint_url=io_manager.s3_endpoint_url,
        )
        return {
            "market_data": _live_market_data(),
            "io_manager": io_manager,
            "model_registry": registry,
            "notifier": _email_notifier(),
        }
    raise ValueError(f"unknown deployment {name!r}")
