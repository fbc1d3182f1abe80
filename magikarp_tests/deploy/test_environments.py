"""One variable picks the deployment and one mapping its resources: local stays offline on local disk, dev
stores everything on S3 without real email, staging and prod send real email (SES, archived on S3) and run
the alert sensors. Secrets come from the environment or from AWS Secrets Manager (a real local server), and
never end up in the resources' configuration."""

import json
import os

import boto3
import dagster as dg
import pytest

from magikarp_assets.definitions import build_definitions
from magikarp_assets.defs.resources import resources_for
from magikarp_assets.resources.mail_archive import ArchivedNotifierResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_assets.resources.secrets import SecretsError, export_secrets
from magikarp_assets.settings import ENVIRONMENTS, environment
from magikarp_tests.support_s3 import REGION

ALERT_SENSORS = {"run_failure_alert", "blocking_check_alert"}
SENDER = "tmagikarp@example.test"


@pytest.fixture
def cloud(monkeypatch, s3_endpoint, s3_bucket):
    """The variables a cloud task gets: bucket, recipients, and AWS endpoints on the local moto server."""
    for name in ("MAGIKARP_MARKET_DATA", "MAGIKARP_SMTP_HOST", "MAGIKARP_SECRETS_ID", "MAGIKARP_S3_PREFIX",
                 "POLYGON_API_KEY", "ALPHAVANTAGE_API_KEY", "MAGIKARP_SMTP_PASSWORD"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAGIKARP_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("MAGIKARP_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("MAGIKARP_SES_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_endpoint)
    monkeypatch.setenv("MAGIKARP_EMAIL_SENDER", SENDER)
    monkeypatch.setenv("MAGIKARP_ALERT_RECIPIENTS", "oncall@example.test, lead@example.test")
    monkeypatch.setenv("MAGIKARP_REPORT_RECIPIENTS", "readers@example.test")
    return s3_endpoint


def test_local_is_the_default_and_stays_offline_on_local_disk(monkeypatch):
    monkeypatch.delenv("MAGIKARP_DEPLOYMENT", raising=False)
    monkeypatch.delenv("MAGIKARP_MARKET_DATA", raising=False)
    assert environment().name == "local"
    resources = resources_for("local")
    assert resources["io_manager"].backend == resources["model_registry"].backend == "local"
    assert resources["market_data"].provider == "sample"
    notifier = resources["notifier"]
    assert type(notifier) is NotifierResource and notifier.transport == "outbox"
    monkeypatch.setenv("MAGIKARP_DEPLOYMENT", "production")
    with pytest.raises(ValueError, match="MAGIKARP_DEPLOYMENT='production' is not one of local, dev"):
        environment()


def test_each_deployment_takes_its_resources_from_the_one_mapping(cloud, s3_bucket):
    expected = {  # storage, data, email, sensors: the table in the README
        "local": ("local", "sample", "outbox", False),
        "dev": ("s3", "sample", "outbox", False),
        "staging": ("s3", "live", "ses", True),
        "prod": ("s3", "live", "ses", True),
    }
    for name, (storage, data, email, sensors) in expected.items():
        env = ENVIRONMENTS[name]
        assert (env.storage, env.market_data, env.email_transport, env.alert_sensors) == expected[name]
        resources = resources_for(name)
        assert resources["io_manager"].backend == resources["model_registry"].backend == storage
        assert resources["market_data"].provider == data
        assert resources["notifier"].transport == email
        defs = build_definitions(name)
        names = {sensor.name for sensor in defs.sensors}
        assert (ALERT_SENSORS & names) == (ALERT_SENSORS if sensors else set()), name
        if storage == "s3":
            io, registry, notifier = (
                resources["io_manager"],
                resources["model_registry"],
                resources["notifier"],
            )
            assert io.s3_bucket == registry.s3_bucket == notifier.archive_s3_bucket == s3_bucket
            assert io.s3_prefix == registry.s3_prefix == notifier.archive_s3_prefix == name
            assert isinstance(notifier, ArchivedNotifierResource)
    staging, prod = resources_for("staging")["notifier"], resources_for("prod")["notifier"]
    operators = ["oncall@example.test", "lead@example.test"]
    assert staging.critical_recipients == prod.critical_recipients == prod.warning_recipients == operators
    assert staging.info_recipients == operators and prod.info_recipients == ["readers@example.test"]


def test_a_cloud_deployment_without_a_bucket_is_refused(cloud, monkeypatch):
    monkeypatch.delenv("MAGIKARP_S3_BUCKET")
    with pytest.raises(ValueError, match="deployment 'prod' stores on S3 and needs MAGIKARP_S3_BUCKET"):
        resources_for("prod")


def test_secrets_come_from_secrets_manager_into_the_environment_only(cloud, monkeypatch):
    client = boto3.client("secretsmanager", region_name=REGION)  # endpoint from AWS_ENDPOINT_URL_...
    values = {"POLYGON_API_KEY": "pk-from-secrets-manager", "ALPHAVANTAGE_API_KEY": "av-from-secrets-manager"}
    client.create_secret(Name="tmagikarp/prod/app", SecretString=json.dumps(values))
    monkeypatch.setenv("MAGIKARP_SECRETS_ID", "tmagikarp/prod/app")
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "av-from-the-task")  # a variable already set wins
    resources = resources_for("prod")
    market = resources["market_data"]
    assert market.polygon_api_key == dg.EnvVar("POLYGON_API_KEY")  # a reference, not the value
    assert market.alphavantage_api_key == dg.EnvVar("ALPHAVANTAGE_API_KEY")
    assert os.environ["POLYGON_API_KEY"] == "pk-from-secrets-manager"
    assert os.environ["ALPHAVANTAGE_API_KEY"] == "av-from-the-task"
    config = json.dumps({name: r.model_dump() for name, r in resources.items()}, default=str)
    assert "from-secrets-manager" not in config and "from-the-task" not in config


def test_unreadable_secrets_fail_clearly_without_showing_values(cloud):
    client = boto3.client("secretsmanager", region_name=REGION)
    client.create_secret(Name="tmagikarp/bad", SecretString="not-json-but-a-secret-value")
    env = {"MAGIKARP_SECRETS_ID": "tmagikarp/bad"}
    with pytest.raises(SecretsError, match="'tmagikarp/bad' must hold a JSON object") as error:
        export_secrets(environ=env)
    assert "secret-value" not in str(error.value)
    env = {"MAGIKARP_SECRETS_ID": "tmagikarp/missing"}
    with pytest.raises(
        SecretsError, match="'tmagikarp/missing' could not be read: ResourceNotFoundException"
    ):
        export_secrets(environ=env)
    assert export_secrets(environ={}) == []  # no secret id: nothing fetched


def test_staging_sends_real_email_by_ses_and_archives_it_encrypted(cloud, s3_client, s3_bucket):
    ses = boto3.client("ses", endpoint_url=cloud, region_name=REGION)
    ses.verify_email_identity(EmailAddress=SENDER)
    notifier = resources_for("staging")["notifier"]
    sent_before = ses.get_send_quota()["SentLast24Hours"]  # the moto server is shared by the session
    receipt = notifier.send_alert("critical", "Run failed: daily_signals", {"partition": "2016-06-08"})
    assert receipt is not None and receipt.transport == "ses" and receipt.target == cloud
    assert set(receipt.recipients) == {"oncall@example.test", "lead@example.test"}
    assert ses.get_send_quota()["SentLast24Hours"] - sent_before == 2  # moto counts per recipient
    (key,) = [
        o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="staging/outbox/")["Contents"]
    ]
    assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    body = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert b"Run failed: daily_signals" in body and receipt.message_id
