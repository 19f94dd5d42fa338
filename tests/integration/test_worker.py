"""A real Celery worker on Redis builds a registered version into a Triton repository in
MLflow, with the state store on PostgreSQL; builds are idempotent."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sqlalchemy import select

from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import AuditEvent, Build
from tests.support.processes import shipway_process
from tests.support.services import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def container(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Container]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
    )
    container = Container(settings)
    container.registry.initialize()
    yield container
    container.close()


def wait_build(container: Container, build_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = builds.get(container, build_id).status
        if status in ("succeeded", "failed"):
            return status
        time.sleep(0.3)
    raise TimeoutError(f"build {build_id} did not finish")


def artifacts(container: Container, run_id: str, path: str) -> list[str]:
    s = container.settings
    client = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    found, pending = [], [path]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop()):
            (pending if item.is_dir else found).append(item.path)
    return sorted(found)


def test_worker_builds_fp32_repository(
    container: Container, minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    version = models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
        actor="test",
    )
    with shipway_process(container.settings, "serve", "worker", log=tmp_path / "worker.log"):
        build = builds.create(container, "minilm", version.version, "fp32", "onnxruntime-cpu", "t")
        status = wait_build(container, build.id)
        done = builds.get(container, build.id)
        assert status == "succeeded", (done.error, (tmp_path / "worker.log").read_text()[-3000:])

    assert done.stage == "done" and done.progress == 1.0
    name = done.triton_model_name
    files = artifacts(container, version.mlflow_run_id, f"builds/{build.id}")
    prefix = f"builds/{build.id}/triton/{name}"
    assert files == [
        f"builds/{build.id}/report/report.json",
        f"{prefix}/1/model.onnx",
        f"{prefix}/1/model.py",
        f"{prefix}/config.pbtxt",
    ]

    config = container.registry.download(
        version.mlflow_run_id, f"{prefix}/config.pbtxt", tmp_path / "dl"
    ).read_text()
    assert f'name: "{name}"' in config and 'backend: "python"' in config

    # A re-delivered build that already succeeded changes nothing.
    before = builds.get(container, build.id).updated_at
    BuildPipeline(container.db, container.registry, container.settings).run(build.id)
    assert builds.get(container, build.id).updated_at == before
    assert artifacts(container, version.mlflow_run_id, f"builds/{build.id}") == files


def test_redelivery_after_a_crash_does_not_duplicate_artifacts(
    container: Container, minilm_onnx: Path, minilm_sample: Path
) -> None:
    """A worker that died after uploading leaves the build 'running'; the next delivery
    finds the artifacts and finishes without uploading them again."""
    version = models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
        actor="test",
    )
    pipeline = BuildPipeline(container.db, container.registry, container.settings)

    with container.db.session() as session:
        build = Build(model_version_id=version.id, recipe="fp32", target="onnxruntime-cpu")
        session.add(build)
        session.flush()
        build_id = build.id
    pipeline.run(build_id)
    files = artifacts(container, version.mlflow_run_id, f"builds/{build_id}")
    with container.db.session() as session:
        row = session.get(Build, build_id)
        assert row is not None
        row.status, row.stage = "running", "upload-artifacts"  # as a crash would leave it
    stages: list[str] = []
    pipeline.run(build_id, lambda stage, _: stages.append(stage))
    assert stages == ["already-packaged"]
    assert builds.get(container, build_id).status == "succeeded"
    assert artifacts(container, version.mlflow_run_id, f"builds/{build_id}") == files


def test_a_worker_killed_mid_build_leaves_it_to_the_next_worker_which_finishes_it_once(
    tmp_path: Path, postgres_url: str, redis_url: str, minilm_onnx: Path, minilm_sample: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
        build_queue=f"builds-{uuid.uuid4().hex[:8]}",
        build_redelivery_seconds=10,  # how long Redis keeps a dead worker's build
        build_bench_seconds=0.2,
        build_bench_rounds=1,
    )
    container = Container(settings)
    container.registry.initialize()
    try:
        version = models.register(
            container,
            models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
            actor="test",
        )
        with shipway_process(settings, "serve", "worker", log=tmp_path / "w1.log") as worker:
            build = builds.create(
                container, "minilm", version.version, "int8", "onnxruntime-cpu", "t"
            )
            wait_until(
                lambda: (
                    builds.get(container, build.id).stage in ("calibrate", "quantize", "benchmark")
                ),
                120,
                "the build mid-way",
            )
            os.kill(worker.pid, signal.SIGKILL)  # no shutdown, no acknowledgement
            worker.wait(10)
        killed = builds.get(container, build.id)
        assert killed.status == "running", killed.stage

        with shipway_process(settings, "serve", "worker", log=tmp_path / "w2.log"):
            status = wait_build(container, build.id, timeout=180)
        done = builds.get(container, build.id)
        assert status == "succeeded", (done.error, (tmp_path / "w2.log").read_text()[-3000:])
        assert done.report["accuracy"]["passed"]

        # Finished once: one repository, one report, one success in the audit trail.
        prefix = f"builds/{build.id}/triton/{done.triton_model_name}"
        assert artifacts(container, version.mlflow_run_id, f"builds/{build.id}") == [
            f"builds/{build.id}/report/calibration-ranges.json",
            f"builds/{build.id}/report/report.json",
            f"{prefix}/1/model.onnx",
            f"{prefix}/1/model.py",
            f"{prefix}/config.pbtxt",
        ]
        with container.db.session() as session:
            outcomes = session.scalars(
                select(AuditEvent.action).where(AuditEvent.subject == f"build/{build.id}")
            ).all()
        assert sorted(outcomes) == ["build.create", "build.succeeded"]
    finally:
        container.close()
