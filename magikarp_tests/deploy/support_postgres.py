"""A real PostgreSQL 15 server for tests: initdb and pg_ctl from Debian's postgresql-15, run as the
``postgres`` OS user (initdb refuses root), data in a temporary folder, listening on 127.0.0.1 only, with
password authentication (fixture ``postgres`` in magikarp_tests/deploy/conftest.py)."""

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magikarp_tests.support_s3 import _free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
SUPERUSER = "dagster"


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """Where the test server listens and how to log in."""

    host: str
    port: int
    user: str
    password: str

    def dsn(self, db_name: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={db_name}"


def _as_postgres(*args: str) -> list[str]:
    """A command run as the postgres OS user when the tests run as root (as CI does)."""
    return ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else list(args)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL 15 on 127.0.0.1 and a free port; stop it and delete its data on exit."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(
            f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing): run `make system-deps`"
        )
    folder = Path(tempfile.mkdtemp(prefix="magikarp-pg-"))  # under /tmp: traversable by the postgres user
    data, password_file = folder / "data", folder / "password"
    password = os.urandom(12).hex()
    password_file.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(folder, OS_USER)
        shutil.chown(password_file, OS_USER)
    server = PostgresServer("127.0.0.1", _free_port(), SUPERUSER, password)
    pg_ctl = str(PG_BIN / "pg_ctl")
    try:
        _run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "scram-sha-256",
                          f"--pwfile={password_file}", "-E", "UTF8", "--no-sync"))  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c fsync=off"
        _run(_as_postgres(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"))
        try:
            yield server
        finally:
            _run(_as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
