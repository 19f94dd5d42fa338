"""``shipway migrate``, the chart's migration Job, as the Job runs it (a process with
``SHIPWAY_DATABASE_URL``): the schema at head on a real PostgreSQL, a second run (the
next upgrade's hook) changing nothing, an unreachable database one line and exit 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from shipway.store.db import alembic_config
from tests.support.services import free_port

pytestmark = pytest.mark.integration


def migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway.cli.main", "migrate"],
        env={"SHIPWAY_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_migrate_brings_the_schema_to_head_once(postgres_url: str) -> None:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
    engine = sa.create_engine(postgres_url)
    try:
        for _ in range(2):  # install, then an upgrade's hook with nothing new
            done = migrate(postgres_url)
            assert done.returncode == 0, done.stderr
            assert "schema up to date" in done.stdout
            with engine.connect() as connection:
                versions = connection.execute(sa.text("select version_num from alembic_version"))
                assert [row[0] for row in versions] == [head]
        assert {"builds", "deployments"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_unreachable_database_is_one_line() -> None:
    port = free_port()  # closed: nothing listens on it
    done = migrate(f"postgresql+psycopg://shipway:secret@127.0.0.1:{port}/shipway")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    message = " ".join(done.stderr.split())
    assert message.startswith("error: migration failed:"), message
    assert f"port {port} failed" in message and "Traceback" not in done.stderr
    assert "secret" not in done.stderr  # the password is not printed
    assert len(lines) == 1
