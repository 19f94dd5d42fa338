"""MLflow adapter: the model registry and artifact store behind Shipway.

Layout of a version's run (experiment ``shipway/<name>``)::

    model/model.onnx            the registered model (the version's source)
    reference/sample.npz        reference sample: held-out accuracy rows and drift baseline
    reference/calibration.npz   optional calibration dataset for INT8 builds
    reference/profile.npz       drift baseline: the sample's features and FP32 outputs
    signature.json              inputs and outputs read from the graph
    builds/<build-id>/triton/   one Triton model repository per build

MLflow state changed outside Shipway is answered, never left to surface as a 503 or
a stuck build:

- the experiment ``shipway/<name>`` deleted: the next registration restores it
  (MLflow restores its runs with it), so earlier versions keep their files;
- the registered model, a version or the run holding a version's files deleted for
  good: ``Gone``, naming it (a build is refused, a queued one fails with the reason);
- a run deleted but restorable (``mlflow runs restore``): ``Conflict``, saying so;
- an alias (``production``, ``candidate``) on a registered model or version that is
  gone: logged and skipped. Aliases mirror Shipway's own rollout state for MLflow
  users; the store is the record, so a rollout does not stop on them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from shipway.errors import Conflict, Gone, NotFound, Unavailable
from shipway.registry.signature import Signature

log = logging.getLogger(__name__)

MODEL_PATH = "model"
ONNX_FILE = "model.onnx"
SAMPLE_PATH = "reference/sample.npz"
CALIBRATION_PATH = "reference/calibration.npz"
PROFILE_PATH = "reference/profile.npz"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str
    source: str


def experiment_name(model: str) -> str:
    return f"shipway/{model}"


def _missing(exc: MlflowException) -> bool:
    """MLflow's answer for an object it does not hold (never made, or deleted for good)."""
    return exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


class ModelRegistry:
    """Registers model versions and moves their artifacts; one per process."""

    def __init__(self, tracking_uri: str, registry_uri: str, artifact_root: str | None) -> None:
        # None: a tracking server decides where artifacts go (proxied artifact store).
        self._artifact_root = artifact_root.rstrip("/") if artifact_root else None
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)

    def initialize(self) -> None:
        """Touch both stores, so a SQLite backend is created (migrated) once, by the
        caller, before several processes would race to create it."""
        try:
            self._client.search_experiments(max_results=1)
            self._client.search_registered_models(max_results=1)
        except MlflowException as exc:
            raise Unavailable(f"MLflow is not usable: {exc.message}") from exc

    def register(
        self,
        name: str,
        onnx_bytes: bytes,
        sample_bytes: bytes,
        signature: Signature,
        tags: dict[str, str],
        calibration_bytes: bytes | None = None,
        profile_bytes: bytes | None = None,
    ) -> RegisteredVersion:
        """Log the files to a new run and create a registered model version from it.

        Inputs are validated by the caller; should MLflow fail half-way, the run is
        deleted so that no orphan version or artifact stays behind.
        """
        try:
            experiment_id = self._experiment_id(name)
            run = self._client.create_run(experiment_id, run_name=f"register-{name}", tags=tags)
        except MlflowException as exc:
            raise Unavailable(f"MLflow refused the registration: {exc.message}") from exc
        run_id = run.info.run_id
        try:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / MODEL_PATH).mkdir()
                (root / MODEL_PATH / ONNX_FILE).write_bytes(onnx_bytes)
                (root / "reference").mkdir()
                (root / SAMPLE_PATH).write_bytes(sample_bytes)
                if calibration_bytes is not None:
                    (root / CALIBRATION_PATH).write_bytes(calibration_bytes)
                if profile_bytes is not None:
                    (root / PROFILE_PATH).write_bytes(profile_bytes)
                (root / "signature.json").write_text(json.dumps(signature.to_dict(), indent=2))
                self._client.log_artifacts(run_id, str(root))
            self._client.set_terminated(run_id)
            if not self._client.search_registered_models(filter_string=f"name = '{name}'"):
                try:
                    self._client.create_registered_model(name)
                except MlflowException as exc:
                    if "already exists" not in exc.message.lower():
                        raise
            version = self._client.create_model_version(
                name, source=f"{run.info.artifact_uri}/{MODEL_PATH}", run_id=run_id, tags=tags
            )
        except MlflowException as exc:
            self._client.delete_run(run_id)
            raise Unavailable(f"MLflow refused the registration: {exc.message}") from exc
        return RegisteredVersion(name, int(version.version), run_id, version.source)

    def delete_version(self, name: str, version: int) -> None:
        """Undo a registration whose database record could not be written. Best effort:
        it runs while another error is on its way to the caller, which must not be
        replaced by this one."""
        try:
            mv = self._client.get_model_version(name, str(version))
            self._client.delete_model_version(name, str(version))
            if mv.run_id:
                self._client.delete_run(mv.run_id)
        except MlflowException as exc:
            log.error("could not undo MLflow version %s/%s: %s", name, version, exc.message)

    def check_numbering(self, name: str, highest: int) -> None:
        """Refuse a registration whose MLflow version number would repeat one Shipway
        already holds. MLflow numbers on past deleted versions (they keep their
        numbers), but a registered model deleted in MLflow starts again from 1.

        Raises:
            Conflict: the registered model is gone while Shipway holds versions up to
                ``highest`` of it.
            Unavailable: MLflow cannot be asked.
        """
        try:
            registered = self._client.search_registered_models(filter_string=f"name = '{name}'")
        except MlflowException as exc:
            raise Unavailable(f"MLflow is not usable: {exc.message}") from exc
        if not registered:
            raise Conflict(
                f"the registered model {name!r} was deleted from MLflow, while Shipway holds "
                f"versions 1..{highest} of it (their builds and deployments keep working); "
                "MLflow would number a new version 1 again: register under another name"
            )

    def check_version(self, name: str, version: int, run_id: str) -> None:
        """What a build needs from MLflow: the registered version, and its run active.

        Raises:
            Gone: the registered model, the version or the run was deleted for good.
            Conflict: the run (or its experiment) is deleted but can be restored.
            Unavailable: MLflow cannot be asked.
        """
        what = f"model {name!r} version {version}"
        try:
            try:
                self._client.get_model_version(name, str(version))
            except MlflowException as exc:
                if not _missing(exc):
                    raise
                if not self._client.search_registered_models(filter_string=f"name = '{name}'"):
                    raise Gone(
                        f"the registered model {name!r} was deleted from MLflow, with "
                        f"{what}; MLflow cannot restore it: register the model again"
                    ) from None
                raise Gone(
                    f"{what} was deleted from the MLflow registry; MLflow cannot restore "
                    "it: register the model again"
                ) from None
            try:
                run = self._client.get_run(run_id)
            except MlflowException as exc:
                if not _missing(exc):
                    raise
                raise Gone(
                    f"the MLflow run {run_id} holding the files of {what} was deleted for "
                    "good; register the model again"
                ) from None
        except MlflowException as exc:
            raise Unavailable(f"MLflow is not usable: {exc.message}") from exc
        if run.info.lifecycle_stage == "deleted":
            try:
                experiment = self._client.get_experiment(run.info.experiment_id)
            except MlflowException as exc:
                raise Unavailable(f"MLflow is not usable: {exc.message}") from exc
            where = (
                f"its experiment {experiment.name!r} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`)"
                if experiment.lifecycle_stage == "deleted"
                else f"restore it (`mlflow runs restore --run-id {run_id}`)"
            )
            raise Conflict(
                f"the MLflow run {run_id} holding the files of {what} is deleted: {where}"
            )

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        """Fetch an artifact of a run (a deleted but restorable run still serves its
        files). Raises Gone when the run is gone for good, NotFound when the artifact is."""
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self._client.download_artifacts(run_id, path, str(dst)))
        except MlflowException as exc:
            if _missing(exc) and self._run_gone(run_id):
                raise Gone(
                    f"the MLflow run {run_id} was deleted for good; its {path!r} is gone"
                ) from exc
            raise NotFound(f"artifact {path!r} of run {run_id} is not available: {exc}") from exc
        except OSError as exc:
            raise NotFound(f"artifact {path!r} of run {run_id} is not available: {exc}") from exc

    def has_artifact(self, run_id: str, path: str) -> bool:
        parent, _, leaf = path.rstrip("/").rpartition("/")
        try:
            items = self._client.list_artifacts(run_id, parent or None)
        except MlflowException as exc:
            raise self._run_error(run_id, exc) from exc
        return any(item.path.rstrip("/").rpartition("/")[2] == leaf for item in items)

    def log_dir(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        try:
            self._client.log_artifacts(run_id, str(local_dir), artifact_path)
        except MlflowException as exc:
            raise self._run_error(run_id, exc) from exc

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Numbers of a build report, on the version's run (one batch, one timestamp)."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        try:
            self._client.log_batch(run_id, metrics=batch)
        except MlflowException as exc:
            raise self._run_error(run_id, exc) from exc

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        self._client.set_model_version_tag(name, str(version), key, value)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point a registered model's alias (``production``, ``candidate``) at a version.

        A registered model or version deleted in MLflow is logged and skipped: the alias
        mirrors Shipway's rollout state, which the store records, and a rollout must
        not stop on it. Raises Unavailable when MLflow cannot be reached.
        """
        try:
            self._client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            if not _missing(exc):
                raise Unavailable(
                    f"MLflow refused alias {alias!r} of {name}: {exc.message}"
                ) from exc
            log.warning("alias %r of %s not set: %s", alias, name, exc.message)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; one that is not set, or whose registered model was deleted in
        MLflow, is already gone (repeated after a restart)."""
        try:
            self._client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if not _missing(exc):
                raise Unavailable(f"MLflow refused to drop {alias!r}: {exc.message}") from exc

    def aliases(self, name: str) -> dict[str, int]:
        try:
            model = self._client.get_registered_model(name)
        except MlflowException as exc:
            raise NotFound(f"model {name!r} is not registered in MLflow") from exc
        return {alias: int(version) for alias, version in model.aliases.items()}

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        try:
            return dict(self._client.get_model_version(name, str(version)).tags)
        except MlflowException as exc:
            raise NotFound(f"model {name!r} has no version {version} in MLflow") from exc

    def _run_gone(self, run_id: str) -> bool:
        try:
            self._client.get_run(run_id)
        except MlflowException as exc:
            return _missing(exc)
        return False

    def _run_error(self, run_id: str, exc: MlflowException) -> Exception:
        """A write to or listing of a run failed: say whether the run is gone for good,
        deleted (restorable), or MLflow is in trouble (retriable)."""
        try:
            run = self._client.get_run(run_id)
        except MlflowException as again:
            if _missing(again):
                return Gone(f"the MLflow run {run_id} was deleted for good")
            return Unavailable(f"MLflow is not usable: {exc.message}")
        if run.info.lifecycle_stage == "deleted":
            return Conflict(
                f"the MLflow run {run_id} was deleted meanwhile; restore it "
                f"(`mlflow runs restore --run-id {run_id}`) and build again"
            )
        return Unavailable(f"MLflow refused a write to run {run_id}: {exc.message}")

    def _experiment_id(self, name: str) -> str:
        """The model's experiment: made on first use; restored if it was deleted in
        MLflow (a deleted experiment's name stays taken until MLflow's garbage
        collection, and restoring it brings back the runs that earlier versions'
        builds and deployments read)."""
        exp_name = experiment_name(name)
        experiment = self._client.get_experiment_by_name(exp_name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                log.warning("experiment %s was deleted in MLflow; restoring it", exp_name)
                self._client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            location = f"{self._artifact_root}/{name}" if self._artifact_root else None
            return self._client.create_experiment(exp_name, artifact_location=location)
        except MlflowException:
            experiment = self._client.get_experiment_by_name(exp_name)  # lost a race
            if experiment is None:
                raise
            return experiment.experiment_id
