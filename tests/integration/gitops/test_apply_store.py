"""Migration 0008 (the last applied spec per model, deploy/rollout intents) upgrades
and downgrades on PostgreSQL and SQLite, and its tables hold what the service writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select

from shipway.store.db import Database, alembic_config, migrate
from shipway.store.models import AppliedSpec, Build, GitopsIntent, ModelVersion

pytestmark = pytest.mark.integration

TABLES = {"gitops_specs", "gitops_intents"}


def _round_trip(url: str) -> None:
    migrate(url)
    db = Database(url)
    try:
        assert set(inspect(db.engine).get_table_names()) >= TABLES
        with db.session() as session:
            version = ModelVersion(
                name="m",
                version=1,
                mlflow_run_id="r",
                onnx_sha256="0" * 64,
                signature={},
                tags={},
            )
            session.add(version)
            session.flush()
            build = Build(model_version_id=version.id, recipe="fp32", target="onnxruntime-cpu")
            session.add(build)
            session.flush()
            session.add(
                AppliedSpec(model="m", text="kind: x", sha256="1" * 64, origin="cli", actor="t")
            )
            session.add(
                GitopsIntent(
                    model="m",
                    deployment="d",
                    build_id=build.id,
                    action="deploy",
                    params={"name": "d"},
                    origin="cli",
                    actor="t",
                )
            )
        with db.session() as session:
            intent = session.scalar(select(GitopsIntent))
            assert intent is not None and intent.status == "pending"
            assert intent.params == {"name": "d"}
        command.downgrade(alembic_config(url), "0007")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        migrate(url)
        assert set(inspect(db.engine).get_table_names()) >= TABLES
    finally:
        db.dispose()


def test_migration_0008_on_postgresql(postgres_url: str) -> None:
    _round_trip(postgres_url)


def test_migration_0008_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'state.db'}")
