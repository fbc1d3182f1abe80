"""The AWS CDK app synthesises offline and its template has the properties the platform relies on: the
bucket encrypted, versioned, private and refusing unencrypted PUTs; the database encrypted, private and with
rotated credentials; services without public IPs; least-privilege IAM; log retention, alarms and a monthly
budget alarm at the configured $100."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from magikarp_assets.settings import TRAINING_RUN_TAGS

REPO = Path(__file__).resolve().parents[2]
CDK_DIR = REPO / "deploy" / "cdk"
CDK_PYTHON = REPO / ".venv-cdk" / "bin" / "python"


def _load_cost() -> Any:
    spec = importlib.util.spec_from_file_location("magikarp_deploy_cost", CDK_DIR.parent / "cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict[str, Any]:
    """`python app.py` in the CDK app's own virtualenv (make cdk-venv), as `cdk synth` runs it, offline."""
    if not CDK_PYTHON.exists():
        pytest.fail(f"{CDK_PYTHON} is missing: run `make cdk-venv` (make test does) to install the CDK app")
    outdir = tmp_path_factory.mktemp("cdk.out")
    done = subprocess.run(
        [str(CDK_PYTHON), "app.py"],
        cwd=CDK_DIR,
        env={**os.environ, "CDK_OUTDIR": str(outdir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"cdk synth failed:\n{done.stderr[-3000:]}"
    (path,) = outdir.glob("*.template.json")
    return json.loads(path.read_text())


def _resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every IAM statement: managed and inline policies of roles and policies."""
    found = []
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy":
            found += props["PolicyDocument"]["Statement"]
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                found += policy["PolicyDocument"]["Statement"]
    return found


pytestmark = pytest.mark.slow  # node + jsii start-up and a full synthesis: 15-25 s on 2 shared cores


def test_bucket_is_encrypted_versioned_private_and_refuses_unencrypted_puts(template):
    (bucket,) = _resources(template, "AWS::S3::Bucket")
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert rules["compute-logs"]["ExpirationInDays"] == 30
    (policy,) = _resources(template, "AWS::S3::BucketPolicy")
    denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false" for s in denies)
    unencrypted = [s for s in denies if s.get("Sid") == "DenyUnencryptedPuts"]
    assert unencrypted[0]["Condition"] == {"Null": {"s3:x-amz-server-side-encryption": "true"}}
    assert not any(
        s["Effect"] == "Allow" and s.get("Principal") == "*" for s in policy["PolicyDocument"]["Statement"]
    )


def test_database_is_private_encrypted_and_its_secret_rotates(template):
    (db,) = _resources(template, "AWS::RDS::DBInstance")
    assert db["StorageEncrypted"] is True and db["PubliclyAccessible"] is False
    assert db["Engine"] == "postgres" and db["EngineVersion"].startswith("15")
    assert db["DBInstanceClass"] == "db.t4g.micro" and db["DeletionProtection"] is True
    (rotation,) = _resources(template, "AWS::SecretsManager::RotationSchedule")
    assert rotation["RotationRules"]["ScheduleExpression"] == "rate(30 days)"
    names = {json.dumps(s.get("Name")) for s in _resources(template, "AWS::SecretsManager::Secret")}
    assert '"tmagikarp/prod/app"' in names and '"tmagikarp/prod/db"' in names
    # The database lives in isolated subnets: no route to the internet.
    (group,) = _resources(template, "AWS::RDS::DBSubnetGroup")
    assert all("dataSubnet" in ref["Ref"] for ref in group["SubnetIds"])


def test_services_run_privately_with_logs_and_secrets_from_secrets_manager(template):
    services = _resources(template, "AWS::ECS::Service")
    assert len(services) == 3
    for service in services:
        network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
        assert all("servicesSubnet" in ref["Ref"] for ref in network["Subnets"])
    tasks = _resources(template, "AWS::ECS::TaskDefinition")
    assert len(tasks) == 4  # code server, webserver, daemon and the run task
    for task in tasks:
        (container,) = task["ContainerDefinitions"]
        env = {e["Name"] for e in container["Environment"]}
        assert "DAGSTER_PG_PASSWORD" not in env and not env & {"POLYGON_API_KEY", "ALPHAVANTAGE_API_KEY"}
        assert [s["Name"] for s in container["Secrets"]] == ["DAGSTER_PG_PASSWORD"]
        assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    groups = _resources(template, "AWS::Logs::LogGroup")
    assert len(groups) >= 4 and all(g.get("RetentionInDays") == 30 for g in groups)
    assert len(_resources(template, "AWS::SES::EmailIdentity")) == 1
    # The training size the runs ask for fits Fargate's 4 vCPU / 16 GiB combination the launcher requests.
    assert (TRAINING_RUN_TAGS["ecs/cpu"], TRAINING_RUN_TAGS["ecs/memory"]) == ("4096", "16384")


def test_iam_is_least_privilege(template):
    allowed_unscoped = {
        "ecs:DescribeTaskDefinition",
        "ec2:DescribeNetworkInterfaces",
        "ecr:GetAuthorizationToken",
    }
    statements = [s for s in _statements(template) if s["Effect"] == "Allow"]
    assert statements
    for statement in statements:
        actions = _as_list(statement["Action"])
        resources = _as_list(statement.get("Resource", []))
        assert "*" not in actions, statement
        if "*" in resources:  # only calls AWS cannot scope to a resource, never a wildcard action
            assert set(actions) <= allowed_unscoped and not any("*" in a for a in actions), statement
    s3_actions = {a for s in statements for a in _as_list(s["Action"]) if a.startswith("s3:")}
    assert s3_actions <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    passes = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert passes and all(s["Condition"]["StringEquals"]["iam:PassedToService"] for s in passes)


def test_alarms_email_the_operators_and_the_budget_alarm_is_at_100_usd(template):
    (budget,) = _resources(template, "AWS::Budgets::Budget")
    assert budget["Budget"]["BudgetLimit"] == {"Amount": 100, "Unit": "USD"}
    assert budget["Budget"]["TimeUnit"] == "MONTHLY" and budget["Budget"]["BudgetType"] == "COST"
    kinds = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in budget["NotificationsWithSubscribers"]
    }
    assert kinds == {("ACTUAL", 80), ("FORECASTED", 100)}
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    cost = _load_cost()  # docs/cost.md prices exactly what the stack creates
    assert len(alarms) == cost.ALARMS and all(a["AlarmActions"] for a in alarms)
    assert len(_resources(template, "AWS::SecretsManager::Secret")) == cost.SECRETS
    (subscription,) = _resources(template, "AWS::SNS::Subscription")
    assert subscription["Protocol"] == "email"
