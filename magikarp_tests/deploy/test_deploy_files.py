"""Static checks of deploy/ (no Docker engine runs here): the instance files are valid Dagster configuration
and agree with each other, the Dockerfile follows the image rules (multi-stage, pinned base, CPU torch
first, non-root, no secrets), the compose file is complete and keeps credentials out of the file, the
shared sizes agree with the code, and docs/cost.md is exactly what deploy/cost.py prints."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

from magikarp_assets.settings import TRAINING_RUN_TAGS, WORKLOAD_TAG

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTANCE_ENV = {
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "MAGIKARP_S3_BUCKET": "bucket",
    "MAGIKARP_RUN_TASK_DEFINITION": "tmagikarp-prod-run",
    "MAGIKARP_ECS_CLUSTER": "tmagikarp-prod",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|ACCESS_KEY", re.IGNORECASE)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _settings() -> dict[str, Any]:
    return _yaml(DEPLOY / "settings.yaml")


def _valid(config_type: Any, config: dict[str, Any]) -> None:
    result = process_config(resolve_to_config_type(config_type), config)
    assert result.success, [error.message for error in result.errors]


def test_instance_files_are_valid_and_share_every_section_but_the_launcher(monkeypatch, tmp_path):
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    single, ecs = _yaml(DEPLOY / "dagster.yaml"), _yaml(DEPLOY / "ecs" / "dagster.yaml")
    assert {k: v for k, v in ecs.items() if k != "run_launcher"} == single
    for source in (DEPLOY / "dagster.yaml", DEPLOY / "ecs" / "dagster.yaml"):
        folder = tmp_path / source.parent.name
        folder.mkdir()
        shutil.copy(source, folder / "dagster.yaml")
        dagster_instance_config(str(folder))  # raises on any schema error
    db = single["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    assert all(
        isinstance(db[key], dict) and set(db[key]) == {"env"} for key in ("username", "password", "hostname")
    )
    limits = single["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": WORKLOAD_TAG, "value": TRAINING_RUN_TAGS[WORKLOAD_TAG], "limit": 1} in limits
    assert single["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    logs = single["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager"
    assert logs["config"]["upload_extra_args"] == {"ServerSideEncryption": "AES256"}
    _valid(S3ComputeLogManager.config_type(), logs["config"])
    launcher = ecs["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    _valid(EcsRunLauncher.config_type(), launcher["config"])


def test_shared_sizes_and_names_agree_with_the_code():
    settings = _settings()
    training = settings["runs"]["training"]
    assert (TRAINING_RUN_TAGS["ecs/cpu"], TRAINING_RUN_TAGS["ecs/memory"]) == (
        str(training["cpu"]),
        str(training["memory"]),
    )
    launcher = _yaml(DEPLOY / "ecs" / "dagster.yaml")["run_launcher"]["config"]["run_resources"]
    daily = settings["runs"]["daily"]
    assert launcher == {"cpu": str(daily["cpu"]), "memory": str(daily["memory"])}
    (ecs_location,) = _yaml(DEPLOY / "ecs" / "workspace.yaml")["load_from"]
    cluster = f"{settings['project']}-{settings['deployment']}"
    assert ecs_location["grpc_server"]["host"] == f"code.{cluster}.internal"  # Cloud Map name in deploy/cdk
    (compose_location,) = _yaml(DEPLOY / "workspace.yaml")["load_from"]
    assert compose_location["grpc_server"]["host"] in _yaml(DEPLOY / "docker-compose.yaml")["services"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_rules():
    steps = _instructions(DEPLOY / "Dockerfile")
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    stages = [a for kind, a in steps if kind == "FROM"]
    assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages), "multi-stage with named stages"
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"base image {image} is not pinned"
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    users = [a for kind, a in final if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        "the final stage must run as a non-root user"
    )
    runs = [a for kind, a in steps if kind == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    locked = next(i for i, r in enumerate(runs) if "requirements.lock" in r)
    assert torch < locked and "download.pytorch.org/whl/cpu" in runs[torch], "CPU torch is installed first"
    for kind, arguments in steps:
        if kind in ("ENV", "ARG"):
            assert not SECRET_NAME.search(arguments), f"{kind} {arguments}: secrets never go in the image"
        assert not (kind == "ADD" and "://" in arguments), "no remote ADD"
        assert not re.search(r"curl[^|]*\|\s*(ba)?sh", arguments), "no piping downloads into a shell"
    assert any(kind == "HEALTHCHECK" for kind, _ in final)
    # The build context (the repository) is ignored except what the image needs: no .venv, no .env files.
    text = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in text if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and "**/.env" in ignore
    assert not [
        line for line in ignore if line.startswith("!") and (".venv" in line or "dagster_home" in line)
    ]


def _compose() -> dict[str, Any]:
    return _yaml(DEPLOY / "docker-compose.yaml")


def test_compose_file_is_complete_and_keeps_credentials_out():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert re.fullmatch(r"\$\{\w+(:[?-][^}]*)?\}", str(value)), (
                    f"{name}: {variable} is not from env"
                )
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published beyond localhost"
    assert "ports" not in services["postgres"]
    assert services["postgres"]["image"].startswith("postgres:15")
    for name in ("code", "webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "./dagster.yaml:/opt/dagster/home/dagster.yaml:ro" in services[name]["volumes"]
    assert services["code"]["read_only"] is True and services["code"]["tmpfs"] == ["/tmp"]
    assert services["code"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    required = re.findall(r"\$\{(\w+):\?", (DEPLOY / "docker-compose.yaml").read_text())
    assert {"DAGSTER_PG_PASSWORD", "MAGIKARP_S3_BUCKET"} <= set(required)


def test_compose_config_validates_with_docker_compose(tmp_path):
    # Debian's docker-compose (Compose v1, installed by `make system-deps`): validates without an engine.
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed: run `make system-deps` (make test does)")
    command = ["docker-compose"]
    env = {"DAGSTER_PG_PASSWORD": "x", "MAGIKARP_S3_BUCKET": "b", "MAGIKARP_EMAIL_SENDER": "a@b.test",
           "MAGIKARP_ALERT_RECIPIENTS": "a@b.test", "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip
    done = subprocess.run(
        [*command, "-f", str(DEPLOY / "docker-compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _cost_module() -> Any:
    spec = importlib.util.spec_from_file_location("magikarp_deploy_cost", DEPLOY / "cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cost_doc_is_the_scripts_output_and_stays_under_budget():
    cost = _cost_module()
    settings = _settings()
    assert (ROOT / "docs" / "cost.md").read_text() == cost.render(settings), (
        "run python deploy/cost.py --write"
    )
    total = sum(line[2] for line in cost.estimate(settings))
    assert 0 < total < settings["budget_usd"] == 100
    # Each always-on service and run kind of the settings is priced.
    services = {line[0] for line in cost.estimate(settings)}
    assert {f"ECS Fargate: {name}" for name in settings["services"]} <= services
    # A bigger database shows up in the estimate (the numbers follow the settings).
    bigger = {**settings, "database": {**settings["database"], "instance_class": "t4g.medium"}}
    assert sum(line[2] for line in cost.estimate(bigger)) > total
