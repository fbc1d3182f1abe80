"""Security: credentials never reach logs, event metadata, exceptions or stored files during a real run;
the web UI listens on 127.0.0.1 by default; and the secret scanner finds planted credentials (without
printing them) while the repository itself is clean."""

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._serdes import serialize_value

from magikarp_assets.core.notify import DeliveryError
from magikarp_assets.defs.ingestion import assets as ingestion
from magikarp_assets.defs.signals.sensors import run_failure_alert
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.market_data import MarketDataResource
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support.fake_market_api import FakeMarketAPI, FakeResponse, polygon_grouped_json
from magikarp_tests.support_smtp import SMTP_USER, run_smtp_server

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import scan_secrets  # noqa: E402

# Built at run time so that this file itself holds no credential-looking literal.
API_KEY = "pk" + "-" + "live-4f9Qz" + "X7mLw2Rt8Vb"
AV_KEY = "av" + "-" + "live-Jt6Yp" + "3nK9sQe1Ww"
SMTP_SECRET = "Smtp" + "-secret-" + "Hq5Lz8Vn2Xc"
TICKERS = ["AAPL", "MSFT", "KO"]
DAY = "2016-06-15"
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{}"


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYGON_API_KEY", API_KEY)
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", AV_KEY)
    monkeypatch.setenv("MAGIKARP_SMTP_PASSWORD", SMTP_SECRET)
    io_manager = PartitionedParquetIOManager(backend="local", root=str(tmp_path / "store"))
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([ingestion.universe_constituents], resources={"market_data": MarketDataResource(),
                   "io_manager": io_manager}, instance=instance)  # fmt: skip
    path = tmp_path / "store" / "universe_constituents.parquet"
    universe = pd.read_parquet(path)
    universe[universe["ticker"].isin(TICKERS)].reset_index(drop=True).to_parquet(path)
    return io_manager, instance, tmp_path


def _everything(instance: dg.DagsterInstance, runs, root: Path, *texts: str) -> str:
    """Every log record (with its metadata and error payloads), every file written, and the given texts."""
    out = list(texts)
    for run in runs:
        out.extend(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    out.extend(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())
    return "\n".join(out)


def test_api_keys_and_smtp_password_never_reach_logs_metadata_errors_or_files(
    world, caplog, capfd, tls_certificate
):
    io_manager, instance, root = world
    bars = ingestion_bars()
    with FakeMarketAPI() as api:
        live = MarketDataResource(
            provider="live", yahoo_base_url=api.url, polygon_api_key=dg.EnvVar("POLYGON_API_KEY"),
            alphavantage_api_key=dg.EnvVar("ALPHAVANTAGE_API_KEY"), polygon_base_url=api.url,
            alphavantage_base_url=api.url, max_retries=1,
        )  # fmt: skip
        resources = {"market_data": live, "io_manager": io_manager}
        api.script(re.compile(r"/v8/finance/chart/.*"), FakeResponse(503))
        for day, rows in bars.groupby("date"):
            api.script(GROUPED.format(f"{day:%Y-%m-%d}"), FakeResponse(json=polygon_grouped_json(rows)))
        ok = run(resources, instance, DAY)
        assert ok.success
        assert {r.query.get("apiKey") for r in api.requests if r.path.startswith("/v2/")} == {API_KEY}
        for day in bars["date"].unique():  # the backups now fail: with a 500, then refusing the key
            api.script(GROUPED.format(f"{pd.Timestamp(day):%Y-%m-%d}"), FakeResponse(500))
        api.script("/query", FakeResponse(401, json={"Error Message": f"invalid key {AV_KEY}"}))
        failed = run(resources, instance, "2016-06-16")
        assert not failed.success
        assert any(r.query.get("apikey") == AV_KEY for r in api.requests)  # the key was really sent

    with run_smtp_server(certificate=tls_certificate) as server:
        server.echo_credentials = True  # a server that quotes the rejected login back
        notifier = NotifierResource(
            transport="smtp", smtp_host="127.0.0.1", smtp_port=server.port, smtp_username=SMTP_USER,
            smtp_password=dg.EnvVar("MAGIKARP_SMTP_PASSWORD"), smtp_ca_file=str(tls_certificate.cert_file),
            outbox_dir=str(root / "outbox"), critical_recipients=["oncall@tmagikarp.test"],
            warning_recipients=["oncall@tmagikarp.test"], info_recipients=["team@tmagikarp.test"],
        )  # fmt: skip
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance, dagster_run=failed.dagster_run, resources={"notifier": notifier},
        )  # fmt: skip
        with pytest.raises(DeliveryError) as refused:
            run_failure_alert(context)
    assert server.auth_attempts and "535" in str(refused.value)

    captured = capfd.readouterr()
    haystack = _everything(instance, [ok, failed], root, caplog.text, captured.out, captured.err,
                           str(refused.value), repr(refused.value), repr(notifier), repr(live))  # fmt: skip
    assert "polygon" in haystack and "status 500" in haystack  # the failures are reported...
    for secret in (API_KEY, AV_KEY, SMTP_SECRET):  # ...without the credentials
        assert secret not in haystack


def ingestion_bars() -> pd.DataFrame:
    from magikarp_assets.core.market_data.sample import SampleSource

    return SampleSource("iex").fetch_ohlcv(
        TICKERS, pd.Timestamp("2016-06-14").date(), pd.Timestamp(DAY).date()
    )


def run(resources, instance, day):
    return dg.materialize(
        [ingestion.universe_constituents, ingestion.raw_ohlcv], resources=resources, instance=instance,
        partition_key=day, selection=[ingestion.RAW_OHLCV, ingestion.OHLCV_QUARANTINE], raise_on_error=False,
    )  # fmt: skip


def test_the_web_ui_listens_on_localhost_by_default():
    from dagster_webserver.cli import dagster_webserver

    makefile = (REPO / "Makefile").read_text()
    dev = re.search(r"^dev:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert dev and "dagster dev -h 127.0.0.1" in dev.group(1)
    assert "0.0.0.0" not in (REPO / "workspace.yaml").read_text()
    assert {p.name: p.default for p in dagster_webserver.params}["host"] == "127.0.0.1"
    compose = (REPO / "deploy" / "docker-compose.yaml").read_text()
    published = re.findall(r'^\s*-\s*"([^"]*:\d+:\d+)"', compose, re.MULTILINE)
    assert published and all(p.startswith("127.0.0.1:") for p in published)


# ---- the repository's secret scanner ---------------------------------------------------------------

PLANTED = {
    "aws-access-key-id": "AKIA" + "Q4ZT7N2XK5RB9WLM",
    "aws-secret-access-key": "wJalrXUtn" + "FEMI/K7MDENG" + "/bPxRfiCY" + "Q3ZK9T2VLM",
    "private-key": "-----BEGIN RSA " + "PRIVATE KEY-----",
    "password-in-url": "s3cr3t-Pa55" + "w0rd-91",
    "github-token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "slack-token": "xoxb-" + "1234567890-abcdefGHIJK",
    "stripe-live-key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "google-api-key": "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "secret-assignment": "Zr8-kq2P" + "x9Lw4Tn6",
}


def planted_files(folder: Path) -> dict[str, str]:
    lines = {
        "aws-access-key-id": f'aws_access_key_id = "{PLANTED["aws-access-key-id"]}"',
        "aws-secret-access-key": f'AWS_SECRET_ACCESS_KEY="{PLANTED["aws-secret-access-key"]}"',
        "private-key": PLANTED["private-key"],
        "password-in-url": f'DB = "postgresql://magikarp:{PLANTED["password-in-url"]}@db.internal:5432/x"',
        "github-token": f"token: {PLANTED['github-token']}",
        "slack-token": f"webhook {PLANTED['slack-token']}",
        "stripe-live-key": f"k = '{PLANTED['stripe-live-key']}'",
        "google-api-key": f"maps = '{PLANTED['google-api-key']}'",
        "secret-assignment": f'smtp_password = "{PLANTED["secret-assignment"]}"',
    }
    names = {}
    for rule, line in lines.items():
        name = f"{rule}.txt"
        (folder / name).write_text(f"# config\n{line}\n")
        names[rule] = name
    return names


def test_the_scanner_finds_each_planted_credential_without_printing_it(tmp_path, capsys):
    names = planted_files(tmp_path)
    innocent = [
        'password = os.environ["MAGIKARP_SMTP_PASSWORD"]',
        'smtp_password: str | None = Field(default=None, description="SMTP password (use EnvVar)")',
        'api_key = "${POLYGON_API_KEY}"',
        'SECRETS_ID_ENV = "MAGIKARP_SECRETS_ID"',
        'url = "postgresql://user:${PG_PASSWORD}@host/db"',
        'POINTER_KEY = "models/production.json"',
        'token = "<your token>"',
        'password = "changeme"',
        f'api_key = "{PLANTED["secret-assignment"]}"  # secret-scan: allow',
    ]
    (tmp_path / "innocent.py").write_text("\n".join(innocent) + "\n")
    findings = scan_secrets.scan_files(tmp_path, [*names.values(), "innocent.py"])
    assert sorted((f.path, f.rule) for f in findings) == sorted((n, r) for r, n in names.items())
    assert all(f.line == 2 for f in findings)

    assert (
        scan_secrets.main(["--root", str(tmp_path), "--allowlist", str(tmp_path / "none"), *names.values()])
        == 1
    )
    printed = capsys.readouterr().out
    assert printed.count("\n") == len(PLANTED)
    for value in PLANTED.values():
        if len(value) > 20:
            assert value not in printed  # only a prefix and a fingerprint are shown


def test_the_allowlist_needs_path_rule_and_fingerprint(tmp_path):
    names = planted_files(tmp_path)
    value = PLANTED["secret-assignment"]
    print_ = scan_secrets.fingerprint(value)
    (tmp_path / "allow.txt").write_text(
        f"# fixtures\n{names['secret-assignment']}  secret-assignment  {print_}\n"
        f"other.txt  *  {scan_secrets.fingerprint(PLANTED['github-token'])}\n"
    )
    allow = scan_secrets.read_allowlist(tmp_path / "allow.txt")
    rules = {f.rule for f in scan_secrets.scan_files(tmp_path, list(names.values()), allow)}
    assert rules == set(PLANTED) - {"secret-assignment"}  # github's entry names another file
    (tmp_path / names["secret-assignment"]).write_text('password = "' + "An0ther-" + 'Secr3t-v4lue"\n')
    assert [f.rule for f in scan_secrets.scan_files(tmp_path, [names["secret-assignment"]], allow)] == [
        "secret-assignment"
    ]  # a new value in an allowlisted file is still reported
    (tmp_path / "bad.txt").write_text("only-two fields\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 1"):
        scan_secrets.read_allowlist(tmp_path / "bad.txt")


def test_the_repository_is_clean():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "scan_secrets.py"), "--root", str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"0 finding\(s\) in \d+ file\(s\)", done.stderr)
