"""The status write is skipped when the merge patch would change nothing."""

from __future__ import annotations

from shipway_operator.kube import _unchanged


def test_equal_fields_and_absent_removals_change_nothing() -> None:
    old = {"phase": "Ready", "weights": {"stable": 100, "candidate": 0}}
    assert _unchanged(old, {"phase": "Ready", "rollout": None})
    assert _unchanged(old, {"weights": {"stable": 100, "candidate": 0}})


def test_a_new_value_or_a_removal_is_a_change() -> None:
    old = {"phase": "Ready", "rollout": {"candidate": "b-2"}}
    assert not _unchanged(old, {"phase": "Progressing"})
    assert not _unchanged(old, {"rollout": None})
    assert not _unchanged(old, {"observedGeneration": 2})
