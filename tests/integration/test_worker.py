"""A real Celery worker on Redis builds a registered version into a Triton repository in
MLflow, with the state store on PostgreSQL; builds are idempotent, end within their
time limits whatever they do, and never outlive the worker."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from sqlalchemy import select

from shipway.builds.celery_app import enqueue_build
from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import AuditEvent, Build
from tests.support import graphs
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


def build_processes(worker: int) -> set[int]:
    """The worker's live child processes that run a build (multiprocessing's spawned
    children; not its resource tracker, which lives as long as the worker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{worker}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return {c for c in found if alive(c) and b"spawn_main" in cmdline(c)}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Running or sleeping: not gone, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


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
    # Messages for builds this store does not hold (another store on the same broker,
    # or a build deleted since) are dropped before any child process is spawned.
    strangers = [uuid.uuid4().hex[:12] for _ in range(3)]
    for stranger in strangers:
        enqueue_build(container.celery, stranger)
    with shipway_process(container.settings, "serve", "worker", log=tmp_path / "worker.log"):
        build = builds.create(container, "minilm", version.version, "fp32", "onnxruntime-cpu", "t")
        status = wait_build(container, build.id)
        done = builds.get(container, build.id)
        log = (tmp_path / "worker.log").read_text()
        assert status == "succeeded", (done.error, log[-3000:])
    for stranger in strangers:
        assert f"build {stranger} is not in this store; message dropped" in log

    assert done.stage == "done" and done.progress == 1.0
    name = done.triton_model_name
    files = artifacts(container, version.mlflow_run_id, f"builds/{build.id}")
    prefix = f"builds/{build.id}/triton/{name}"
    assert files == [
        f"builds/{build.id}/report/report.json",
        f"{prefix}/1/model.onnx",
        f"{prefix}/1/model.py",
        f"{prefix}/1/shipway_padding.py",  # MiniLM has a mask: its build trims padding
        f"{prefix}/1/shipway_served.py",  # what the Python-backend models share
        f"{prefix}/config.pbtxt",
        f"{prefix}/warmup/0-input_ids.bin",  # the reference sample's first row
        f"{prefix}/warmup/1-attention_mask.bin",
    ]

    config = container.registry.download(
        version.mlflow_run_id, f"{prefix}/config.pbtxt", tmp_path / "dl"
    ).read_text()
    assert f'name: "{name}"' in config and 'backend: "python"' in config
    assert 'key: "shipway_trim"' in config

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
            building = build_processes(worker.pid)  # the build's own process
            assert building
            os.kill(worker.pid, signal.SIGKILL)  # no shutdown, no acknowledgement
            worker.wait(10)
            # The build's process dies with its worker: nothing goes on building it.
            wait_until(lambda: not any(alive(p) for p in building), 10, "the build process gone")
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
            f"{prefix}/1/shipway_padding.py",
            f"{prefix}/1/shipway_served.py",
            f"{prefix}/config.pbtxt",
            f"{prefix}/warmup/0-input_ids.bin",
            f"{prefix}/warmup/1-attention_mask.bin",
        ]
        with container.db.session() as session:
            outcomes = session.scalars(
                select(AuditEvent.action).where(AuditEvent.subject == f"build/{build.id}")
            ).all()
        assert sorted(outcomes) == ["build.create", "build.succeeded"]
    finally:
        container.close()


def test_a_build_that_hangs_fails_at_the_hard_time_limit_and_the_worker_takes_the_next(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Issue 12, item 5: the solo pool ignores Celery's time limits. A build blocked
    inside ONNX Runtime (native code, out of reach of the soft limit's signal) is
    killed at the hard limit and fails naming it and its stage; the same worker then
    builds the next one."""
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
        build_queue=f"builds-{uuid.uuid4().hex[:8]}",
        build_soft_time_limit=20,
        build_hard_time_limit=30,
        build_bench_seconds=0.2,
        build_bench_rounds=1,
    )
    container = Container(settings)
    container.registry.initialize()
    try:
        model, sample = graphs.blocks_on_large_inputs()
        rows = np.load(io.BytesIO(sample))["x"].copy()
        rows[3, 0] = 1000.0  # this row sends the model's Loop spinning
        hanging = models.register(
            container,
            models.Registration("blocks", model, sample, {}, graphs.npz(x=rows)),
            actor="test",
        )
        model, sample = graphs.gemm_classifier()
        healthy = models.register(
            container, models.Registration("classifier", model, sample, {}), actor="test"
        )
        with shipway_process(settings, "serve", "worker", log=tmp_path / "worker.log") as worker:
            build = builds.create(
                container, "blocks", hanging.version, "int8", "onnxruntime-cpu", "t"
            )
            wait_until(
                lambda: builds.get(container, build.id).stage == "calibrate", 120, "calibrating"
            )
            started = time.monotonic()
            status = wait_build(container, build.id, timeout=120)
            done = builds.get(container, build.id)
            log = (tmp_path / "worker.log").read_text()[-3000:]
            assert status == "failed", (done.error, log)
            assert done.error == (
                "hard time limit of 30 s exceeded; the build process was killed "
                "at stage 'calibrate'"
            ), log
            assert time.monotonic() - started < 40  # the limit, not a timeout of ours
            assert done.stage == "failed" and done.artifact_path is None
            assert worker.poll() is None  # the worker survived
            wait_until(lambda: not build_processes(worker.pid), 10, "no build process left")

            # The same worker takes the next build and finishes it.
            following = builds.create(
                container, "classifier", healthy.version, "int8", "onnxruntime-cpu", "t"
            )
            assert wait_build(container, following.id, timeout=180) == "succeeded", (
                builds.get(container, following.id).error,
                (tmp_path / "worker.log").read_text()[-3000:],
            )
            assert worker.poll() is None
        with container.db.session() as session:
            outcomes = session.scalars(
                select(AuditEvent.action).where(AuditEvent.subject == f"build/{build.id}")
            ).all()
        assert sorted(outcomes) == ["build.create", "build.failed"]
        assert not (settings.home / "build-work" / build.id).exists()  # no files left
    finally:
        container.close()
