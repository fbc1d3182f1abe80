"""Notifier resource: sends the daily recommendations and operator alerts to the right people by the
configured channel (outbox folder by default, SMTP or Amazon SES)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.notify import (
    LEVEL_HEADER,
    DeliveryError,
    DeliveryQueue,
    DeliveryReceipt,
    Level,
    OutboxTransport,
    SesTransport,
    SmtpTransport,
    Transport,
    address,
    build_alert_email,
    build_recommendation_email,
    parse_level,
)
from magikarp_assets.resources.io_manager import default_data_root

TRANSPORTS = ("outbox", "smtp", "ses")


class NotifierResource(dg.ConfigurableResource):
    """Email by level: critical (run failures, model integrity), warning (data checks, stale data) and
    info (daily recommendations, monthly performance), each with its own recipients.

    Every message passes through ``<outbox_dir>/pending`` and stays there if the transport fails; the next
    send (or ``flush_pending``) retries it. A failed delivery also raises an alarm through the channels that
    remain: an ERROR log line and a critical alert in ``alarm_dir`` (local disk). Pass ``smtp_password`` as
    ``dg.EnvVar``: it never appears in a message, a log line or an error.
    """

    transport: str = Field(default="outbox", description="outbox | smtp | ses")
    outbox_dir: str | None = Field(default=None, description="Outbox folder; default <data root>/outbox")
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, description="SMTP password (use EnvVar)")
    smtp_starttls: bool = True
    smtp_timeout: float = 30.0
    smtp_ca_file: str | None = Field(default=None, description="CA bundle for a private SMTP certificate")
    ses_region: str = "us-east-1"
    ses_endpoint_url: str | None = None
    sender: str = "tmagikarp@localhost"
    critical_recipients: list[str] = Field(default_factory=list)
    warning_recipients: list[str] = Field(default_factory=list)
    info_recipients: list[str] = Field(default_factory=list)
    enabled_levels: list[str] = Field(default_factory=lambda: [level.value for level in Level])
    alarm_dir: str | None = Field(
        default=None,
        description="Local folder that receives a critical alert when mail cannot be delivered; default "
        "<outbox_dir>/alarms",
    )

    def outbox_path(self) -> Path:
        return Path(self.outbox_dir or Path(default_data_root()) / "outbox")

    def alarm_path(self) -> Path:
        return Path(self.alarm_dir) if self.alarm_dir else self.outbox_path() / "alarms"

    def _secrets(self) -> list[str | None]:
        return [
            self.smtp_password,
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            os.environ.get("AWS_SESSION_TOKEN"),
        ]

    def _raise_alarm(self, message: EmailMessage, error: DeliveryError) -> None:
        """The remaining channels when mail is down: an ERROR in the run's log (the Dagster UI, CloudWatch in
        the cloud) and a critical alert written to the local alarm folder. Never raises: the delivery
        error is what the caller must see."""
        details = {
            "undelivered": str(message["Subject"]),
            "transport": error.transport,
            "target": error.target,
            "cause": error.cause,
            "kept": "pending (retried on the next send)" if not error.permanent else "failed/ (permanent)",
        }
        logger = dg.get_dagster_logger()
        try:
            alarm = build_alert_email(
                "critical", f"Email delivery failed via {error.transport}", details, secrets=self._secrets()
            )
            where = OutboxTransport(self.alarm_path()).send(alarm).path
        except (DeliveryError, OSError) as alarm_error:
            where = f"nowhere ({alarm_error})"
        logger.error(
            f"notifier: could not deliver {message['Subject']!r} via {error.transport} to {error.target}: "
            f"{error.cause}; {details['kept']}; critical alert written to {where}"
        )

    def recipients_for(self, level: str) -> list[str]:
        """The configured recipients of ``level``."""
        return list(getattr(self, f"{parse_level(level).value}_recipients"))

    def _enabled(self) -> set[Level]:
        return {parse_level(level) for level in self.enabled_levels}

    def _transport(self) -> Transport:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"notifier transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        if self.transport == "outbox":
            return OutboxTransport(self.outbox_path())
        unaddressed = sorted(level.value for level in self._enabled() if not self.recipients_for(level))
        if unaddressed:
            raise ValueError(
                f"notifier transport {self.transport!r} needs recipients for enabled level(s) {unaddressed}: "
                "set <level>_recipients or remove the level from enabled_levels"
            )
        if self.transport == "ses":
            return SesTransport(
                region=self.ses_region, source=self.sender, endpoint_url=self.ses_endpoint_url
            )
        if not self.smtp_host:
            raise ValueError("notifier transport 'smtp' needs smtp_host")
        return SmtpTransport(
            host=self.smtp_host,
            port=self.smtp_port,
            username=self.smtp_username,
            password=self.smtp_password,
            starttls=self.smtp_starttls,
            timeout=self.smtp_timeout,
            ca_file=self.smtp_ca_file,
        )

    def _queue(self) -> DeliveryQueue:
        return DeliveryQueue(self._transport(), self.outbox_path())

    def send(self, message: EmailMessage) -> DeliveryReceipt | None:
        """Address a built message to its level's recipients and deliver it.

        :return: the receipt, or None when the message's level is not enabled.
        :raises DeliveryError: when delivery failed (the message stays pending for the next call).
        """
        level = parse_level(str(message.get(LEVEL_HEADER, Level.INFO)))
        if level not in self._enabled():
            dg.get_dagster_logger().info(
                f"notifier: level {level.value} disabled, not sending {message['Subject']!r}"
            )
            return None
        queue = self._queue()
        try:
            receipt = queue.deliver(address(message, self.sender, self.recipients_for(level)))
        except DeliveryError as error:
            if self.transport != "outbox":
                self._raise_alarm(message, error)
            raise
        dg.get_dagster_logger().info(
            f"notifier: sent {receipt.subject!r} via {receipt.transport} to {receipt.target} "
            f"({len(receipt.recipients)} recipient(s))"
        )
        return receipt

    def send_recommendations(
        self,
        recs: pd.DataFrame,
        portfolio_summary: Mapping[str, Any],
        charts: Mapping[str, bytes],
        as_of: dt.date,
    ) -> DeliveryReceipt | None:
        """Send the daily recommendation email (level info); see ``build_recommendation_email``."""
        return self.send(build_recommendation_email(recs, portfolio_summary, charts, as_of))

    def send_alert(
        self,
        level: str,
        title: str,
        details: Mapping[str, Any],
        run_url: str | None = None,
        as_of: dt.date | None = None,
    ) -> DeliveryReceipt | None:
        """Send an alert; the configured secrets are masked if they appear in ``details``."""
        return self.send(
            build_alert_email(level, title, details, run_url=run_url, as_of=as_of, secrets=self._secrets())
        )

    def flush_pending(self) -> list[DeliveryReceipt]:
        """Retry mail left pending by earlier failures; raises DeliveryError if the transport still fails."""
        return self._queue().flush_pending()
