"""The Argo CD health check of a ModelDeployment (pipelines/argocd/modeldeployment-health.lua)
in a real Lua 5.1, on statuses the operator's own pure status functions write
(``shipway_operator.status``); the rollouts' phases on the real test cluster are in
tests/integration/gitops/test_pipelines.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from lupa.lua51 import LuaError

from shipway_operator import status
from shipway_operator.spec import parse_spec
from tests.support.argocd import health
from tests.unit.operator.conftest import base_spec

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
B2 = {"id": "b-2", "modelRepository": "https://files.test/b-2.tar.gz"}
GENERATION = 3


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch, as the operator's status writes are applied: null removes."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _deployment(replicas: int, available: int, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            **extra,
        },
    }


def _write(
    spec: dict[str, Any],
    previous: dict[str, Any],
    stable: dict[str, Any] | None,
    candidate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status after the operator's write from these live Deployments."""
    parsed = parse_spec(spec)
    derived = status.derive(
        name="minilm",
        generation=GENERATION,
        spec=parsed,
        plan=status.plan(parsed, previous, T0),
        stable=stable,
        candidate=candidate,
        previous=previous,
        now=T0,
    )
    return _merge(previous, derived)


def _resource(spec: dict[str, Any], written: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "shipway.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "minilm", "namespace": "models", "generation": GENERATION},
        "spec": spec,
    }
    if written is not None:
        body["status"] = written
    return body


def test_a_new_resource_without_status_is_progressing() -> None:
    seen = health(_resource(base_spec(), None))
    assert seen.status == "Progressing"
    assert "generation 3" in seen.message


def test_pending_then_ready_is_progressing_then_healthy() -> None:
    pending = _write(base_spec(), {}, _deployment(2, 1))
    seen = health(_resource(base_spec(), pending))
    assert seen.status == "Progressing"
    assert "1/2 replicas available" in seen.message
    ready = _write(base_spec(), pending, _deployment(2, 2))
    seen = health(_resource(base_spec(), ready))
    assert seen.status == "Healthy"
    assert seen.message.startswith("ReplicasAvailable: stable build b-1")


def test_a_generation_the_operator_has_not_seen_is_progressing_even_when_ready() -> None:
    ready = _write(base_spec(), {}, _deployment(2, 2))
    body = _resource(base_spec(replicas=3), ready)
    body["metadata"]["generation"] = GENERATION + 1
    seen = health(body)
    assert seen.status == "Progressing"
    assert "generation 4 not observed yet (status is of generation 3)" in seen.message


def test_a_new_build_is_a_rollout_progressing() -> None:
    ready = _write(base_spec(), {}, _deployment(2, 2))
    started = _write(base_spec(build=B2), ready, _deployment(2, 2), _deployment(1, 0))
    assert started["phase"] == "Progressing"
    seen = health(_resource(base_spec(build=B2), started))
    assert seen.status == "Progressing"
    assert seen.message == "Rollout of build b-2 (Initializing) at 0 %"


def test_a_failed_stable_deployment_is_degraded() -> None:
    failed = _deployment(
        2,
        0,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    seen = health(_resource(base_spec(), _write(base_spec(), {}, failed)))
    assert seen.status == "Degraded"
    assert seen.message.startswith("ProgressDeadlineExceeded: stable: 0/2 replicas")


@pytest.mark.parametrize("reason", sorted(status.NOT_APPLIED))
def test_a_generation_the_operator_could_not_apply_is_degraded(reason: str) -> None:
    ready = _write(base_spec(), {}, _deployment(2, 2))
    refused = _merge(ready, status.not_applied(ready, GENERATION, reason, "the reason", T0))
    seen = health(_resource(base_spec(), refused))
    assert seen.status == "Degraded"
    assert seen.message == f"{reason}: the reason"


def test_an_invalid_spec_with_nothing_serving_is_degraded() -> None:
    failed = status.invalid({}, GENERATION, "spec.build.id: required", T0)
    assert failed["phase"] == "Failed"
    seen = health(_resource(base_spec(), failed))
    assert (seen.status, seen.message) == ("Degraded", "InvalidSpec: spec.build.id: required")


def test_a_script_error_is_raised_not_swallowed(tmp_path: Any) -> None:
    broken = tmp_path / "broken.lua"
    broken.write_text("local hs = {}\nhs.status = obj.status.phase .. nil\nreturn hs\n")
    with pytest.raises(LuaError):
        health(_resource(base_spec(), {"phase": "Ready"}), broken)


def test_the_script_uses_nothing_argo_cd_does_not_open(tmp_path: Any) -> None:
    """The sandbox is Argo CD's: a script reaching for io or os fails here as there."""
    escaping = tmp_path / "io.lua"
    escaping.write_text('io.write("x")\nreturn {status = "Healthy", message = "x"}\n')
    with pytest.raises(LuaError):
        health(_resource(base_spec(), None), escaping)
