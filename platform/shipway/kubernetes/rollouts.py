"""Rollouts in Kubernetes mode, read from ``status.rollout`` of the ModelDeployment.

On Kubernetes a rollout has no row of its own: it is the candidate build of the
resource, and its whole memory is the shared controller's ``RolloutStatus`` that the
operator keeps in ``status.rollout`` (``shipway.rollout.status``). This module gives
it the fields of the API's ``RolloutOut`` so ``shipway rollouts status`` / ``list`` can
show it; its id is the candidate's build id (one rollout per candidate build). There is
no timeline yet: the events are the operator's (Kubernetes Events), not the audit
trail's. Wiring: the rollout routes answer from here when ``container.kubernetes_mode``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipway.container import Container
from shipway.errors import NotFound
from shipway.kubernetes.resource import last_written
from shipway_operator.rollout_status import from_resource

CREATED_BY = "kubernetes"  # the resource's spec.build changed; who changed it is Git's


def rollout_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout recorded on a ModelDeployment, as ``RolloutOut``'s fields; None when
    none is recorded. The record is in the resource's conventions (camelCase, RFC 3339,
    the operator's ``rollout_status``); one this Shipway cannot read is
    ``InvalidInput``, never a half-read."""
    record = (body.get("status") or {}).get("rollout")
    if not record:
        return None
    status = from_resource(record)
    meta, spec = body["metadata"], body.get("spec") or {}
    model = spec.get("model") or {}
    version = str(model.get("version", "0"))
    return {
        "id": status.candidate_build,
        "deployment": meta["name"],
        "strategy": status.strategy,
        "variant": status.variant,
        "candidate_build_id": status.candidate_build,
        "stable_build_id": status.stable_build,
        "model": model.get("name", ""),
        "candidate_version": int(version) if version.isdigit() else 0,
        "phase": status.phase.value,
        "running": not status.finished,
        "weight": status.weight,
        "step": status.step,
        "reason": status.reason,
        "winner": status.winner,
        "spec": (spec.get("rollout") or {}),
        "created_by": CREATED_BY,
        "created_at": datetime.fromtimestamp(status.created_at, UTC),
        "updated_at": last_written(meta),
        "finished_at": None,
        "timeline": [],
    }


def list_rollouts(container: Container, name: str) -> list[dict[str, Any]]:
    """The deployment's rollout (at most one: the one its status records)."""
    found = rollout_of(container.model_deployments.get(name))
    return [found] if found is not None else []


def get(container: Container, name: str, rollout_id: str) -> dict[str, Any]:
    for found in list_rollouts(container, name):
        if found["id"] == rollout_id:
            return found
    raise NotFound(f"rollout {rollout_id!r} does not exist on deployment {name!r}")
