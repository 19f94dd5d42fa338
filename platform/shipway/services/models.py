"""Register model versions: validate everything, then write MLflow, then the store.

Validation runs before any write: the graph is parsed and checked, its signature read
(with its batch axis, see ``shipway.registry.signature``), the reference sample and
any calibration dataset checked against it, and the model run on the sample's rows
(``evaluate.run``), whose outputs become the drift baseline. Any failure is an
``InvalidInput`` (a 4xx with its reason) and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shipway import audit
from shipway.builds.accuracy import mask_input, output_kinds
from shipway.builds.triton_config import check_mask_tag, trims_padding
from shipway.container import Container
from shipway.drift import profile as drift_profile
from shipway.drift import profile_io
from shipway.engines import evaluate
from shipway.engines.calibration import Rows
from shipway.errors import BuildFailed, Conflict, InvalidInput, NotFound
from shipway.registry.mlflow_registry import PROFILE_PATH
from shipway.registry.signature import (
    Signature,
    check_sample,
    load_model,
    load_sample,
    read_signature,
)
from shipway.store.models import ModelVersion

# DNS-label-like: the name ends up in Kubernetes object names and URLs.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Registration:
    name: str
    onnx_bytes: bytes
    sample_bytes: bytes
    tags: dict[str, str]
    calibration_bytes: bytes | None = None  # INT8 calibration rows; else the sample's


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):  # match() would let a trailing newline through ($)
        raise InvalidInput(
            f"invalid model name {name!r}: use lower-case letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit"
        )


def reference_profile(onnx_bytes: bytes, signature: Signature, sample: dict[str, Any]) -> bytes:
    """The drift baseline: the sample's rows and the FP32 model's own outputs on them.
    A model that cannot run on its own reference sample is refused here, before
    anything is stored, rather than at its first build.

    Only what varies by row is profiled: the inputs split into rows and, when the
    model has a batch axis, its outputs. Inputs that are the same for every row have
    no distribution to drift from; a model without a batch axis has one row.
    """
    try:
        outputs = evaluate.run(
            evaluate.session(onnx_bytes), Rows.of(signature, sample), evaluate.batch_size(signature)
        )
    except BuildFailed as exc:
        cause = exc.__cause__ or exc  # ONNX Runtime's own words
        raise InvalidInput(f"the model does not run on its reference sample: {cause}") from None
    split = signature.batched_inputs
    per_row = {name: array for name, array in sample.items() if name in split}
    return profile_io.to_bytes(drift_profile.build(per_row, outputs if split else {}))


def register(container: Container, request: Registration, actor: str) -> ModelVersion:
    check_name(request.name)
    model = load_model(request.onnx_bytes)
    signature = read_signature(model)
    # output kinds the gate and the shadow read (shipway.output.<name>=class-scores):
    # a tag naming no output, or no kind, is refused now, not at the first build
    output_kinds(request.tags, [spec.name for spec in signature.outputs])
    # the mask input (shipway.mask_input) and trimming (shipway.trim_padding): likewise
    mask_input(request.tags, [spec.name for spec in signature.inputs])
    check_mask_tag(signature, request.tags)
    trims_padding(request.tags)
    sample = load_sample(request.sample_bytes)
    rows = check_sample(signature, sample)
    digest = hashlib.sha256(request.onnx_bytes).hexdigest()
    tags = {**request.tags, "shipway.onnx_sha256": digest, "shipway.sample_rows": str(rows)}
    if request.calibration_bytes is not None:
        try:
            calibration_rows = check_sample(signature, load_sample(request.calibration_bytes))
        except InvalidInput as exc:
            raise InvalidInput(f"calibration dataset: {exc}") from None
        tags["shipway.calibration_rows"] = str(calibration_rows)

    profile_bytes = reference_profile(request.onnx_bytes, signature, sample)
    tags["shipway.drift_profile"] = PROFILE_PATH

    highest = _highest_version(container, request.name)
    if highest:
        container.registry.check_numbering(request.name, highest)
    registered = container.registry.register(
        request.name,
        request.onnx_bytes,
        request.sample_bytes,
        signature,
        tags,
        request.calibration_bytes,
        profile_bytes,
    )
    try:
        with container.db.session() as session:
            row = ModelVersion(
                name=request.name,
                version=registered.version,
                mlflow_run_id=registered.run_id,
                onnx_sha256=digest,
                signature=signature.to_dict(),
                tags=tags,
            )
            session.add(row)
            audit.record(
                session,
                actor,
                "model.register",
                f"model/{request.name}/{registered.version}",
                sha256=digest,
                sample_rows=rows,
            )
    except IntegrityError:  # MLflow numbered a version Shipway already holds
        container.registry.delete_version(request.name, registered.version)
        raise Conflict(
            f"MLflow numbered the new version of {request.name!r} {registered.version}, "
            "which Shipway already holds (was the registered model deleted and made again "
            "in MLflow?); nothing was registered"
        ) from None
    except Exception:
        container.registry.delete_version(request.name, registered.version)
        raise
    return row


def _highest_version(container: Container, name: str) -> int:
    with container.db.session() as session:
        highest = session.scalar(
            select(func.max(ModelVersion.version)).where(ModelVersion.name == name)
        )
    return int(highest or 0)


def get_version(container: Container, name: str, version: int) -> ModelVersion:
    with container.db.session() as session:
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
        )
        if row is None:
            known = session.scalars(
                select(ModelVersion.version).where(ModelVersion.name == name)
            ).all()
            if not known:
                raise NotFound(f"model {name!r} is not registered")
            raise NotFound(f"model {name!r} has no version {version}; versions: {sorted(known)}")
        return row


def list_versions(container: Container, name: str | None = None) -> list[ModelVersion]:
    with container.db.session() as session:
        query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
        if name:
            query = query.where(ModelVersion.name == name)
        return list(session.scalars(query))
