"""Specs and states survive the trip through JSON; bad settings are named, not ignored."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shipway.errors import InvalidInput
from shipway.rollout import canary, codec
from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.experiment import ExperimentSpec


def test_specs_and_states_round_trip_through_json() -> None:
    spec = CanarySpec(
        step_weights=(10, 100),
        gates=frozenset({1}),
        bake_seconds=3.0,
        thresholds=Thresholds(min_requests=7, max_client_error_increase=0.05),
        shadow=ShadowSpec(share=0.5),
        progress_deadline_seconds=120.0,
        inconclusive_limit=4,
    )
    assert codec.canary_spec(json.loads(json.dumps(codec.spec_to_dict(spec)))) == spec
    ab = ExperimentSpec(weight=30, alpha=0.01)
    assert codec.experiment_spec(json.loads(json.dumps(codec.spec_to_dict(ab)))) == ab
    state, _ = canary.start(spec, 5.0)
    paused, _ = canary.pause(state)
    again = codec.state_from_dict(json.loads(json.dumps(codec.state_to_dict(paused))))
    assert again == paused and again.paused_phase is canary.Phase.SHADOWING
    # a state saved before the progress fields existed still loads, with their defaults
    # and its deadline clock starting at its last analysis (not at its start: a long
    # rollout must not end "failed" at its first analysis after an upgrade)
    old = codec.state_to_dict(replace(state, last_analysis_at=1200.0))
    for key in ("inconclusive_in_a_row", "progressed_at", "shadow_compared"):
        old.pop(key)
    loaded = codec.state_from_dict(old)
    assert loaded == replace(state, last_analysis_at=1200.0, progressed_at=1200.0)
    quiet_spec = CanarySpec(step_weights=(10, 100), interval_seconds=30.0)
    after, _ = canary.advance(
        quiet_spec, replace(loaded, phase=canary.Phase.PROGRESSING), None, 1230.0
    )
    assert after.phase is canary.Phase.PROGRESSING


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"failure_limt": 2}, "unknown canary settings: failure_limt"),
        ({"thresholds": {"max_error": 0.1}}, "unknown threshold settings: max_error"),
        ({"step_weights": ["a"]}, "step_weights must be integers"),
        ({"steps": [5.5, 100]}, "step_weights must be integers"),  # the old name
        ({"bake_seconds": None}, "bake_seconds must be a number, got None"),
        ({"steps": [5, 100], "step_weights": [5, 100]}, "steps and step_weights name the same"),
        ({"progress_deadline_seconds": "5m"}, "progress_deadline_seconds must be a number"),
        ({"inconclusive_limit": 2.5}, "inconclusive_limit must be an integer"),
        ({"interval_seconds": True}, "interval_seconds must be a number"),
        ({"thresholds": {"max_p99_ratio": "2"}}, "max_p99_ratio must be a number, got '2'"),
        ({"thresholds": {"max_p50_ratio": 0}}, "ratio limits must be positive"),
        ({"shadow": {"min_agreement": 1.0}}, "min_agreement"),
        ({"steps": [50, 20, 100]}, "rise strictly"),
        ({"shadow": {"share": 0.5, "agreement": 1}}, "unknown shadow settings: agreement"),
    ],
)
def test_bad_canary_settings_are_named(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        codec.canary_spec(data)


def test_bad_experiment_settings_are_named() -> None:
    with pytest.raises(InvalidInput, match="unknown experiment settings: arms"):
        codec.experiment_spec({"arms": 3})
    with pytest.raises(InvalidInput, match=r"weight must be an integer, got 50\.5"):
        codec.experiment_spec({"weight": 50.5})
    assert codec.canary_spec({"thresholds": {"max_drift_score": None}}).thresholds == Thresholds()


def test_settings_with_the_names_of_before_still_load() -> None:
    """Specs saved (or sent) before the CRD's vocabulary: each old name maps to one new."""
    old = {
        "steps": [10, 100],
        "interval_s": 5,
        "failure_threshold": 3,
        "max_unavailable": 4,
        "max_inconclusive": 6,
        "progress_deadline_s": 60,
        "bake_s": 2,
    }
    assert codec.canary_spec(old) == CanarySpec(
        step_weights=(10, 100),
        interval_seconds=5,
        failure_limit=3,
        consecutive_error_limit=4,
        inconclusive_limit=6,
        progress_deadline_seconds=60,
        bake_seconds=2,
    )
    assert codec.experiment_spec({"interval_s": 7, "max_duration_s": 70}) == ExperimentSpec(
        interval_seconds=7, max_duration_seconds=70
    )
    with pytest.raises(InvalidInput, match="interval_s and interval_seconds"):
        codec.experiment_spec({"interval_s": 7, "interval_seconds": 7})
