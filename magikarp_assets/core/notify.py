"""Operator email: the daily recommendation and alert messages, delivered by outbox, SMTP or SES, with
undeliverable mail kept as pending until a later delivery succeeds."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.policy
import fcntl
import functools
import hashlib
import io
import logging
import os
import re
import smtplib
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jinja2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RECOMMENDATION_COLUMNS = (
    "ticker", "action", "current_weight", "target_weight", "confidence", "rank", "price", "model_version",
)  # fmt: skip
TABLE_COLUMNS = ("rank", "ticker", "current", "target", "change", "confidence", "price")
TOP_N = 10
LEVEL_HEADER, DATE_HEADER, TITLE_HEADER = "X-TMagikarp-Level", "X-TMagikarp-Date", "X-TMagikarp-Title"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.IGNORECASE)
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"], default=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Level(StrEnum):
    """critical: run failures, model integrity; warning: failed or quarantining data checks, stale data;
    info: daily recommendations, monthly performance."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


_COLOURS = {Level.CRITICAL: "#b42318", Level.WARNING: "#b54708", Level.INFO: "#1f6feb"}


def parse_level(value: str) -> Level:
    """The level named by ``value`` (case-insensitive).

    :param value: critical, warning or info.
    :raises ValueError: naming the value and the allowed levels.
    """
    try:
        return Level(str(value).lower())
    except ValueError:
        raise ValueError(f"notification level {value!r} is not one of {', '.join(Level)}") from None


def subject_for(level: str, title: str) -> str:
    """The subject line, e.g. ``[TMagikarp CRITICAL] Run failed``.

    :param level: the notification level.
    :param title: the human title (whitespace is collapsed so it cannot break the header).
    """
    return f"[TMagikarp {parse_level(level).upper()}] {' '.join(title.split())}"


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every non-empty secret, and its base64 form, replaced by ``***``.

    :param text: any message, e.g. an exception's text.
    :param secrets: values that must never appear (passwords, AWS keys).
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            text = text.replace(form, "***")
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "message"


def _pct(value: Any, signed: bool = False) -> str:
    return "n/a" if pd.isna(value) else f"{value:+.2%}" if signed else f"{value:.2%}"


def _money(value: Any) -> str:
    return "n/a" if pd.isna(value) else f"${value:,.2f}"


def _summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labels and formatted values: keys naming a return, ``vs`` or drawdown are signed percentages,
    keys naming a value, cash or equity are dollars, anything else is shown as given."""
    rows = []
    for key, value in summary.items():
        label = key.replace("_", " ")
        lowered = key.lower()
        if isinstance(value, int | float | np.number) and not isinstance(value, bool):
            if any(word in lowered for word in ("return", "vs", "drawdown", "excess")):
                value = _pct(value, signed=True)
            elif any(word in lowered for word in ("value", "cash", "equity")):
                value = _money(value)
        rows.append((label[:1].upper() + label[1:], str(value)))
    return rows


def _top_rows(recs: pd.DataFrame, action: str) -> list[dict[str, str]]:
    chosen = recs[recs["action"].astype(str).str.upper() == action]
    chosen = chosen.sort_values(["confidence", "rank"], ascending=[False, True]).head(TOP_N)
    return [
        {
            "rank": str(int(row.rank)) if pd.notna(row.rank) else "n/a",
            "ticker": str(row.ticker),
            "current": _pct(row.current_weight),
            "target": _pct(row.target_weight),
            "change": _pct(row.target_weight - row.current_weight, signed=True),
            "confidence": "n/a" if pd.isna(row.confidence) else f"{row.confidence:.2f}",
            "price": _money(row.price),
        }
        for row in chosen.itertuples(index=False)
    ]


def _text_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "  (none)"
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in TABLE_COLUMNS}
    lines = [{c: c for c in TABLE_COLUMNS}, *rows]
    return "\n".join(("  " + "  ".join(x[c].ljust(widths[c]) for c in TABLE_COLUMNS)).rstrip() for x in lines)


def _new_message(level: Level, title: str, as_of: dt.date, template: str, **context: Any) -> EmailMessage:
    """multipart/alternative of ``template``.txt.j2 and .html.j2; headers carry the level, date and title."""
    context.update(
        subject=subject_for(level, title), title=title, level=level.value, colour=_COLOURS[level],
        as_of=as_of.isoformat(),
    )  # fmt: skip
    message = EmailMessage()
    message["Subject"] = subject_for(level, title)
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="tmagikarp")
    message[LEVEL_HEADER] = level.value
    message[DATE_HEADER] = as_of.isoformat()
    message[TITLE_HEADER] = " ".join(title.split())
    message.set_content(_ENV.get_template(f"{template}.txt.j2").render(context))
    message.add_alternative(_ENV.get_template(f"{template}.html.j2").render(context), subtype="html")
    return message


def build_recommendation_email(
    recs: pd.DataFrame, portfolio_summary: Mapping[str, Any], charts: Mapping[str, bytes], as_of: dt.date
) -> EmailMessage:
    """The daily info email: portfolio summary, top BUY and top SELL tables (10 each, by confidence) and
    charts as inline images, with a plain-text alternative.

    :param recs: one row per ticker with RECOMMENDATION_COLUMNS; weights as fractions, action BUY/SELL/HOLD.
    :param portfolio_summary: e.g. value, cash, daily_return, vs_QQQ (see ``_summary_rows`` for formats).
    :param charts: chart title -> PNG bytes, embedded as multipart/related parts referenced by ``cid:``.
    :param as_of: the trading day the recommendations are for.
    :raises ValueError: naming missing columns or a chart that is not a PNG.
    """
    missing = [c for c in RECOMMENDATION_COLUMNS if c not in recs.columns]
    if missing:
        raise ValueError(f"recommendations for {as_of} lack {missing}; need {RECOMMENDATION_COLUMNS}")
    for name, png in charts.items():
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"chart {name!r} for {as_of} is not PNG data")
    actions = recs["action"].astype(str).str.upper()
    counts = {action: int((actions == action).sum()) for action in ("BUY", "SELL", "HOLD")}
    versions = sorted(recs["model_version"].dropna().astype(str).unique()) or ["unknown"]
    buys, sells, summary = _top_rows(recs, "BUY"), _top_rows(recs, "SELL"), _summary_rows(portfolio_summary)
    cids = {name: f"{_slug(name)}.{as_of:%Y%m%d}@tmagikarp" for name in charts}
    title = f"Daily recommendations for {as_of:%Y-%m-%d}"
    message = _new_message(
        Level.INFO, title, as_of, "recommendations", summary=summary, buys=buys, sells=sells, counts=counts,
        model_versions=versions, columns=TABLE_COLUMNS, charts=list(cids.items()),
        buy_table=_text_table(buys), sell_table=_text_table(sells),
    )  # fmt: skip
    html_part = message.get_body(("html",))
    assert html_part is not None  # added just above by add_alternative
    for name, png in charts.items():
        html_part.add_related(
            png, maintype="image", subtype="png", cid=f"<{cids[name]}>",
            filename=f"{_slug(name)}.png", disposition="inline",
        )  # fmt: skip
    return message


def build_alert_email(
    level: str,
    title: str,
    details: Mapping[str, Any],
    run_url: str | None = None,
    as_of: dt.date | None = None,
    secrets: Sequence[str | None] = (),
) -> EmailMessage:
    """An alert (run failure, failed check, stale data...) listing ``details`` as a table.

    :param level: critical, warning or info.
    :param title: what happened, e.g. ``Check ohlcv_coverage failed for 2017-01-05``.
    :param details: field -> value; values of keys that look secret (password, token, key) are masked.
    :param run_url: link to the Dagster run, when known.
    :param as_of: the day the alert is about (default: today, UTC).
    :param secrets: values masked wherever they appear in the details.
    """
    chosen = parse_level(level)
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    rows = [
        (str(key), "***" if _SECRET_KEY.search(str(key)) else redact(str(value), secrets))
        for key, value in details.items()
    ]
    return _new_message(chosen, title, as_of, "alert", details=rows, run_url=run_url)


def address(message: EmailMessage, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Set From and To (replacing any previous ones) and return the same message.

    :param sender: the From address.
    :param recipients: To addresses; may be empty for the outbox transport.
    """
    del message["From"], message["To"]
    message["From"] = sender
    if recipients:
        message["To"] = ", ".join(recipients)
    return message


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def equity_curve_png(
    dates: Sequence[Any], portfolio_values: Sequence[float], qqq_values: Sequence[float]
) -> bytes:
    """Portfolio against QQQ, both rebased to 100 on the first date.

    :raises ValueError: when lengths differ, fewer than two points, or a first value is not positive.
    """
    portfolio, qqq = np.asarray(portfolio_values, float), np.asarray(qqq_values, float)
    if not len(dates) == len(portfolio) == len(qqq) or len(dates) < 2:
        raise ValueError(f"equity curve needs >= 2 points, got {len(dates)}/{len(portfolio)}/{len(qqq)}")
    if portfolio[0] <= 0 or qqq[0] <= 0:
        raise ValueError(f"equity curve starts at a non-positive value on {dates[0]}")
    figure = _figure((8, 3.5))
    axes = figure.add_subplot()
    when = pd.to_datetime(pd.Series(dates))
    axes.plot(when, portfolio / portfolio[0] * 100, label="Portfolio", color="#1f6feb")
    axes.plot(when, qqq / qqq[0] * 100, label="QQQ", color="#7b8794")
    axes.set_ylabel("Growth of 100")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def weights_bar_png(
    tickers: Sequence[str], current_weights: Sequence[float], target_weights: Sequence[float], top_n: int = 15
) -> bytes:
    """Current against target weight for the ``top_n`` tickers whose weight changes most.

    :raises ValueError: when the sequences have different lengths or are empty.
    """
    if not len(tickers) == len(current_weights) == len(target_weights) or not len(tickers):
        raise ValueError(f"weights chart needs aligned, non-empty inputs; got {len(tickers)} tickers")
    columns = {"ticker": tickers, "current": current_weights, "target": target_weights}
    frame = pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})
    frame = frame.loc[(frame["target"] - frame["current"]).abs().sort_values(ascending=False).index[:top_n]]
    figure = _figure((8, 0.3 * len(frame) + 1.2))
    axes = figure.add_subplot()
    positions = np.arange(len(frame))
    axes.barh(positions - 0.2, frame["current"] * 100, height=0.4, label="Current", color="#9aa5b1")
    axes.barh(positions + 0.2, frame["target"] * 100, height=0.4, label="Target", color="#1f6feb")
    axes.set_yticks(positions, frame["ticker"])
    axes.invert_yaxis()
    axes.set_xlabel("Weight (%)")
    axes.legend()
    return _png(figure)


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
    slug = _slug(str(message.get(TITLE_HEADER) or message.get("Subject") or ""))
    return f"{_message_day(message)}-{message.get(LEVEL_HEADER, 'info')}-{slug}-{digest}.eml"


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
