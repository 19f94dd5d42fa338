"""The schema migrates and round-trips on a real PostgreSQL, as on the SQLite default."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, select

from shipway.store.db import Database, alembic_config, migrate
from shipway.store.models import AuditEvent, Build, Deployment, ModelVersion, Replica

pytestmark = pytest.mark.integration

TABLES = {"model_versions", "builds", "deployments", "replicas", "audit_events"}


def _exercise(url: str) -> None:
    migrate(url)
    migrate(url)  # idempotent: a second start finds nothing to do
    db = Database(url)
    try:
        assert set(inspect(db.engine).get_table_names()) >= TABLES
        with db.session() as session:
            mv = ModelVersion(
                name="m",
                version=1,
                mlflow_run_id="r",
                onnx_sha256="0" * 64,
                signature={"inputs": [], "outputs": []},
                tags={"k": "v"},
            )
            session.add(mv)
            session.flush()
            build = Build(model_version_id=mv.id, recipe="fp32", target="onnxruntime-cpu")
            session.add(build)
            session.flush()
            deployment = Deployment(name="d", build_id=build.id)
            session.add(deployment)
            session.flush()
            session.add(
                Replica(
                    deployment_id=deployment.id,
                    build_id=build.id,
                    url="http://x",
                    triton_model_name="m",
                )
            )
            session.add(AuditEvent(actor="t", action="a", subject="s", details={"n": 1}))
        with db.session() as session:
            loaded = session.scalar(select(Deployment).where(Deployment.name == "d"))
            assert loaded is not None
            assert loaded.build.model_version.tags == {"k": "v"}
            assert [r.url for r in loaded.replicas] == ["http://x"]
            assert loaded.build.status == "queued"
            session.delete(loaded)  # replicas go with their deployment
        with db.session() as session:
            assert session.scalars(select(Replica)).all() == []
    finally:
        db.dispose()
    command.downgrade(alembic_config(url), "base")
    assert not TABLES & set(inspect(Database(url).engine).get_table_names())


def test_schema_on_postgresql(postgres_url: str) -> None:
    _exercise(postgres_url)


def test_schema_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _exercise(f"sqlite:///{tmp_path / 'state.db'}")
