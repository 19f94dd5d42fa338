"""Rollout operations on Kubernetes are the resource's annotations, declarative and
idempotent (``rollouts.wanted_operation``), pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shipway.rollout.controller import new_status
from shipway.rollout.state import Phase, State
from shipway.rollout.status import RolloutStatus
from shipway_operator.rollouts import (
    ANNOTATION_ABORT,
    ANNOTATION_APPROVED_STEP,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    wanted_operation,
)


def _at(phase: Phase, step: int = 1, finished: bool = False) -> RolloutStatus:
    status = new_status("canary", "b-2", "b-1", 0.0)
    state = State(phase, step, 25, 0.0, 0.0)
    if phase is Phase.PAUSED:
        state = replace(state, paused_phase=Phase.PROGRESSING)
    return replace(status, state=state, phase=phase, finished=finished)


def test_no_annotation_asks_nothing() -> None:
    assert wanted_operation({}, _at(Phase.PROGRESSING)) is None


@pytest.mark.parametrize(
    ("annotations", "phase", "wanted"),
    [
        ({ANNOTATION_PAUSED: "true"}, Phase.PROGRESSING, "pause"),
        ({ANNOTATION_PAUSED: "True "}, Phase.BAKING, "pause"),
        ({ANNOTATION_PAUSED: "true"}, Phase.PAUSED, None),  # already: idempotent
        ({ANNOTATION_PAUSED: "false"}, Phase.PAUSED, "resume"),
        ({}, Phase.PAUSED, "resume"),  # the annotation removed: resume
        ({ANNOTATION_APPROVED_STEP: "1"}, Phase.WAITING_GATE, "approve"),
        ({ANNOTATION_APPROVED_STEP: "3"}, Phase.WAITING_GATE, "approve"),
        ({ANNOTATION_APPROVED_STEP: "0"}, Phase.WAITING_GATE, None),  # an earlier gate's
        ({ANNOTATION_APPROVED_STEP: "one"}, Phase.WAITING_GATE, None),
        ({ANNOTATION_APPROVED_STEP: "1"}, Phase.PROGRESSING, None),  # no gate waiting
        ({ANNOTATION_PROMOTE: "b-2"}, Phase.PROGRESSING, "promote"),
        ({ANNOTATION_PROMOTE: "b-9"}, Phase.PROGRESSING, None),  # another build's
        ({ANNOTATION_PROMOTE: "b-2"}, Phase.BAKING, None),  # promoted already
        ({ANNOTATION_ABORT: "b-2"}, Phase.BAKING, "abort"),
        ({ANNOTATION_ABORT: "b-9"}, Phase.PROGRESSING, None),
        ({ANNOTATION_ABORT: "b-2", ANNOTATION_PROMOTE: "b-2"}, Phase.PROGRESSING, "abort"),
    ],
)
def test_each_annotation_asks_its_operation_only_where_it_applies(
    annotations: dict[str, str], phase: Phase, wanted: str | None
) -> None:
    assert wanted_operation(annotations, _at(phase)) == wanted


def test_a_finished_rollout_asks_nothing_and_a_starting_one_only_an_abort() -> None:
    assert (
        wanted_operation({ANNOTATION_ABORT: "b-2"}, _at(Phase.ROLLED_BACK, finished=True)) is None
    )
    starting = new_status("canary", "b-2", "b-1", 0.0)
    assert wanted_operation({ANNOTATION_ABORT: "b-2"}, starting) == "abort"
    assert wanted_operation({ANNOTATION_PAUSED: "true"}, starting) is None
