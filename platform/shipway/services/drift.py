"""Drift checks of a deployment: each variant's live window, sampled by the gateway,
against the reference profile of the model version it serves. Every check is kept,
so the API can show a history."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from shipway.container import Container
from shipway.drift import profile_io
from shipway.drift.detect import detect
from shipway.drift.window import assemble
from shipway.errors import NotFound, Unavailable
from shipway.registry.mlflow_registry import PROFILE_PATH
from shipway.registry.signature import Signature
from shipway.services.deployments import get as get_deployment
from shipway.settings import Role
from shipway.store.models import Build, DriftCheck

WINDOW_REQUESTS = 2000  # the newest sampled requests a check looks at
HISTORY = 50


@dataclass(frozen=True)
class VariantDrift:
    variant: str
    build_id: str
    report: dict[str, Any]


def _admin_token(container: Container) -> str:
    for token, role in container.settings.api_tokens.items():
        if role == Role.ADMIN:
            return token
    raise Unavailable("no admin token is configured to read the gateway's samples")


def _window(
    container: Container, deployment: str, variant: str, signature: Signature
) -> dict[str, np.ndarray]:
    url = f"{container.settings.gateway_url}/admin/samples/{deployment}/{variant}"
    try:
        response = httpx.get(
            url,
            params={"limit": WINDOW_REQUESTS},
            headers={"Authorization": f"Bearer {_admin_token(container)}"},
            timeout=30,
            trust_env=False,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise Unavailable(f"the gateway's samples are not reachable at {url}: {exc}") from exc
    dtypes = {spec.name: spec.dtype for spec in signature.inputs}
    requests = [
        {
            name: np.asarray(values, dtype=dtypes[name])
            for name, values in sample["inputs"].items()
            if name in dtypes
        }
        for sample in response.json()["samples"]
    ]
    return assemble(requests).inputs


def check(container: Container, name: str, min_rows: int = 100) -> list[VariantDrift]:
    """Check every variant of deployment ``name`` now, and record the results."""
    deployment = get_deployment(container, name)
    results = []
    with container.db.session() as session:
        variants = [
            (v.name, v.build_id, session.get(Build, v.build_id)) for v in deployment.variants
        ]
        served = {
            variant: (build_id, build.model_version.mlflow_run_id, build.model_version.signature)
            for variant, build_id, build in variants
            if build is not None
        }
    for variant, (build_id, run_id, signature) in served.items():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = container.registry.download(run_id, PROFILE_PATH, Path(tmp))
            except NotFound:
                report = {
                    "verdict": "no-profile",
                    "message": "this version was registered without a drift profile",
                }
                results.append(VariantDrift(variant, build_id, report))
                continue
            profile = profile_io.from_bytes(path.read_bytes())
        window = _window(container, name, variant, Signature.from_dict(signature))
        outcome = detect(profile, window, min_rows=min_rows) if window else None
        if outcome is None:
            report = {"verdict": "insufficient-data", "rows": 0, "message": "no samples yet"}
        else:
            report = outcome.to_dict()
        results.append(VariantDrift(variant, build_id, report))
        container.drift_metrics.record(name, variant, report)
        with container.db.session() as session:
            session.add(
                DriftCheck(
                    deployment=name,
                    variant=variant,
                    build_id=build_id,
                    verdict=str(report["verdict"]),
                    rows=int(report.get("rows", 0) or 0),
                    score=float(report.get("score", 0.0) or 0.0),
                    min_p_adjusted=report.get("min_p_adjusted"),
                    report=_jsonable(report),
                )
            )
    return results


def history(container: Container, name: str, limit: int = HISTORY) -> list[DriftCheck]:
    with container.db.session() as session:
        return list(
            session.scalars(
                select(DriftCheck)
                .where(DriftCheck.deployment == name)
                .order_by(DriftCheck.id.desc())
                .limit(limit)
            )
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
