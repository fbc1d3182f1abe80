"""Resources per deployment (local, dev, staging, prod), built from the one ENVIRONMENTS mapping in settings:
where data, models and emails are stored, where prices come from, how email goes out and to whom."""

import os
import tempfile
from typing import Any

from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.mail_archive import ArchivedNotifierResource
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.resources.model_registry import ModelRegistryResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_assets.resources.secrets import export_secrets, secret_env_var
from magikarp_assets.settings import Environment, environment

DEFAULT_SENDER = "tmagikarp@localhost"


def _recipients(variable: str | None) -> list[str]:
    return [a.strip() for a in os.environ.get(variable or "", "").split(",") if a.strip()]


def _market_data(env: Environment) -> MarketDataResource:
    provider = os.environ.get("MAGIKARP_MARKET_DATA", env.market_data)
    if provider != "live":
        return MarketDataResource(provider=provider)
    return MarketDataResource(
        provider="live",
        polygon_api_key=secret_env_var("POLYGON_API_KEY"),
        alphavantage_api_key=secret_env_var("ALPHAVANTAGE_API_KEY"),
    )


def storage_config(env: Environment) -> dict[str, Any]:
    """The storage fields shared by the IO manager and the model registry (one bucket, one prefix).

    :param env: the deployment; for S3 the bucket is MAGIKARP_S3_BUCKET, the prefix MAGIKARP_S3_PREFIX
        (default the deployment name), the endpoint MAGIKARP_S3_ENDPOINT_URL (S3-compatible servers).
    :raises ValueError: when an S3 deployment has no MAGIKARP_S3_BUCKET.
    """
    if env.storage == "local":
        return {"backend": "local"}
    bucket = os.environ.get("MAGIKARP_S3_BUCKET")
    if not bucket:
        raise ValueError(f"deployment {env.name!r} stores on S3 and needs MAGIKARP_S3_BUCKET to be set")
    return {
        "backend": "s3",
        "s3_bucket": bucket,
        "s3_prefix": os.environ.get("MAGIKARP_S3_PREFIX", env.name),
        "s3_endpoint_url": os.environ.get("MAGIKARP_S3_ENDPOINT_URL"),
        "s3_region": os.environ.get("AWS_REGION"),
    }


def _notifier(env: Environment, storage: dict[str, Any]) -> NotifierResource:
    """Local: an outbox folder. Cloud: every message archived in the bucket; SES (or SMTP when
    MAGIKARP_SMTP_HOST is set) where the deployment sends real email."""
    if not env.cloud:
        return NotifierResource(transport="outbox")
    transport = env.email_transport
    smtp_host = os.environ.get("MAGIKARP_SMTP_HOST")
    if transport == "ses" and smtp_host:
        transport = "smtp"
    return ArchivedNotifierResource(
        transport=transport,
        outbox_dir=str(os.path.join(tempfile.gettempdir(), f"magikarp-outbox-{env.name}")),
        smtp_host=smtp_host,
        smtp_port=int(os.environ.get("MAGIKARP_SMTP_PORT", "587")),
        smtp_username=os.environ.get("MAGIKARP_SMTP_USERNAME"),
        smtp_password=secret_env_var("MAGIKARP_SMTP_PASSWORD"),
        ses_region=os.environ.get("AWS_REGION", "us-east-1"),
        ses_endpoint_url=os.environ.get("MAGIKARP_SES_ENDPOINT_URL"),
        sender=os.environ.get("MAGIKARP_EMAIL_SENDER", DEFAULT_SENDER),
        critical_recipients=_recipients(env.recipients.get("critical")),
        warning_recipients=_recipients(env.recipients.get("warning")),
        info_recipients=_recipients(env.recipients.get("info")),
        archive_backend="s3",
        archive_s3_bucket=storage["s3_bucket"],
        archive_s3_prefix=storage["s3_prefix"],
        archive_s3_endpoint_url=storage["s3_endpoint_url"],
        archive_s3_region=storage["s3_region"],
    )


def resources_for(name: str) -> dict[str, object]:
    """The resource set of a deployment. Local runs offline on the bundled sample; the cloud deployments
    first fill missing secrets from Secrets Manager when MAGIKARP_SECRETS_ID is set.

    :param name: local, dev, staging or prod.
    :raises ValueError: for an unknown deployment or a missing required setting.
    """
    env = environment(name)
    if env.cloud:
        export_secrets()
    storage = storage_config(env)
    return {
        "market_data": _market_data(env),
        "io_manager": PartitionedParquetIOManager(**storage),
        "model_registry": ModelRegistryResource(**storage),
        "notifier": _notifier(env, storage),
    }
