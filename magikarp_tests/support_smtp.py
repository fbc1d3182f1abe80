"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, collecting every message it accepts.

Use it with ``pytest_plugins = ["magikarp_tests.support_smtp"]``; fixtures: ``smtp_server`` (plain, no
auth), ``smtp_tls_server`` (STARTTLS required, AUTH LOGIN with SMTP_USER / SMTP_PASSWORD, only after TLS),
``tls_certificate`` (a self-signed cert for 127.0.0.1 and localhost, generated with ``cryptography``).
``run_smtp_server(...)`` starts one on a chosen port, e.g. to bring a "down" server up later.
PYTEST_DONT_REWRITE (test modules import its constants before pytest loads it as a plugin)
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
SMTP_USER = "magikarp-bot"
SMTP_PASSWORD = "Sw0rdf1sh-only-in-tests-7Q"  # a distinctive value tests search for in logs and errors


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path


@dataclass
class ReceivedMail:
    """What the server saw for one accepted message."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    tls: bool  # the session was encrypted (STARTTLS) when DATA arrived
    authenticated: bool


@dataclass
class SmtpServer:
    host: str
    port: int
    tls: bool
    received: list[ReceivedMail] = field(default_factory=list)
    auth_attempts: list[tuple[str, str, bool]] = field(default_factory=list)  # mechanism, login, over TLS
    reject: set[str] = field(default_factory=set)  # recipient addresses answered with 550
    echo_credentials: bool = False  # misbehave: quote the submitted login and password in the 535 reply


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd cannot bind port 0: its readiness probe needs the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def make_certificate(folder: Path) -> Certificate:
    """A self-signed EC certificate valid for 127.0.0.1 and localhost, for one day either side of now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out = Certificate(folder / "smtp-cert.pem", folder / "smtp-key.pem")
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return out


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if address in self.server.reject:
            return f"550 5.1.1 mailbox {address} does not exist"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.server.received.append(
            ReceivedMail(
                message=message,  # type: ignore[arg-type]
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 Message accepted for delivery"


def _authenticator(server: SmtpServer) -> Any:
    def check(smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login, password = (auth_data.login.decode(), auth_data.password.decode())
        server.auth_attempts.append((mechanism, login, session.ssl is not None))
        echo = f"535 5.7.8 bad credentials {login}:{password}" if server.echo_credentials else None
        ok = (login, password) == (SMTP_USER, SMTP_PASSWORD)
        return AuthResult(success=ok, handled=False, message=echo)

    return check


@contextmanager
def run_smtp_server(port: int | None = None, certificate: Certificate | None = None) -> Iterator[SmtpServer]:
    """Run aiosmtpd on 127.0.0.1 until the block exits.

    :param port: the port (default: a free one).
    :param certificate: when given, STARTTLS is required and AUTH LOGIN (SMTP_USER / SMTP_PASSWORD) is
        offered only after TLS; without it the server is plain and accepts mail without auth.
    """
    server = SmtpServer(HOST, port or free_port(), tls=certificate is not None)
    options: dict[str, Any] = {}
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate.cert_file, certificate.key_file)
        options = {
            "tls_context": context,
            "require_starttls": True,
            "auth_require_tls": True,
            "auth_required": True,
            "auth_exclude_mechanism": ["PLAIN"],
            "authenticator": _authenticator(server),
        }
    controller = Controller(_Handler(server), hostname=HOST, port=server.port, **options)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """One self-signed certificate for the whole session."""
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no auth) on a free port."""
    with run_smtp_server() as server:
        yield server


@pytest.fixture
def smtp_tls_server(tls_certificate: Certificate) -> Iterator[SmtpServer]:
    """An SMTP server requiring STARTTLS and AUTH LOGIN as SMTP_USER / SMTP_PASSWORD."""
    with run_smtp_server(certificate=tls_certificate) as server:
        yield server
