"""Drift checks of a deployment: each variant's live window, sampled by the gateway,
against the reference profile of the model version it serves. Every check is kept,
so the API can show a history."""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from shipway import audit
from shipway.container import Container
from shipway.drift import profile_io
from shipway.drift.detect import Verdict, between, detect
from shipway.drift.policy import Action, Policy, breach_actions
from shipway.drift.profile import ReferenceProfile
from shipway.drift.window import assemble
from shipway.errors import InvalidInput, NotFound, ShipwayError, Unavailable
from shipway.notify import webhook
from shipway.registry.mlflow_registry import PROFILE_PATH
from shipway.registry.signature import Signature
from shipway.services.deployments import deploy
from shipway.services.deployments import get as get_deployment
from shipway.settings import Role
from shipway.store.models import AuditEvent, Build, Deployment, DriftCheck

log = logging.getLogger(__name__)

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
    container: Container, deployment: str, variant: str, signature: Signature, kind: str
) -> dict[str, np.ndarray]:
    """The sampled requests' inputs (``kind`` "samples") or answers' outputs
    ("outputs") of one variant, as one set of arrays."""
    url = f"{container.settings.gateway_url}/admin/{kind}/{deployment}/{variant}"
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
    key = "inputs" if kind == "samples" else "outputs"
    specs = signature.inputs if kind == "samples" else signature.outputs
    # What varies by row only, as the reference profile (services.models): inputs that
    # are the same for every row, and the outputs of a model without rows, are left out.
    split = signature.batched_inputs
    dtypes = {
        spec.name: spec.dtype
        for spec in specs
        if (spec.name in split if kind == "samples" else bool(split))
    }
    requests = [
        {
            name: np.asarray(values, dtype=dtypes[name])
            for name, values in sample[key].items()
            if name in dtypes
        }
        for sample in response.json()["samples"]
    ]
    return assemble(requests).inputs


def _profile(container: Container, run_id: str) -> ReferenceProfile | None:
    """A version's reference profile, fetched once per process: it never changes."""
    cache = container.drift_profiles
    if run_id not in cache:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = container.registry.download(run_id, PROFILE_PATH, Path(tmp))
            except NotFound:
                return None
            cache[run_id] = profile_io.from_bytes(path.read_bytes())
    return cache[run_id]


def check(container: Container, name: str, min_rows: int = 100) -> list[VariantDrift]:
    """Check every variant of deployment ``name`` now, record the results, and apply
    the deployment's drift policy to any variant that has just moved into drift."""
    deployment = get_deployment(container, name)
    policy = Policy.from_dict(deployment.drift_policy)
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
        profile = _profile(container, run_id)
        if profile is None:
            report = {
                "verdict": "no-profile",
                "message": "this version was registered without a drift profile",
            }
            results.append(VariantDrift(variant, build_id, report))
            continue
        sig = Signature.from_dict(signature)
        window = _window(container, name, variant, sig, "samples")
        answers = _window(container, name, variant, sig, "outputs")
        relayed = {s.name for s in sig.outputs if len(s.shape) <= 2}  # what the gateway keeps
        outcome = (
            detect(profile, window, answers, min_rows=min_rows, expected_outputs=relayed)
            if window
            else None
        )
        if outcome is None:
            report = {"verdict": "insufficient-data", "rows": 0, "message": "no samples yet"}
        else:
            report = _jsonable(outcome.to_dict())  # JSON has no NaN: the API answers it
        results.append(VariantDrift(variant, build_id, report))
        container.drift_metrics.record(name, variant, report)
        previous = _last_verdict(container, name, variant)
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
        due = breach_actions(previous, str(report["verdict"]), variant, policy)
        if due:
            _breach(container, name, variant, build_id, report, policy, due)
    return results


def score_between(
    container: Container, name: str, stable: str, candidate: str, min_rows: int = 100
) -> float | None:
    """A canary's drift check: the largest PSI of the candidate's sampled inputs
    against stable's. None (an inconclusive check) while either window is too small.
    Both windows are read with the input kinds of stable's version profile (not
    re-decided from what stable's window happens to hold); NaN in them is evidence
    (PSI's non-finite cell), never an error."""
    with container.db.session() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        variant = (
            next((v for v in deployment.variants if v.name == stable), None) if deployment else None
        )
        if variant is None:
            return None
        signature = Signature.from_dict(variant.build.model_version.signature)
        run_id = variant.build.model_version.mlflow_run_id
    ours = _window(container, name, stable, signature, "samples")
    theirs = _window(container, name, candidate, signature, "samples")
    if not ours or not theirs:
        return None
    profile = _profile(container, run_id)
    kinds = profile.inputs if profile is not None and profile.inputs else None
    report = between(ours, theirs, min_rows=min_rows, kinds=kinds)
    return None if report.verdict is Verdict.INSUFFICIENT_DATA else report.score


def check_all(container: Container, min_rows: int = 100) -> None:
    """One round of the periodic monitor: every deployment, one failure never stops it."""
    with container.db.session() as session:
        names = list(session.scalars(select(Deployment.name)))
    for name in names:
        try:
            check(container, name, min_rows)
        except Exception as exc:
            log.warning("drift check of %s failed: %s", name, exc)


def set_policy(container: Container, name: str, data: dict[str, Any], actor: str) -> Policy:
    policy = Policy.from_dict(data)
    if Action.WEBHOOK in policy.actions and not container.settings.webhook_secret:
        raise InvalidInput("a webhook policy needs SHIPWAY_WEBHOOK_SECRET set on the server")
    with container.db.session() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        if deployment is None:
            raise NotFound(f"deployment {name!r} does not exist")
        deployment.drift_policy = policy.to_dict()
        audit.record(session, actor, "drift.policy", f"deployment/{name}", **policy.to_dict())
    return policy


def _last_verdict(container: Container, name: str, variant: str) -> str | None:
    with container.db.session() as session:
        return session.scalar(
            select(DriftCheck.verdict)
            .where(DriftCheck.deployment == name, DriftCheck.variant == variant)
            .order_by(DriftCheck.id.desc())
            .limit(1)
        )


def previous_stable(container: Container, name: str, current: str) -> str | None:
    """The build that ``current`` replaced as stable, from the audit trail."""
    with container.db.session() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.subject == f"deployment/{name}", AuditEvent.action == "deployment.set"
            )
            .order_by(AuditEvent.id.desc())
        )
        for event in events:
            if event.details.get("build") == current and event.details.get("previous_build"):
                return str(event.details["previous_build"])
    return None


def _breach(
    container: Container,
    name: str,
    variant: str,
    build_id: str,
    report: dict[str, Any],
    policy: Policy,
    due: list[Action],
) -> None:
    event_id = uuid.uuid4().hex
    drifted = [f["name"] for f in report.get("features", []) if f.get("drifted")]
    summary = {
        "event": "drift.detected",
        "deployment": name,
        "variant": variant,
        "build_id": build_id,
        "score": report.get("score"),
        "min_p_adjusted": report.get("min_p_adjusted"),
        "features": drifted,
        "rows": report.get("rows"),
    }
    outcomes: dict[str, Any] = {}
    if Action.WEBHOOK in due and policy.webhook_url and container.settings.webhook_secret:
        delivery = webhook.send(
            policy.webhook_url, container.settings.webhook_secret, event_id, summary
        )
        outcomes["webhook"] = {
            "delivered": delivery.delivered,
            "attempts": delivery.attempts,
            "status": delivery.status,
            "error": delivery.error,
        }
    if Action.ROLLBACK in due:
        target = previous_stable(container, name, build_id)
        if target is None:
            outcomes["rollback"] = {"done": False, "reason": "no previous stable build"}
        else:
            try:
                # the build that served before: its clients' signature, not a new one
                deploy(container, name, target, actor="drift-monitor", allow_signature_change=True)
                outcomes["rollback"] = {"done": True, "to_build": target}
            except ShipwayError as exc:
                outcomes["rollback"] = {"done": False, "reason": str(exc)}
    log.warning("drift in %s/%s (event %s): %s %s", name, variant, event_id, drifted, outcomes)
    with container.db.session() as session:
        audit.record(
            session,
            "drift-monitor",
            "drift.detected",
            f"deployment/{name}",
            event_id=event_id,
            **_jsonable(summary),
            actions=[a.value for a in due],
            outcomes=_jsonable(outcomes),
        )


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
