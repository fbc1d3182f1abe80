"""Fixtures of the deployment tests: a real PostgreSQL 15 server on 127.0.0.1 (the S3 server comes from the
root conftest's moto plugin)."""

from collections.abc import Iterator

import pytest

from magikarp_tests.deploy.support_postgres import PostgresServer, postgres_server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per test module, stopped in teardown."""
    with postgres_server() as server:
        yield server
