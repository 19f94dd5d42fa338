"""The build of one engine, stage by stage. Idempotent: a re-delivered build that
already succeeded is a no-op, and one that died half-way starts its stages again
without duplicating artifacts (each build logs to its own artifact path).

Whatever a stage raises, the build ends ``failed`` with the reason and the stage it
was in; only a retriable error (a dependency down) is raised on, for the task to
retry. A build whose process is killed (time limit, crash) is failed by the process
that supervised it (``isolation.py``, through ``fail_unfinished``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import onnx
from sqlalchemy import select
from sqlalchemy.orm import Session

from shipway import audit
from shipway.builds.accuracy import mask_input, output_kinds
from shipway.builds.compile import BenchPlan, GateFailed, Inputs, compile_candidate
from shipway.builds.isolation import TimeLimitExceeded
from shipway.builds.packaging import (
    backend_for,
    package_repository,
    trim_decision,
    triton_model_name,
)
from shipway.builds.recipes import BuildOptions, Recipe, Target
from shipway.builds.triton_config import ServingOptions, trim_off_reason, trims_padding
from shipway.engines import openvino, tensorrt
from shipway.engines.graph import index_bounds
from shipway.errors import BuildFailed, ShipwayError
from shipway.registry.mlflow_registry import (
    CALIBRATION_PATH,
    MODEL_PATH,
    ONNX_FILE,
    SAMPLE_PATH,
    ModelRegistry,
)
from shipway.registry.signature import Signature, load_sample
from shipway.settings import Settings
from shipway.store.db import Database
from shipway.store.models import Build, BuildStatus, Deployment, ModelVersion

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def build_artifact_path(build_id: str) -> str:
    return f"builds/{build_id}/triton"


def report_artifact_path(build_id: str) -> str:
    return f"builds/{build_id}/report"


@dataclass(frozen=True)
class StableBuild:
    build_id: str
    run_id: str
    artifact_path: str


def _stable_build(
    session: Session, model_name: str, target: str, exclude: str
) -> StableBuild | None:
    """The build serving as stable in a deployment of the same model and target."""
    rows = session.execute(
        select(Build, ModelVersion.mlflow_run_id)
        .join(Deployment, Deployment.build_id == Build.id)
        .join(ModelVersion, Build.model_version_id == ModelVersion.id)
        .where(
            ModelVersion.name == model_name,
            Build.target == target,
            Build.id != exclude,
            Build.artifact_path.is_not(None),
        )
        .order_by(Deployment.updated_at.desc())
    ).first()
    if rows is None:
        return None
    build, run_id = rows
    return StableBuild(build.id, run_id, build.artifact_path or "")


def report_metrics(build_id: str, report: dict[str, Any]) -> dict[str, float]:
    """The report's headline numbers as MLflow metrics, keyed by build."""
    picks = {
        "mean_cosine": report.get("accuracy", {}).get("mean_cosine"),
        "min_cosine": report.get("accuracy", {}).get("min_cosine"),
        "speedup_vs_fp32": report.get("benchmark", {}).get("speedup_vs_fp32"),
        "speedup_vs_stable": report.get("benchmark", {}).get("speedup_vs_stable"),
        **{
            f"speedup_vs_{baseline}_{shape}": value
            for baseline in ("raw_fp32", "fused_fp32")
            for shape, value in (
                report.get("benchmark", {}).get(f"speedup_vs_{baseline}") or {}
            ).items()
        },
        "rows_per_second": report.get("benchmark", {}).get("candidate", {}).get("rows_per_second"),
        "p99_ms": report.get("benchmark", {}).get("candidate", {}).get("p99_ms"),
        "size_mb": report.get("size_mb", {}).get("candidate"),
        "fp32_layers_kept": len(report.get("selective", {}).get("kept_fp32", []))
        if "selective" in report
        else None,
        "seconds": report.get("seconds"),
    }
    return {f"build.{build_id}.{k}": float(v) for k, v in picks.items() if v is not None}


class BuildPipeline:
    def __init__(self, db: Database, registry: ModelRegistry, settings: Settings) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings

    def run(self, build_id: str, progress: Progress | None = None) -> None:
        with self.db.session() as session:
            build = session.get(Build, build_id)
            if build is None:
                raise BuildFailed(f"build {build_id} does not exist")
            if build.status == BuildStatus.SUCCEEDED:
                log.info("build %s already succeeded; nothing to do", build_id)
                return
            build.status, build.error = BuildStatus.RUNNING, None
            version = build.model_version
            run_id, model_name, number = version.mlflow_run_id, version.name, version.version
            raw = (version.signature, build.recipe, build.target, build.options)
            tags = {str(k): str(v) for k, v in (version.tags or {}).items()}
            stable = _stable_build(session, model_name, str(build.target), build_id)
        current = "start"

        def stage(name: str, fraction: float) -> None:
            nonlocal current
            current = name
            with self.db.session() as session:
                row = session.get(Build, build_id)
                assert row is not None
                row.stage, row.progress = name, fraction
            if progress:
                progress(name, fraction)

        report: dict[str, Any] = {}
        try:
            signature = Signature.from_dict(raw[0])
            recipe, target = Recipe(raw[1]), Target(raw[2])
            options = BuildOptions.from_dict(raw[3])
            self.registry.check_version(model_name, number, run_id)  # changed since queued?
            artifact_path = build_artifact_path(build_id)
            triton_name = triton_model_name(model_name, build_id)
            if self.registry.has_artifact(run_id, artifact_path):
                stage("already-packaged", 0.9)  # a previous delivery got this far
                report = self._saved_report(run_id, build_id)
            else:
                with tempfile.TemporaryDirectory(prefix="shipway-build-") as tmp:
                    work = Path(tmp)
                    stage("fetch-model", 0.05)
                    # Only an optimized CPU build races the stable one.
                    race = recipe is not Recipe.FP32 and target is Target.ONNXRUNTIME_CPU
                    inputs = self._fetch(run_id, signature, stable if race else None, work)
                    kinds = output_kinds(tags, (o.name for o in signature.outputs))
                    mask = mask_input(tags, (i.name for i in signature.inputs))
                    inputs = replace(inputs, output_kinds=kinds, mask_input=mask)
                    result = compile_candidate(
                        inputs, recipe, target, options, work, self._bench_plan(), stage
                    )
                    report = result.report
                    engine = result.engine
                    if target is Target.TENSORRT:
                        stage("compile-tensorrt", 0.8)
                        engine = work / "model.plan"
                        report["tensorrt"] = tensorrt.build_engine(
                            result.engine,
                            engine,
                            recipe.value,
                            tensorrt.profiles(signature, 8, 4, (1, 128, 512)),
                            self.settings.resolved_engine_cache_dir,
                        )
                    stage("package-triton", 0.85)
                    repo = work / "repo"
                    enabled = self.settings.serving_trim_padding
                    serving = ServingOptions(
                        trim_padding=trims_padding(tags, enabled),
                        length_buckets=tuple(self.settings.serving_length_buckets),
                    )
                    backend = backend_for(target, self.settings.triton_onnx_backend)
                    hint = report.get("openvino", {}).get("inference_precision_requested")
                    # Trimmed only where the engine answers its reference sample trimmed
                    # as padded, the way the gate judged it (``trim_check``), run by the
                    # runtime that serves it (OpenVINO for openvino-cpu).
                    decision = trim_decision(
                        engine,
                        signature,
                        backend,
                        serving,
                        inputs.sample,
                        mask,
                        trim_off_reason(tags, enabled),
                        **(
                            {
                                "precision": openvino.numpy_precision(hint),
                                "open_engine": partial(
                                    openvino.Session,
                                    engine,
                                    hint,
                                    1,
                                    [o.name for o in signature.outputs],
                                ),
                            }
                            if target is Target.OPENVINO_CPU
                            else {}
                        ),
                    )
                    report["serving"] = decision.to_dict()
                    package_repository(
                        repo,
                        triton_name,
                        engine,
                        signature,
                        target,
                        serving,
                        onnx_backend=self.settings.triton_onnx_backend,
                        sample=inputs.sample,  # the warm-up request is its first row
                        mask_input=mask,
                        decision=decision,
                        openvino_precision=hint,
                        index_bounds=(
                            index_bounds(onnx.load(str(inputs.model), load_external_data=False))
                            if target is Target.OPENVINO_CPU
                            else None
                        ),
                    )
                    stage("upload-artifacts", 0.9)
                    extras = work / "extras"
                    extras.mkdir()
                    (extras / "report.json").write_text(json.dumps(report, indent=2))
                    if result.calibration_cache is not None:
                        shutil.copyfile(
                            result.calibration_cache, extras / "calibration-ranges.json"
                        )
                    self.registry.log_dir(run_id, extras, report_artifact_path(build_id))
                    self.registry.log_metrics(run_id, report_metrics(build_id, report))
                    # The repository goes last: its presence marks the build as packaged.
                    self.registry.log_dir(run_id, repo, artifact_path)
        except GateFailed as exc:
            self._finish(build_id, BuildStatus.FAILED, error=str(exc), report=exc.report)
            return
        except ShipwayError as exc:
            self._finish(build_id, BuildStatus.FAILED, error=str(exc))
            if exc.retriable:
                raise
            return
        except TimeLimitExceeded as exc:  # the soft limit, raised where the build was
            self._finish(build_id, BuildStatus.FAILED, error=f"{exc} at stage {current!r}")
            return
        except Exception as exc:  # whatever a library raises, the build ends with it
            log.exception("build %s failed at stage %s", build_id, current)
            self._finish(
                build_id,
                BuildStatus.FAILED,
                error=f"unexpected error at stage {current!r}: {type(exc).__name__}: {exc}",
            )
            return
        self._finish(
            build_id,
            BuildStatus.SUCCEEDED,
            artifact_path=artifact_path,
            triton_name=triton_name,
            report=report,
        )

    def needs_run(self, build_id: str) -> bool:
        """Whether a delivered build task has work to do: the build is in this store and
        has not succeeded. Checked before a child process is spawned for it (about 2.5 s
        each): a redelivery of a finished build, or a message whose build this store no
        longer holds (a store reset or restored while messages sat in the broker), must
        not queue that cost ahead of real builds. One broker serves one store: workers
        of two stores sharing a queue would drop each other's builds (give each its own
        broker database)."""
        with self.db.session() as session:
            build = session.get(Build, build_id)
            if build is None:
                log.warning("build %s is not in this store; message dropped", build_id)
                return False
            if build.status == BuildStatus.SUCCEEDED:
                log.info("build %s already succeeded; nothing to do", build_id)
                return False
            return True

    def fail_unfinished(self, build_id: str, error: str) -> bool:
        """Fail a build that is still queued or running (its process was killed or
        died); a build that ended meanwhile is left as it is. Returns whether it failed
        the build."""
        with self.db.session() as session:
            build = session.get(Build, build_id)
            if build is None or build.status in (BuildStatus.SUCCEEDED, BuildStatus.FAILED):
                return False
            error = f"{error} at stage {build.stage!r}"
        self._finish(build_id, BuildStatus.FAILED, error=error)
        return True

    def _bench_plan(self) -> BenchPlan:
        s = self.settings
        return BenchPlan(
            s.build_bench_seconds,
            s.build_bench_rounds,
            s.build_bench_batch,
            s.build_bench_threads,
            s.perf_regression_tolerance,
        )

    def _fetch(
        self, run_id: str, signature: Signature, stable: StableBuild | None, work: Path
    ) -> Inputs:
        model_dir = self.registry.download(run_id, MODEL_PATH, work / "src")
        reference = self.registry.download(run_id, "reference", work / "reference")
        sample = load_sample((reference / Path(SAMPLE_PATH).name).read_bytes())
        calibration_file = reference / Path(CALIBRATION_PATH).name
        calibration = (
            load_sample(calibration_file.read_bytes()) if calibration_file.exists() else None
        )
        stable_model = None
        if stable is not None:
            repo = self.registry.download(stable.run_id, stable.artifact_path, work / "stable")
            stable_model = next(iter(sorted(repo.glob("*/1/model.onnx"))), None)
        return Inputs(
            model_dir / ONNX_FILE,
            signature,
            sample,
            calibration,
            stable_model,
            stable.build_id if stable_model is not None else None,
        )

    def _saved_report(self, run_id: str, build_id: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                folder = self.registry.download(run_id, report_artifact_path(build_id), Path(tmp))
            except ShipwayError:
                return {}
            path = folder / "report.json"
            return json.loads(path.read_text()) if path.exists() else {}

    def _finish(
        self,
        build_id: str,
        status: BuildStatus,
        *,
        error: str | None = None,
        artifact_path: str | None = None,
        triton_name: str | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        with self.db.session() as session:
            build = session.get(Build, build_id)
            assert build is not None
            build.status, build.error = status, error
            build.stage, build.progress = (
                ("done", 1.0)
                if status == BuildStatus.SUCCEEDED
                else (
                    "failed",
                    build.progress,
                )
            )
            if artifact_path:
                build.artifact_path = artifact_path
                build.triton_model_name = triton_name
            if report is not None:
                build.report = report
            audit.record(session, "worker", f"build.{status}", f"build/{build_id}", error=error)


def build_in_process(progress: Progress, settings: Settings, build_id: str) -> None:
    """One build in the current process, from settings alone: the work that
    ``isolation.run_limited`` runs in a child process (its own connections)."""
    from shipway.container import Container

    logging.basicConfig(  # a spawned process starts without the worker's logging
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    container = Container(settings, run_migrations=False)
    try:
        BuildPipeline(container.db, container.registry, settings).run(build_id, progress)
    finally:
        container.close()
