"""Email delivery by outbox folder, SMTP or SES, through a durable queue that keeps undeliverable mail
pending until a later delivery succeeds."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.policy
import fcntl
import functools
import hashlib
import logging
import os
import smtplib
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from magikarp_assets.core.notify.render import DATE_HEADER, LEVEL_HEADER, TITLE_HEADER, redact, slug

log = logging.getLogger(__name__)


def _message_day(message: EmailMessage) -> str:
    if day := message.get(DATE_HEADER):
        return str(day).replace("-", "")
    with contextlib.suppress(TypeError, ValueError):
        return parsedate_to_datetime(str(message["Date"])).strftime("%Y%m%d")
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d")


def outbox_name(message: EmailMessage) -> str:
    """``{YYYYMMDD}-{level}-{slug}-{digest}.eml``: the same content always gets the same name (a rerun
    replaces its file), while two different alerts with the same title on one day do not collide.

    The digest is 8 hex chars of SHA-256 over the subject and the text/plain body.
    """
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    digest = hashlib.sha256(f"{message['Subject']}\n{text}".encode()).hexdigest()[:8]
    name = slug(str(message.get(TITLE_HEADER) or message.get("Subject") or ""))
    return f"{_message_day(message)}-{message.get(LEVEL_HEADER, 'info')}-{name}-{digest}.eml"


def write_eml(folder: Path, message: EmailMessage, name: str | None = None) -> Path:
    """Write ``message`` to ``folder/name`` atomically (temp file, fsync, os.replace): readers see the old
    file or the whole new one, never a partial one.

    :param name: file name; ``outbox_name(message)`` when None.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or outbox_name(message))
    descriptor, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(message.as_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path


def read_eml(path: Path) -> EmailMessage:
    """Parse an ``.eml`` file written by ``write_eml``."""
    return BytesParser(_class=EmailMessage, policy=email.policy.default).parsebytes(path.read_bytes())


@dataclass(frozen=True)
class DeliveryReceipt:
    """Proof of one delivery: the transport, where it went (folder, host:port or SES endpoint) and ids."""

    transport: str
    target: str
    subject: str
    recipients: tuple[str, ...]
    message_id: str
    path: Path | None = None


class DeliveryError(RuntimeError):
    """A delivery failed; names the transport, its target (never credentials) and the cause.

    ``permanent`` is True when retrying the same message cannot succeed (e.g. every recipient refused).
    """

    def __init__(
        self, transport: str, target: str, cause: str, *, permanent: bool = False, pending: Path | None = None
    ) -> None:
        kept = f"; kept as pending in {pending}" if pending else ""
        super().__init__(f"{transport} delivery to {target} failed: {cause}{kept}")
        self.transport, self.target, self.cause = transport, target, cause
        self.permanent, self.pending = permanent, pending

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes despite keyword-only fields
        rebuild = functools.partial(type(self), permanent=self.permanent, pending=self.pending)
        return (rebuild, (self.transport, self.target, self.cause))


class Transport(Protocol):
    """Anything that sends one message and returns a receipt or raises DeliveryError."""

    name: ClassVar[str]

    @property
    def target(self) -> str: ...

    def send(self, message: EmailMessage) -> DeliveryReceipt: ...


def _receipt(via: Transport, message: EmailMessage, msg_id: str, path: Path | None = None) -> DeliveryReceipt:
    to = tuple(addr for _, addr in getaddresses(message.get_all("To", []) + message.get_all("Cc", [])))
    return DeliveryReceipt(via.name, via.target, str(message["Subject"]), to, msg_id, path)


@dataclass
class OutboxTransport:
    """Writes each message as an ``.eml`` file into ``folder`` (the default: nothing leaves the machine)."""

    folder: Path
    name: ClassVar[str] = "outbox"

    @property
    def target(self) -> str:
        return str(self.folder)

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        try:
            path = write_eml(Path(self.folder), message)
        except OSError as exc:
            raise DeliveryError(self.name, self.target, f"{type(exc).__name__}: {exc}") from None
        return _receipt(self, message, str(message["Message-ID"]), path)


def _smtp_cause(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        reply = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        return f"{type(exc).__name__}: {exc.smtp_code} {reply}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class SmtpTransport:
    """SMTP submission, STARTTLS (verified against the system CAs or ``ca_file``) then login when a
    username is set. The password is never put in a repr, log line or exception."""

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    timeout: float = 30.0
    ca_file: str | None = None
    name: ClassVar[str] = "smtp"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            # Built here, raised below: the original exception (which may quote the server's reply to the
            # credentials) must not ride along as __context__.
            secrets = [self.password, f"\0{self.username}\0{self.password}"] if self.password else []
            permanent = isinstance(exc, smtplib.SMTPRecipientsRefused)
            cause = redact(_smtp_cause(exc), secrets)
            error = DeliveryError(self.name, self.target, cause, permanent=permanent)
        else:
            if refused:
                log.warning("smtp %s refused %s for %r", self.target, sorted(refused), message["Subject"])
            return _receipt(self, message, str(message["Message-ID"]))
        raise error


def _aws_secrets() -> list[str | None]:
    return [os.environ.get(name) for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]


@dataclass
class SesTransport:
    """Amazon SES ``send_raw_email`` (credentials from the default AWS chain); ``source`` must be verified."""

    region: str
    source: str
    endpoint_url: str | None = None
    name: ClassVar[str] = "ses"
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def target(self) -> str:
        return self.endpoint_url or f"email.{self.region}.amazonaws.com"

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        import boto3  # deferred: only SES deployments pay for the import
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self._client is None:
                self._client = boto3.client("ses", region_name=self.region, endpoint_url=self.endpoint_url)
            raw = {"Data": message.as_bytes()}
            response = self._client.send_raw_email(Source=self.source, RawMessage=raw)
        except (BotoCoreError, ClientError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            cause = redact(f"{type(exc).__name__}: {exc}", _aws_secrets())
            error = DeliveryError(self.name, self.target, cause, permanent=code == "InvalidParameterValue")
        else:
            return _receipt(self, message, response["MessageId"])
        raise error


class DeliveryQueue:
    """Delivers through a transport, in order, with a durable queue in ``outbox_dir/pending``.

    Every message is first written to ``pending/``; it leaves only once the transport accepted it. A
    transient failure keeps it (and everything after it) pending for the next ``deliver``/``flush_pending``
    call; a permanent rejection moves it to ``failed/`` so it cannot block the queue. A file lock stops
    two processes from sending the same pending message.
    """

    def __init__(self, transport: Transport, outbox_dir: Path | str) -> None:
        self.transport = transport
        self.pending_dir = Path(outbox_dir) / "pending"
        self.failed_dir = Path(outbox_dir) / "failed"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        with open(self.pending_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def pending(self) -> list[Path]:
        """Pending messages, oldest first."""
        return sorted(self.pending_dir.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def deliver(self, message: EmailMessage) -> DeliveryReceipt:
        """Send ``message`` after any older pending ones.

        :raises DeliveryError: when it was not delivered; ``pending`` names its file unless permanent.
        """
        name = outbox_name(message)
        with self._locked():
            write_eml(self.pending_dir, message, name)
            try:
                receipts, rejected = self._flush()
            except DeliveryError as exc:
                kept = self.pending_dir / name
                raise DeliveryError(exc.transport, exc.target, exc.cause, pending=kept) from None
        if name in rejected:
            raise rejected[name]
        return receipts[name]

    def flush_pending(self) -> list[DeliveryReceipt]:
        """Retry every pending message, oldest first; permanent rejections move to ``failed/``.

        :raises DeliveryError: at the first transient failure; that message and later ones stay pending.
        """
        with self._locked():
            receipts, _ = self._flush()
        return list(receipts.values())

    def _flush(self) -> tuple[dict[str, DeliveryReceipt], dict[str, DeliveryError]]:
        receipts: dict[str, DeliveryReceipt] = {}
        rejected: dict[str, DeliveryError] = {}
        for path in self.pending():
            try:
                receipts[path.name] = self.transport.send(read_eml(path))
            except DeliveryError as exc:
                if not exc.permanent:
                    kept = self.pending_dir
                    raise DeliveryError(exc.transport, exc.target, exc.cause, pending=kept) from None
                self.failed_dir.mkdir(parents=True, exist_ok=True)
                os.replace(path, self.failed_dir / path.name)
                log.error("rejected for good, moved %s to %s: %s", path.name, self.failed_dir, exc)
                rejected[path.name] = exc
                continue
            path.unlink()
            log.info("%s delivered %s to %s", self.transport.name, path.name, self.transport.target)
        return receipts, rejected
