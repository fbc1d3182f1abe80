"""API keys and passwords come from environment variables or, in the cloud, from one AWS Secrets Manager
secret; they are held in the process environment only, never written to a file or logged."""

import json
import os
from collections.abc import MutableMapping, Sequence
from typing import Any

import dagster as dg

SECRETS_ID_ENV = "MAGIKARP_SECRETS_ID"
# Every secret the platform reads; the Secrets Manager secret is a JSON object with some of these keys.
SECRET_NAMES = ("POLYGON_API_KEY", "ALPHAVANTAGE_API_KEY", "MAGIKARP_SMTP_PASSWORD")


class SecretsError(RuntimeError):
    """A secret could not be read; names the secret id and the rule broken, never a value."""


def fetch_secret_values(secret_id: str, client: Any = None) -> dict[str, str]:
    """Read a Secrets Manager secret holding a JSON object of string values.

    :param secret_id: the secret's name or ARN.
    :param client: a boto3 ``secretsmanager`` client; default one from the standard AWS chain (region and
        endpoint from the environment, e.g. AWS_ENDPOINT_URL_SECRETS_MANAGER for a local server).
    :return: the secret's key -> value pairs.
    :raises SecretsError: when the secret cannot be read or is not a JSON object of strings.
    """
    import boto3  # deferred: only deployments with a secret id pay for the import
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = client or boto3.client("secretsmanager")
        response = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretsError(f"Secrets Manager secret {secret_id!r} could not be read: {code}") from None
    except BotoCoreError as exc:
        raise SecretsError(
            f"Secrets Manager secret {secret_id!r} could not be read: {type(exc).__name__}"
        ) from None
    try:
        values = json.loads(response.get("SecretString") or "")
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise SecretsError(
            f"Secrets Manager secret {secret_id!r} must hold a JSON object of string values "
            f"(keys among {', '.join(SECRET_NAMES)})"
        )
    return values


def export_secrets(
    names: Sequence[str] = SECRET_NAMES,
    environ: MutableMapping[str, str] | None = None,
    client: Any = None,
) -> list[str]:
    """Fill the variables in ``names`` that are not set from the secret named by MAGIKARP_SECRETS_ID.

    A variable already set wins (an ECS task injects secrets as variables; a developer exports them). With
    no MAGIKARP_SECRETS_ID nothing is fetched. Values go into the process environment only, where
    ``dg.EnvVar`` resolves them at run time without showing them in the UI.

    :param names: the variables to fill.
    :param environ: the environment to fill; default ``os.environ``.
    :param client: a boto3 ``secretsmanager`` client (see :func:`fetch_secret_values`).
    :return: the names that were filled from Secrets Manager, sorted.
    """
    env = os.environ if environ is None else environ
    secret_id = env.get(SECRETS_ID_ENV)
    missing = [name for name in names if not env.get(name)]
    if not secret_id or not missing:
        return []
    values = fetch_secret_values(secret_id, client)
    filled = sorted(name for name in missing if values.get(name))
    for name in filled:
        env[name] = values[name]
    return filled


def secret_env_var(name: str) -> dg.EnvVar | None:
    """The secret as a ``dg.EnvVar`` (resolved at run time, never logged) when its variable is set.

    :param name: the environment variable, e.g. ``POLYGON_API_KEY``.
    """
    return dg.EnvVar(name) if os.environ.get(name) else None
