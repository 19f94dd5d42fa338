"""The status write is skipped when the merge patch would change nothing; who owns a
Deployment's fields, from its managedFields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipway_operator.kube import _unchanged, owns_replicas, spec_drifted, status_patch
from shipway_operator.reconcile import last_change


def test_equal_fields_and_absent_removals_change_nothing() -> None:
    old = {"phase": "Ready", "weights": {"stable": 100, "candidate": 0}}
    assert _unchanged(old, {"phase": "Ready", "rollout": None})
    assert _unchanged(old, {"weights": {"stable": 100, "candidate": 0}})


def test_a_new_value_or_a_removal_is_a_change() -> None:
    old = {"phase": "Ready", "rollout": {"candidate": "b-2"}}
    assert not _unchanged(old, {"phase": "Progressing"})
    assert not _unchanged(old, {"rollout": None})
    assert not _unchanged(old, {"observedGeneration": 2})


def _entry(manager: str, operation: str, spec: dict[str, Any], subresource: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "fieldsV1": {"f:spec": spec}}
    return entry | ({"subresource": subresource} if subresource else {})


def _live(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"managedFields": list(entries)}}


REPLICAS = {"f:replicas": {}}
IMAGE = {"f:template": {"f:spec": {"f:containers": {'k:{"name":"triton"}': {"f:image": {}}}}}}


def test_replicas_are_the_operators_while_its_apply_owns_them() -> None:
    assert owns_replicas(_live(_entry("shipway-operator", "Apply", REPLICAS)), "shipway-operator")
    assert not owns_replicas(_live(_entry("shipway-operator", "Apply", IMAGE)), "shipway-operator")
    scaled = _entry("kube-controller-manager", "Update", REPLICAS, "scale")
    assert not owns_replicas(_live(scaled), "shipway-operator")


def test_a_spec_field_of_another_manager_is_drift_but_the_hpas_scale_is_not() -> None:
    ours = _entry("shipway-operator", "Apply", REPLICAS | IMAGE)
    assert not spec_drifted(_live(ours))
    assert not spec_drifted(_live(ours, _entry("shipway-operator-handover", "Apply", REPLICAS)))
    hpa = _entry("kube-controller-manager", "Update", REPLICAS, "scale")
    assert not spec_drifted(_live(ours, hpa))
    assert spec_drifted(_live(ours, _entry("kubectl-edit", "Update", IMAGE)))
    assert spec_drifted(_live(ours, _entry("kubectl", "Update", REPLICAS, "scale")))
    status = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}
    assert not spec_drifted(_live(ours, status | {"fieldsV1": {"f:status": {}}}))


def test_the_last_change_is_the_latest_managed_fields_time() -> None:
    body = {
        "metadata": {
            "managedFields": [
                {"manager": "kubectl", "time": "2026-11-30T08:00:00Z"},
                {"manager": "shipway-operator", "time": "2026-11-30T08:05:30Z"},
                {"manager": "old-client"},
            ]
        }
    }
    assert last_change(body) == datetime(2026, 11, 30, 8, 5, 30, tzinfo=UTC)
    assert last_change({"metadata": {}}) is None


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def test_a_status_write_replaces_each_key_it_sets_whole() -> None:
    """A new candidate's record must not inherit the previous rollout's engine state,
    nor a build the spec no longer has a digest for keep the old one."""
    old = {
        "phase": "Progressing",
        "rollout": {
            "candidateBuildID": "b-2",
            "state": {"phase": "Progressing", "weight": 25},
            "converged": "Progressing:25",
            "counters": {"total": {"candidate": {"requests": 90}}, "last": {"x": 1}},
        },
        "stableBuild": {"id": "b-1", "modelRepository": "https://x/b-1.tar.gz", "sha256": "ab"},
        "lastAnalysis": {"kept": True},  # not written by this status: left alone
    }
    new = {
        "phase": "Progressing",
        "rollout": {"candidateBuildID": "b-3", "counters": {"total": {}}},
        "stableBuild": {"id": "b-1", "modelRepository": "https://x/b-1.tar.gz"},
    }
    written = _merge(old, status_patch(old, new))
    assert written == {**new, "lastAnalysis": {"kept": True}}
    # a plain merge patch of ``new`` is what went wrong: the old keys survive
    assert _merge(old, new)["rollout"]["state"] == {"phase": "Progressing", "weight": 25}
