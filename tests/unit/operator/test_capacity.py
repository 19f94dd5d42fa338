"""Replica ranges that follow traffic (``shipway_operator.capacity``), pure."""

from __future__ import annotations

import pytest

from shipway_operator.capacity import replica_range, replica_ranges, share_of, variant_range
from shipway_operator.spec import InvalidSpec, parse_spec

from .conftest import base_spec

SCALED = {
    "minReplicas": 2,
    "maxReplicas": 20,
    "target": {"metric": "pods", "metricName": "q", "averageValue": 4},
}


def _autoscaled():  # type: ignore[no-untyped-def]
    return parse_spec(base_spec(replicas=None, autoscaling=SCALED))


def test_share_rounds_up_and_keeps_one_warm_replica() -> None:
    assert [share_of(20, p) for p in (0, 5, 50, 100)] == [1, 1, 10, 20]
    assert share_of(None, 30) == 1


def test_without_a_rollout_each_range_is_the_specs_scaled_by_the_share() -> None:
    spec = _autoscaled()
    assert replica_range(spec, 100) == (2, 20)
    assert replica_range(spec, 5) == (1, 1)  # a canary at 5 % cannot grow to the fleet
    assert replica_range(spec, 95) == (2, 19)  # stable is not pinned at the full max
    with pytest.raises(InvalidSpec, match="percent"):
        replica_range(spec, 101)


def test_the_baseline_floors_the_candidate_at_its_share_and_stable_at_all_of_it() -> None:
    spec = _autoscaled()
    baseline = 12  # what all of the load needed when the rollout began (above min 2)
    # the candidate: its share of the baseline, below its own max
    assert variant_range(spec, False, 25, baseline) == (3, 5)
    assert variant_range(spec, False, 50, baseline) == (6, 10)
    # stable: all of the baseline (a rollback moves every request back at once), its max
    # shrinking with its share but never below that floor
    assert variant_range(spec, True, 95, baseline) == (12, 19)
    assert variant_range(spec, True, 50, baseline) == (12, 12)
    assert variant_range(spec, True, 0, baseline) == (12, 12)
    assert replica_ranges(spec, {"stable": 75, "candidate": 25}, baseline) == {
        "stable": (12, 15),
        "candidate": (3, 5),
    }


def test_fixed_replicas_follow_the_share_with_stable_kept_whole_during_a_rollout() -> None:
    spec = parse_spec(base_spec(replicas=4))
    assert replica_range(spec, 50) == (2, 2)
    assert variant_range(spec, False, 50, baseline=4) == (2, 2)
    assert variant_range(spec, True, 50, baseline=4) == (4, 4)
    assert variant_range(spec, True, 100) == (4, 4)  # no rollout: no baseline
