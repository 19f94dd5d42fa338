"""Rollouts of a deployment: start, follow (with the timeline), operate."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from shipway.api.deps import ContainerDep, Deployer, IdPath, NamePath, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import RolloutEventOut, RolloutIn, RolloutOut
from shipway.container import Container
from shipway.kubernetes import rollouts as kube_rollouts
from shipway.services import deployments, rollouts
from shipway.store.models import Rollout

router = APIRouter(prefix="/deployments/{name}/rollouts", tags=["rollouts"])

Operation = Literal[rollouts.OPERATIONS]  # type: ignore[valid-type]


def rollout_out(container: Container, rollout: Rollout, with_timeline: bool) -> RolloutOut:
    status = rollouts.status_of(rollout)
    events = rollouts.timeline(container, rollout.id) if with_timeline else []
    return RolloutOut(
        id=rollout.id,
        deployment=rollout.deployment,
        strategy=rollout.strategy,
        variant=rollout.variant,
        candidate_build_id=rollout.candidate_build_id,
        stable_build_id=rollout.stable_build_id,
        model=rollout.candidate.model_version.name,
        candidate_version=rollout.candidate.model_version.version,
        phase=rollout.phase,
        running=rollout.active_key is not None,
        weight=status.weight,
        step=status.step,
        reason=status.reason,
        winner=status.winner,
        spec=rollout.spec,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        finished_at=rollout.finished_at,
        timeline=[
            RolloutEventOut(
                at=e.at,
                event=e.action,
                actor=e.actor,
                reason=str(e.details.get("reason", "")),
                details={k: v for k, v in e.details.items() if k != "reason"},
            )
            for e in events
        ],
    )


@router.post(
    "",
    response_model=RolloutOut,
    status_code=201,
    responses=responses(400, 403, 404, 409, 422, 503),
)
def start(name: NamePath, body: RolloutIn, container: ContainerDep, caller: Deployer) -> RolloutOut:
    """Start moving traffic to a candidate build. 409 while another rollout runs, when
    the build already serves or the deployment has other variants, and for a candidate
    whose signature would break stable's clients (unless ``allow_signature_change``);
    422 for settings the strategy does not know or cannot use. With
    ``SHIPWAY_RUNTIME=kubernetes`` a rollout starts from a new build in the
    ModelDeployment (``shipway deploy``), so this answers 409 saying so."""
    deployments.local_only(container, "starting a rollout here (deploy the new build instead)")
    rollout = rollouts.start(
        container,
        container.rollout_ports,
        name,
        body.build_id,
        caller.actor,
        body.strategy,
        body.settings,
        body.allow_signature_change,
    )
    return rollout_out(container, rollout, with_timeline=True)


@router.get("", response_model=list[RolloutOut], responses=responses(404, 422, 503))
def list_rollouts(name: NamePath, container: ContainerDep, _: Viewer) -> list[RolloutOut]:
    if container.kubernetes_mode:
        return [RolloutOut(**r) for r in kube_rollouts.list_rollouts(container, name)]
    return [rollout_out(container, r, False) for r in rollouts.list_rollouts(container, name)]


@router.get("/{rollout_id}", response_model=RolloutOut, responses=responses(404, 422, 503))
def get(name: NamePath, rollout_id: IdPath, container: ContainerDep, _: Viewer) -> RolloutOut:
    """The rollout and its timeline: steps, every check with its numbers, decisions."""
    if container.kubernetes_mode:  # status.rollout of the ModelDeployment; no timeline yet
        return RolloutOut(**kube_rollouts.get(container, name, rollout_id))
    return rollout_out(container, rollouts.get(container, rollout_id, name), with_timeline=True)


@router.post(
    "/{rollout_id}/{operation}",
    response_model=RolloutOut,
    responses=responses(403, 404, 409, 422),
)
def operate(
    name: NamePath,
    rollout_id: IdPath,
    operation: Operation,
    container: ContainerDep,
    caller: Deployer,
) -> RolloutOut:
    """pause, resume, promote (now), approve (a manual gate), abort (roll back now);
    409 when the rollout's phase does not allow it (and, for now, with
    ``SHIPWAY_RUNTIME=kubernetes``: the operator's rollout loop takes them next)."""
    deployments.local_only(
        container,
        f"{operation} on a rollout",
        "on Kubernetes a rollout's operations are annotations of its ModelDeployment "
        "(shipway.io/paused, shipway.io/approved-step, shipway.io/promote, "
        "shipway.io/abort; see operators/README.md)",
    )
    rollout = rollouts.operate(
        container, container.rollout_ports, name, rollout_id, operation, caller.actor
    )
    return rollout_out(container, rollout, with_timeline=True)
