from __future__ import annotations

import pytest

from shipway.runtime.autoscaling import AutoscalePolicy, decide, recommend, stabilize

POLICY = AutoscalePolicy(
    min_replicas=1, max_replicas=6, target_inflight=2.0, scale_down_stabilization_window_seconds=10
)


@pytest.mark.parametrize(
    ("current", "inflight", "expected"),
    [
        (1, 2.0, 1),  # on target
        (2, 4.3, 2),  # within the 10 % tolerance
        (1, 5.0, 3),  # ceil(5 / 2)
        (1, 100.0, 5),  # at most +4 (or doubling) per step
        (4, 100.0, 6),  # and never above max
        (3, 0.0, 1),  # idle: down to min
        (0, 3.0, 2),  # nothing running yet
    ],
)
def test_recommend(current: int, inflight: float, expected: int) -> None:
    assert recommend(current, inflight, POLICY) == expected


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    history: tuple[tuple[float, int], ...] = ()
    replicas, history = decide(history, 0.0, 1, 6.0, POLICY)
    assert replicas == 3  # up at once
    replicas, history = decide(history, 1.0, 3, 0.5, POLICY)
    assert replicas == 3  # load fell, but 3 was recommended within the window
    replicas, history = decide(history, 5.0, 3, 0.5, POLICY)
    assert replicas == 3
    replicas, history = decide(history, 10.5, 3, 0.5, POLICY)
    assert replicas == 1  # the high recommendation has aged out of the window
    assert all(10.5 - t < POLICY.scale_down_stabilization_window_seconds for t, _ in history)


def test_a_burst_inside_the_window_holds_replicas() -> None:
    replicas, history = stabilize((), 0.0, 4, 4, POLICY)
    replicas, history = stabilize(history, 6.0, 1, 4, POLICY)
    assert replicas == 4
    replicas, history = stabilize(history, 8.0, 2, 4, POLICY)
    assert replicas == 4
    replicas, history = stabilize(history, 12.0, 1, 4, POLICY)
    assert replicas == 2  # the 4 is gone; the 2 from t=8 is still in the window


@pytest.mark.parametrize(("low", "high", "target"), [(0, 2, 1.0), (3, 2, 1.0), (1, 2, 0.0)])
def test_policy_validation(low: int, high: int, target: float) -> None:
    with pytest.raises(ValueError):
        AutoscalePolicy(low, high, target)
