"""Start the real services the tests use, on loopback, in a temporary directory.

A service is taken from an environment variable when one is given
(``SHIPWAY_TEST_REDIS_URL``, ``SHIPWAY_TEST_POSTGRES_URL``); otherwise its server
binary is started here. When neither is possible the test is skipped with the
command that provides it — and under CI (``CI=true`` or
``SHIPWAY_REQUIRE_SERVICES=1``) that skip is a failure.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def strict() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("SHIPWAY_REQUIRE_SERVICES") == "1"
    )


def unavailable(what: str, hint: str) -> None:
    message = f"{what} is not available: {hint}"
    if strict():
        pytest.fail(f"{message} (a skip is a failure under CI)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("SHIPWAY_TEST_REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("Redis", "install it with `apt-get install redis-server`")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_open(port), 20, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


_redis_databases = itertools.count()


def fresh_redis_database(server_url: str) -> str:
    """The URL of an emptied database on the server (cycling over its 16 databases;
    tests run one at a time, so the one before has finished with it)."""
    import redis

    base = server_url.rsplit("/", 1)[0]
    url = f"{base}/{next(_redis_databases) % 16}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    if url := os.environ.get("SHIPWAY_TEST_POSTGRES_URL"):
        yield url
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("PostgreSQL", "install it with `apt-get install postgresql`")
    # Directly under /tmp: the `postgres` user must be able to reach it.
    workdir = Path(tempfile.mkdtemp(prefix="shipway-pg-"))
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    # PostgreSQL refuses to run as root; tests run as root in CI, so drop to `postgres`.
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = free_port()
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *prefix,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(workdir / "pg.log"),
            "-w",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """A fresh database on the test server, so tests do not see each other's rows."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
