"""A real S3 endpoint for tests: moto's threaded server on 127.0.0.1, with dummy credentials.

Use it with ``pytest_plugins = ["magikarp_tests.support_s3"]`` (in a test module or the root conftest);
fixtures: ``s3_endpoint`` (session), ``s3_bucket`` (a fresh bucket), ``s3_client`` (boto3 client).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 with dummy AWS credentials in the environment.

    :return: the endpoint URL, e.g. ``http://127.0.0.1:50123``; the environment is restored on exit.
    """
    saved = {name: os.environ.get(name) for name in [*_DUMMY_ENV, "AWS_PROFILE"]}
    os.environ.update(_DUMMY_ENV)
    os.environ.pop("AWS_PROFILE", None)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client_for(endpoint_url: str) -> Any:
    """A boto3 S3 client bound to the test endpoint."""
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of one moto S3 server shared by the whole test session."""
    with moto_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the shared moto server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    client_for(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 S3 client for the shared moto server (to inspect or tamper with objects directly)."""
    return client_for(s3_endpoint)
