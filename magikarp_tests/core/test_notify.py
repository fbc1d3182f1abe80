"""Notification emails are built correctly (MIME structure, inline charts, top BUY/SELL tables) and reach a
real SMTP server over STARTTLS with AUTH LOGIN, moto's SES, or the outbox folder; failed deliveries wait in
pending/ until a retry succeeds, and secrets never show up in errors, logs or files."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import pickle
import re
import traceback
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from magikarp_assets.core.notify import (
    DeliveryError,
    DeliveryQueue,
    OutboxTransport,
    SesTransport,
    SmtpTransport,
    address,
    build_alert_email,
    build_recommendation_email,
    equity_curve_png,
    outbox_name,
    subject_for,
    weights_bar_png,
    write_eml,
)
from magikarp_tests.support_smtp import (
    SMTP_PASSWORD,
    SMTP_USER,
    Certificate,
    SmtpServer,
    free_port,
    run_smtp_server,
)

SAMPLE = Path(__file__).resolve().parents[2] / "magikarp_assets" / "data" / "sample"
AS_OF = dt.date(2017, 2, 7)  # last day of the bundled real sample
SENDER, TEAM = "bot@tmagikarp.test", ["team@tmagikarp.test", "pm@tmagikarp.test"]


@pytest.fixture(scope="module")
def recs() -> pd.DataFrame:
    """60 real tickers with their real close on AS_OF; actions and confidences from a fixed seed."""
    prices = pd.read_parquet(
        SAMPLE / "sp500_prices_5yr.parquet", filters=[("date", "==", pd.Timestamp(AS_OF))]
    )
    prices = prices.sort_values("ticker").head(60).reset_index(drop=True)
    rng = np.random.default_rng(7)
    current = rng.uniform(0, 0.04, len(prices))
    target = np.clip(current + rng.normal(0, 0.02, len(prices)), 0, None)
    return pd.DataFrame(
        {
            "ticker": prices["ticker"],
            "action": np.where(
                target > current + 0.005, "BUY", np.where(target < current - 0.005, "SELL", "HOLD")
            ),
            "current_weight": current,
            "target_weight": target,
            "confidence": rng.uniform(0, 1, len(prices)),
            "rank": np.arange(1, len(prices) + 1),
            "price": prices["close"],
            "model_version": "ppo-2017.02.06",
        }
    )


@pytest.fixture(scope="module")
def charts(recs: pd.DataFrame) -> dict[str, bytes]:
    """Equity curve from the real SPY (as the portfolio) and QQQ closes, and the weights chart."""
    bench = pd.read_parquet(SAMPLE / "benchmarks_daily.parquet", filters=[("ticker", "in", ["SPY", "QQQ"])])
    bench = bench[(bench["date"] >= "2016-08-01") & (bench["date"] <= pd.Timestamp(AS_OF))]
    wide = bench.pivot(index="date", columns="ticker", values="adj_close")
    return {
        "Equity curve vs QQQ": equity_curve_png(wide.index, wide["SPY"] * 4000, wide["QQQ"]),
        "Weights": weights_bar_png(recs["ticker"], recs["current_weight"], recs["target_weight"]),
    }


SUMMARY = {"value": 1_012_345.67, "cash": 20_000.0, "daily_return": 0.0042, "vs_QQQ": -0.0011}


def expected_top(recs: pd.DataFrame, action: str) -> list[str]:
    chosen = recs[recs["action"] == action].sort_values("confidence", ascending=False)
    return chosen["ticker"].head(10).tolist()


class _Tables(HTMLParser):
    """Rows of cell texts per table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return {name: [row for row in rows if row] for name, rows in parser.tables.items()}


def check_recommendation_message(message: EmailMessage, recs: pd.DataFrame, charts: dict[str, bytes]) -> None:
    """Structure: alternative(text/plain, related(text/html, PNGs)); every PNG is referenced by cid."""
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    html = html_part.get_content()
    assert sorted(image.get_payload(decode=True) for image in images) == sorted(charts.values())
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content_disposition() == "inline"
        assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html
    tables = html_tables(html)
    assert [row[1] for row in tables["top-buy"]] == expected_top(recs, "BUY")
    assert [row[1] for row in tables["top-sell"]] == expected_top(recs, "SELL")
    assert dict(tables["portfolio-summary"]) == {
        "Value": "$1,012,345.67", "Cash": "$20,000.00", "Daily return": "+0.42%", "Vs QQQ": "-0.11%",
    }  # fmt: skip
    text = plain.get_content()
    for ticker in expected_top(recs, "BUY") + expected_top(recs, "SELL"):
        assert re.search(rf"^\s+\d+\s+{re.escape(ticker)}\s", text, re.MULTILINE), ticker
    assert message["Subject"] == "[TMagikarp INFO] Daily recommendations for 2017-02-07"


def test_subject_prefix_by_level() -> None:
    assert subject_for("critical", "Run failed") == "[TMagikarp CRITICAL] Run failed"
    assert subject_for("WARNING", "Stale\ndata") == "[TMagikarp WARNING] Stale data"
    with pytest.raises(ValueError, match="'urgent' is not one of critical, warning, info"):
        subject_for("urgent", "x")


def test_recommendation_email_structure(recs: pd.DataFrame, charts: dict[str, bytes]) -> None:
    assert (recs["action"] == "BUY").sum() > 10 and (recs["action"] == "SELL").sum() > 10  # tables are capped
    check_recommendation_message(build_recommendation_email(recs, SUMMARY, charts, AS_OF), recs, charts)


def test_recommendation_input_errors_name_the_problem(recs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"2017-02-07 lack \['confidence'\]"):
        build_recommendation_email(recs.drop(columns="confidence"), SUMMARY, {}, AS_OF)
    with pytest.raises(ValueError, match="chart 'Weights' for 2017-02-07 is not PNG data"):
        build_recommendation_email(recs, SUMMARY, {"Weights": b"GIF89a"}, AS_OF)


def test_alert_escapes_html_and_masks_secret_fields() -> None:
    details = {"ticker": "<AAPL>", "api_key": "k-123", "note": "pw=hunter2"}
    message = build_alert_email(
        "warning", "Check ohlcv_coverage failed", details, "http://dagster.local/runs/abc", AS_OF, ["hunter2"]
    )
    html = message.get_body(("html",)).get_content()
    assert "&lt;AAPL&gt;" in html and "<AAPL>" not in html
    assert dict(html_tables(html)["alert-details"]) == {
        "ticker": "<AAPL>",
        "api_key": "***",
        "note": "pw=***",
    }
    assert "k-123" not in message.as_string() and "hunter2" not in message.as_string()
    assert message["Subject"] == "[TMagikarp WARNING] Check ohlcv_coverage failed"
    assert "Run: http://dagster.local/runs/abc" in message.get_body(("plain",)).get_content()


def test_recommendations_over_starttls_with_login(
    smtp_tls_server: SmtpServer,
    tls_certificate: Certificate,
    recs: pd.DataFrame,
    charts: dict[str, bytes],
    tmp_path: Path,
) -> None:
    transport = SmtpTransport(
        "127.0.0.1", smtp_tls_server.port, SMTP_USER, SMTP_PASSWORD, ca_file=str(tls_certificate.cert_file)
    )
    message = address(build_recommendation_email(recs, SUMMARY, charts, AS_OF), SENDER, TEAM)
    receipt = DeliveryQueue(transport, tmp_path).deliver(message)
    assert (receipt.transport, receipt.target, receipt.recipients) == (
        "smtp", f"127.0.0.1:{smtp_tls_server.port}", tuple(TEAM),
    )  # fmt: skip
    assert smtp_tls_server.auth_attempts == [("LOGIN", SMTP_USER, True)]
    [received] = smtp_tls_server.received
    assert received.tls and received.authenticated and received.rcpt_tos == TEAM
    check_recommendation_message(received.message, recs, charts)
    assert not list((tmp_path / "pending").glob("*.eml"))


def test_credentials_never_sent_without_tls(smtp_tls_server: SmtpServer, tmp_path: Path) -> None:
    transport = SmtpTransport("127.0.0.1", smtp_tls_server.port, SMTP_USER, SMTP_PASSWORD, starttls=False)
    with pytest.raises(DeliveryError, match="SMTP AUTH extension not supported"):
        transport.send(address(build_alert_email("info", "hello", {}, as_of=AS_OF), SENDER, TEAM))
    assert smtp_tls_server.auth_attempts == [] and smtp_tls_server.received == []


def test_outbox_deterministic_name_and_atomic_write(tmp_path: Path) -> None:
    def alert(ticker: str) -> EmailMessage:
        return build_alert_email("warning", "Stale data: prices", {"ticker": ticker}, as_of=AS_OF)

    outbox = OutboxTransport(tmp_path)
    first, again, other = outbox.send(alert("AAPL")), outbox.send(alert("AAPL")), outbox.send(alert("MSFT"))
    assert first.path == again.path != other.path  # same content, same file; a rerun replaces it
    assert re.fullmatch(r"20170207-warning-stale-data-prices-[0-9a-f]{8}\.eml", first.path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, other.path.name])

    class BrokenMidWrite(EmailMessage):
        def as_bytes(self, *args: Any, **kwargs: Any) -> bytes:
            raise OSError("disk full while serialising")

    before = first.path.read_bytes()
    broken = BrokenMidWrite()
    for key, value in alert("AAPL").items():
        broken[key] = value
    with pytest.raises(OSError, match="disk full"):
        write_eml(tmp_path, broken, first.path.name)
    assert first.path.read_bytes() == before  # the old file is intact, no temp file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, other.path.name])


def test_smtp_down_keeps_pending_then_next_call_delivers(
    tls_certificate: Certificate, tmp_path: Path
) -> None:
    port = free_port()
    transport = SmtpTransport(
        "127.0.0.1", port, SMTP_USER, SMTP_PASSWORD, timeout=5, ca_file=str(tls_certificate.cert_file)
    )
    queue = DeliveryQueue(transport, tmp_path)
    messages = [
        address(build_alert_email("critical", f"Run {n} failed", {}, as_of=AS_OF), SENDER, TEAM)
        for n in "ABC"
    ]

    with pytest.raises(DeliveryError) as down:
        queue.deliver(messages[0])
    assert f"smtp delivery to 127.0.0.1:{port} failed: ConnectionRefusedError" in str(down.value)
    assert down.value.pending == tmp_path / "pending" / outbox_name(messages[0])
    assert down.value.pending.exists() and SMTP_PASSWORD not in str(down.value)
    assert str(pickle.loads(pickle.dumps(down.value))) == str(down.value)  # survives a process boundary

    with run_smtp_server(port, tls_certificate) as server:
        assert [r.subject for r in queue.flush_pending()] == [messages[0]["Subject"]]
    with pytest.raises(DeliveryError):
        queue.deliver(messages[1])  # down again
    with run_smtp_server(port, tls_certificate) as server:
        queue.deliver(messages[2])  # delivers the pending B first, then C
    assert [m.message["Subject"] for m in server.received] == [messages[1]["Subject"], messages[2]["Subject"]]
    assert queue.pending() == [] and queue.flush_pending() == []


def test_permanent_rejection_moves_to_failed_and_does_not_block(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server.reject.add("ghost@tmagikarp.test")
    queue = DeliveryQueue(SmtpTransport("127.0.0.1", smtp_server.port, starttls=False), tmp_path)
    doomed = address(
        build_alert_email("warning", "to nobody", {}, as_of=AS_OF), SENDER, ["ghost@tmagikarp.test"]
    )
    with pytest.raises(DeliveryError, match="SMTPRecipientsRefused") as rejected:
        queue.deliver(doomed)
    assert rejected.value.permanent
    assert [p.name for p in (tmp_path / "failed").iterdir()] == [outbox_name(doomed)]
    queue.deliver(address(build_alert_email("warning", "to the team", {}, as_of=AS_OF), SENDER, TEAM))
    assert [m.message["Subject"] for m in smtp_server.received] == ["[TMagikarp WARNING] to the team"]


def test_ses_send_raw_email_on_moto(
    s3_endpoint: str, recs: pd.DataFrame, charts: dict[str, bytes], tmp_path: Path
) -> None:
    ses = boto3.client("ses", endpoint_url=s3_endpoint, region_name="us-east-1")
    backend = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    queue = DeliveryQueue(SesTransport("us-east-1", SENDER, endpoint_url=s3_endpoint), tmp_path)
    message = address(build_recommendation_email(recs, SUMMARY, charts, AS_OF), SENDER, TEAM)

    with pytest.raises(
        DeliveryError, match=f"ses delivery to {s3_endpoint} failed: .*MessageRejected"
    ) as refused:
        queue.deliver(message)  # sender identity not verified yet
    assert refused.value.pending is not None and refused.value.pending.exists()

    ses.verify_email_identity(EmailAddress=SENDER)
    sent_before, stored_before = ses.get_send_quota()["SentLast24Hours"], len(backend.sent_messages)
    receipt = queue.flush_pending()[0]
    assert ses.get_send_quota()["SentLast24Hours"] == sent_before + len(TEAM)
    assert len(backend.sent_messages) == stored_before + 1
    stored = backend.sent_messages[-1]
    assert stored.id == receipt.message_id and stored.source == SENDER
    check_recommendation_message(
        email.message_from_string(stored.raw_data, policy=email.policy.default), recs, charts
    )
    assert queue.pending() == []


def test_no_secret_in_errors_logs_or_files(
    tls_certificate: Certificate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca = str(tls_certificate.cert_file)
    alert = build_alert_email(
        "critical", "Model integrity", {"note": f"pw {SMTP_PASSWORD}"}, secrets=[SMTP_PASSWORD]
    )
    errors: list[DeliveryError] = []
    with run_smtp_server(certificate=tls_certificate) as server:
        server.echo_credentials = True  # the server quotes the password back in its 535 reply
        wrong = SmtpTransport("127.0.0.1", server.port, SMTP_USER, SMTP_PASSWORD + "x", ca_file=ca)
        queue = DeliveryQueue(wrong, tmp_path)
        with pytest.raises(DeliveryError) as auth_failed:
            queue.deliver(address(alert, SENDER, TEAM))
        errors.append(auth_failed.value)
    assert "535 5.7.8 bad credentials magikarp-bot:***" in str(auth_failed.value)
    down = SmtpTransport("127.0.0.1", free_port(), SMTP_USER, SMTP_PASSWORD, timeout=5, ca_file=ca)
    with pytest.raises(DeliveryError) as refused:
        DeliveryQueue(down, tmp_path).flush_pending()
    errors.append(refused.value)

    # Everything this process logged; "mail.log" is the (deliberately leaky) test server's own logger.
    ours = "\n".join(caplog.handler.format(r) for r in caplog.records if not r.name.startswith("mail.log"))
    texts = [ours, repr(wrong), repr(down)]
    texts += ["".join(traceback.format_exception(error)) + repr(error) for error in errors]
    texts += [path.read_text() for path in tmp_path.rglob("*.eml")]
    assert len(texts) == 6 and all(texts[3:])
    for text in texts:
        assert SMTP_PASSWORD not in text
    for error in errors:  # no smtplib/socket exception (which could quote the server) rides along
        chained: BaseException | None = error
        while chained is not None:
            assert isinstance(chained, DeliveryError) and chained.__cause__ is None
            chained = chained.__context__
