"""A ModelDeployment's ``status.rollout`` (the shared controller's RolloutStatus, as the
operator records it) as the API's rollout document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shipway.api.schemas import RolloutOut
from shipway.errors import InvalidInput
from shipway.kubernetes.rollouts import rollout_of
from shipway.rollout.controller import new_status
from shipway_operator.rollout_status import to_resource

STARTED = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def body(rollout: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "creationTimestamp": "2026-11-30T06:00:00Z"},
        "spec": {
            "model": {"name": "doubler", "version": "4"},
            "build": {"id": "b2", "modelRepository": "http://api.test/b2.tar.gz"},
            "rollout": {"strategy": "canary", "canary": {"stepWeights": [10, 100]}},
        },
        "status": {"phase": "Progressing", **({"rollout": rollout} if rollout else {})},
    }


def test_a_recorded_rollout_is_the_candidates() -> None:
    record = to_resource(new_status("canary", "b2", "b1", STARTED.timestamp()))
    found = rollout_of(body(record))
    assert found is not None
    document = RolloutOut.model_validate(found)
    assert (document.id, document.candidate_build_id, document.stable_build_id) == (
        "b2",
        "b2",
        "b1",
    )
    assert (document.strategy, document.variant, document.phase) == (
        "canary",
        "canary",
        "initializing",
    )
    assert (document.running, document.weight, document.step) == (True, 0, 0)
    assert (document.model, document.candidate_version) == ("doubler", 4)
    assert document.spec == {"strategy": "canary", "canary": {"stepWeights": [10, 100]}}
    assert document.created_at == STARTED and document.timeline == []


def test_no_record_no_rollout_and_an_unreadable_one_is_refused() -> None:
    assert rollout_of(body(None)) is None
    newer = to_resource(new_status("canary", "b2", "b1", STARTED.timestamp())) | {"version": 99}
    with pytest.raises(InvalidInput, match="version 99"):
        rollout_of(body(newer))
