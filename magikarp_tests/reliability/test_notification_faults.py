"""Notification faults: the SMTP server is down when the daily email is sent. The
recommendations stay stored, the email waits in the outbox's pending folder, an alarm goes out through the
channels that remain (run log and a local critical alert), and the next run delivers the mail first."""

import dagster as dg
import pandas as pd
import pytest

from magikarp_assets.core.notify import DeliveryError, read_eml
from magikarp_assets.core.storage import LocalBlobStore, frame_to_parquet_bytes
from magikarp_assets.defs.partitions import trading_day_partitions
from magikarp_assets.defs.signals import assets as signals
from magikarp_assets.resources.io_manager import PartitionedParquetIOManager
from magikarp_assets.resources.notifier import NotifierResource
from magikarp_tests.support.world import alert_run_failure
from magikarp_tests.support_smtp import SMTP_PASSWORD, SMTP_USER, free_port, run_smtp_server

DAYS = ["2016-06-01", "2016-06-02"]
RECOMMENDATIONS = dg.AssetSpec(signals.DAILY_RECOMMENDATIONS, partitions_def=trading_day_partitions)
TEAM = "team@tmagikarp.test"


@dg.asset(partitions_def=trading_day_partitions, ins={"recs": dg.AssetIn(signals.DAILY_RECOMMENDATIONS)})
def recommendation_email(
    context: dg.AssetExecutionContext, notifier: NotifierResource, recs: pd.DataFrame
) -> dg.MaterializeResult:
    """Stands in for daily_report's email step (the same notifier call; the real asset's own pending-mail
    test is test_signals_assets.py::test_daily_report_email_lands_in_the_outbox_or_stays_pending)."""
    as_of = pd.Timestamp(context.partition_key).date()
    receipt = notifier.send_recommendations(recs, {"portfolio_value": 100_000.0}, {}, as_of)
    return dg.MaterializeResult(metadata={"sent": receipt is not None})


def _store_day(store: LocalBlobStore, day: str) -> None:
    """The session's stored recommendations (as the trading asset writes them)."""
    recs = pd.DataFrame(
        {
            "date": pd.Timestamp(day),
            "ticker": ["AAPL", "MSFT", "XOM"],
            "action": ["BUY", "SELL", "HOLD"],
            "current_weight": [0.10, 0.20, 0.05],
            "target_weight": [0.15, 0.10, 0.05],
            "confidence": [0.8, 0.7, 0.1],
            "rank": [1, 2, 3],
            "price": [97.1, 51.2, 86.3],
            "model_version": "ppo-v1",
        }
    )
    store.put_bytes(f"daily_recommendations/{day}.parquet", frame_to_parquet_bytes(recs))


@pytest.fixture
def world(tmp_path, tls_certificate):
    store = LocalBlobStore(tmp_path / "store")
    for day in DAYS:
        _store_day(store, day)
    port = free_port()
    notifier = NotifierResource(
        transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD, smtp_ca_file=str(tls_certificate.cert_file), smtp_timeout=5.0,
        outbox_dir=str(tmp_path / "outbox"), critical_recipients=["oncall@tmagikarp.test"],
        warning_recipients=[TEAM], info_recipients=[TEAM],
    )  # fmt: skip
    resources = {
        "io_manager": PartitionedParquetIOManager(backend="local", root=str(tmp_path / "store")),
        "notifier": notifier,
    }
    return resources, dg.DagsterInstance.ephemeral(), tmp_path, port


def _report(world, day: str):
    resources, instance, _, _ = world
    return dg.materialize(
        [RECOMMENDATIONS, recommendation_email],
        resources=resources,
        instance=instance,
        partition_key=day,
        selection=[recommendation_email],
        raise_on_error=False,
    )


def _logs(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(
        f"{e.user_message} {e.dagster_event.event_specific_data if e.dagster_event else ''}"
        for e in instance.all_logs(run_id)
    )


def test_smtp_down_keeps_recommendations_and_pending_mail_alarms_and_delivers_on_the_next_run(
    world, tls_certificate
):
    resources, instance, root, port = world
    recs_file = root / "store" / "daily_recommendations" / f"{DAYS[0]}.parquet"
    recs_before = recs_file.read_bytes()

    failed = _report(world, DAYS[0])  # nothing listens on the SMTP port
    assert not failed.success
    assert recs_file.read_bytes() == recs_before  # the recommendations are untouched
    pending = sorted((root / "outbox" / "pending").glob("*.eml"))
    assert [read_eml(p)["Subject"].strip() for p in pending] == [
        f"[TMagikarp INFO] Daily recommendations for {DAYS[0]}"
    ]
    # The alarm, through the channels that remain: the run's log and a critical alert on local disk.
    log = _logs(instance, failed.run_id)
    assert f"could not deliver '[TMagikarp INFO] Daily recommendations for {DAYS[0]}' via smtp" in log
    assert "pending (retried on the next send)" in log
    (alarm_path,) = (root / "outbox" / "alarms").glob("*.eml")
    alarm = read_eml(alarm_path)
    assert alarm["Subject"].strip() == "[TMagikarp CRITICAL] Email delivery failed via smtp"
    assert f"127.0.0.1:{port}" in alarm.get_body(("plain",)).get_content()

    # The run failure sensor tries to mail on-call too: that also stays pending, and the tick fails loudly.
    with pytest.raises(DeliveryError, match=rf"smtp delivery to 127.0.0.1:{port} failed"):
        alert_run_failure(failed, instance, resources["notifier"])
    assert len(list((root / "outbox" / "pending").glob("*.eml"))) == 2

    with run_smtp_server(port=port, certificate=tls_certificate) as server:  # SMTP is back
        assert _report(world, DAYS[1]).success
    subjects = [m.message["Subject"].strip() for m in server.received]
    assert subjects == [
        f"[TMagikarp INFO] Daily recommendations for {DAYS[0]}",  # the pending mail goes first, in order
        "[TMagikarp CRITICAL] Run failed: __ephemeral_asset_job__ for 2016-06-01",
        f"[TMagikarp INFO] Daily recommendations for {DAYS[1]}",
    ]
    assert all(m.tls and m.authenticated for m in server.received)
    assert list((root / "outbox" / "pending").glob("*.eml")) == []

    # The password never reached a log line, a stored message or the alarm.
    everything = _logs(instance, failed.run_id) + "".join(
        p.read_text(errors="replace") for p in (root / "outbox").rglob("*.eml")
    )
    assert SMTP_PASSWORD not in everything
