"""The notifier resource routes each level to its recipients over the configured transport (outbox, a real
STARTTLS SMTP server with an EnvVar password, moto SES), skips disabled levels, rejects bad configuration
clearly, and keeps failed mail pending until flush_pending succeeds."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.core.notify import DeliveryError, equity_curve_png, read_eml
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support_smtp import (
    SMTP_PASSWORD,
    SMTP_USER,
    Certificate,
    SmtpServer,
    free_port,
    run_smtp_server,
)

AS_OF = dt.date(2017, 2, 7)
SENDER = "bot@tmagikarp.test"
ROUTES = {
    "critical_recipients": ["oncall@tmagikarp.test"],
    "warning_recipients": ["data@tmagikarp.test"],
    "info_recipients": ["team@tmagikarp.test", "pm@tmagikarp.test"],
}
RECS = pd.DataFrame(
    {
        "ticker": ["AAPL", "MSFT", "JPM"],
        "action": ["BUY", "SELL", "HOLD"],
        "current_weight": [0.01, 0.04, 0.02],
        "target_weight": [0.03, 0.01, 0.02],
        "confidence": [0.91, 0.77, 0.4],
        "rank": [1, 2, 3],
        "price": [132.04, 63.43, 86.64],  # real closes on 2017-02-07 in the bundled sample
        "model_version": "ppo-test",
    }
)
PNG = equity_curve_png(["2017-02-06", "2017-02-07"], [100.0, 101.0], [100.0, 100.5])


def test_outbox_default_routes_levels_and_skips_disabled(tmp_path: Path) -> None:
    notifier = NotifierResource(
        outbox_dir=str(tmp_path), sender=SENDER, enabled_levels=["critical", "info"], **ROUTES
    )
    receipt = notifier.send_alert("critical", "Run failed: daily_job", {"step": "train"}, as_of=AS_OF)
    assert receipt is not None and receipt.transport == "outbox" and receipt.path is not None
    assert receipt.path.parent == tmp_path and receipt.path.name.startswith(
        "20170207-critical-run-failed-daily-job-"
    )
    stored = read_eml(receipt.path)
    assert (stored["From"], stored["To"]) == (SENDER, "oncall@tmagikarp.test")
    assert notifier.send_alert("warning", "Stale data", {"days": 3}, as_of=AS_OF) is None
    assert sorted(p.name for p in tmp_path.glob("*.eml")) == [receipt.path.name]
    assert list((tmp_path / "pending").glob("*.eml")) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"transport": "pigeon"}, "'pigeon' is not one of outbox, smtp, ses"),
        ({"transport": "smtp", **ROUTES}, "needs smtp_host"),
        (
            {"transport": "smtp", "smtp_host": "127.0.0.1"},
            r"recipients for enabled level\(s\) \['critical', 'info'",
        ),
        ({"enabled_levels": ["loud"]}, "'loud' is not one of critical, warning, info"),
    ],
)
def test_bad_configuration_is_named(config: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        NotifierResource(outbox_dir=str(tmp_path), **config).send_alert("critical", "x", {})


def test_assets_send_over_starttls_with_envvar_password(
    smtp_tls_server: SmtpServer,
    tls_certificate: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MAGIKARP_SMTP_PASSWORD", SMTP_PASSWORD)
    caplog.set_level(logging.DEBUG)

    @dg.asset
    def daily_email(notifier: NotifierResource) -> None:
        notifier.send_recommendations(
            RECS, {"value": 1_000_000.0, "daily_return": 0.01}, {"Equity": PNG}, AS_OF
        )
        notifier.send_alert("critical", "Model integrity check failed", {"model": "ppo-test"}, as_of=AS_OF)

    notifier = NotifierResource(
        transport="smtp",
        outbox_dir=str(tmp_path),
        smtp_host="127.0.0.1",
        smtp_port=smtp_tls_server.port,
        smtp_username=SMTP_USER,
        smtp_password=dg.EnvVar("MAGIKARP_SMTP_PASSWORD"),
        smtp_ca_file=str(tls_certificate.cert_file),
        sender=SENDER,
        **ROUTES,
    )
    result = dg.materialize([daily_email], resources={"notifier": notifier})
    assert result.success
    routed = [(m.message["Subject"], m.rcpt_tos, m.tls, m.authenticated) for m in smtp_tls_server.received]
    assert routed == [
        ("[TMagikarp INFO] Daily recommendations for 2017-02-07", ROUTES["info_recipients"], True, True),
        ("[TMagikarp CRITICAL] Model integrity check failed", ROUTES["critical_recipients"], True, True),
    ]
    events = "\n".join(str(event) for event in result.all_events)
    ours = "\n".join(caplog.handler.format(r) for r in caplog.records if not r.name.startswith("mail.log"))
    assert "via smtp to 127.0.0.1" in ours  # the resource did log its deliveries
    assert SMTP_PASSWORD not in events and SMTP_PASSWORD not in ours


def test_smtp_down_then_flush_pending(tls_certificate: Certificate, tmp_path: Path) -> None:
    port = free_port()
    notifier = NotifierResource(
        transport="smtp",
        outbox_dir=str(tmp_path),
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_timeout=5,
        smtp_ca_file=str(tls_certificate.cert_file),
        sender=SENDER,
        **ROUTES,
    )
    with pytest.raises(DeliveryError, match=f"smtp delivery to 127.0.0.1:{port} failed") as down:
        notifier.send_alert("warning", "Quarantine above threshold", {"rows": 12}, as_of=AS_OF)
    assert SMTP_PASSWORD not in str(down.value) and len(list((tmp_path / "pending").glob("*.eml"))) == 1
    with run_smtp_server(port, tls_certificate) as server:
        receipts = notifier.flush_pending()
    assert [r.subject for r in receipts] == ["[TMagikarp WARNING] Quarantine above threshold"]
    assert [m.rcpt_tos for m in server.received] == [ROUTES["warning_recipients"]]


def test_ses_transport_on_moto(s3_endpoint: str, tmp_path: Path) -> None:
    boto3.client("ses", endpoint_url=s3_endpoint, region_name="eu-west-1").verify_email_identity(
        EmailAddress=SENDER
    )
    ses = boto3.client("ses", endpoint_url=s3_endpoint, region_name="eu-west-1")
    before = ses.get_send_quota()["SentLast24Hours"]
    notifier = NotifierResource(
        transport="ses", ses_region="eu-west-1", ses_endpoint_url=s3_endpoint, outbox_dir=str(tmp_path),
        sender=SENDER, **ROUTES,
    )  # fmt: skip
    receipt = notifier.send_recommendations(RECS, {"value": 1_000_000.0}, {}, AS_OF)
    assert receipt is not None and receipt.transport == "ses" and receipt.message_id
    assert ses.get_send_quota()["SentLast24Hours"] == before + len(ROUTES["info_recipients"])
