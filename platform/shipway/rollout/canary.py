"""The canary strategy as a pure state machine:
``advance(spec, state, observation, now) -> (state, actions)``.

No I/O and no clock: the controller passes the time and the interval's observation
in, and carries the actions out (through the Runtime and Router ports). The same
engine drives local mode and the Kubernetes operator.

Steps raise the candidate's weight (5, 25, 50, 100 by default). Each analysis
interval yields one verdict: PASSED counts towards the step, FAILED counts towards
the failure threshold (N failed analyses in a row roll back), INCONCLUSIVE changes
nothing (and never promotes). After 100 % the candidate is promoted, and checks go
on for the bake period: a breach then rolls back to the previous stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shipway.errors import Conflict, InvalidInput
from shipway.rollout.checks import Observation, Outcome, Thresholds, analyse
from shipway.rollout.state import Action, Phase, Promote, Record, Rollback, SetWeight, State

__all__ = ["Action", "CanarySpec", "Phase", "Promote", "Record", "Rollback", "SetWeight", "State"]


@dataclass(frozen=True)
class CanarySpec:
    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval_s: float = 30.0
    checks_per_step: int = 1  # passed analyses needed before the next step
    failure_threshold: int = 2  # failed analyses in a row that roll back
    gates: frozenset[int] = frozenset()  # step indices that wait for an approval first
    bake_s: float = 0.0
    # analyses in a row without metrics (the provider is down) before rolling back: the
    # canary cannot be judged, and holding it at its weight forever is not safe either
    max_unavailable: int = 5
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        if not self.steps or list(self.steps) != sorted(set(self.steps)):
            raise InvalidInput(f"steps must rise strictly, got {list(self.steps)}")
        if self.steps[0] <= 0 or self.steps[-1] != 100:
            raise InvalidInput("steps must be within 1..100 and end at 100")
        if min(self.checks_per_step, self.failure_threshold, self.max_unavailable) < 1:
            raise InvalidInput("checks per step, failure threshold, max unavailable must be >= 1")
        if self.interval_s <= 0:
            raise InvalidInput("the analysis interval must be positive")
        if any(not 0 <= g < len(self.steps) for g in self.gates):
            raise InvalidInput(f"gates must name step indices 0..{len(self.steps) - 1}")


def start(spec: CanarySpec, now: float) -> tuple[State, list[Action]]:
    if 0 in spec.gates:
        state = State(Phase.WAITING_GATE, 0, 0, now, now, reason="approval before 5 %")
        return state, [Record("rollout.waiting", state.reason, {"step": 0})]
    state = State(Phase.PROGRESSING, 0, spec.steps[0], now, now)
    return state, [
        SetWeight(spec.steps[0]),
        Record("rollout.step", f"weight {spec.steps[0]} %", {"step": 0}),
    ]


def advance(
    spec: CanarySpec, state: State, observation: Observation | None, now: float
) -> tuple[State, list[Action]]:
    """One tick. Analyses only once per interval; otherwise nothing changes.

    ``observation`` None means the metrics provider could not be read: that analysis is
    inconclusive, and ``max_unavailable`` of them in a row roll back.
    """
    if state.phase not in (Phase.PROGRESSING, Phase.BAKING):
        return state, []
    if now - state.last_analysis_at < spec.interval_s:
        return state, []
    state = replace(state, last_analysis_at=now)
    if observation is None:
        missing = state.unavailable_in_a_row + 1
        numbers: dict[str, object] = {"unavailable_in_a_row": missing}
        if missing >= spec.max_unavailable:
            return _roll_back(state, f"no metrics for {missing} analyses in a row", numbers)
        return replace(state, unavailable_in_a_row=missing), [
            Record("rollout.check-inconclusive", "metrics unavailable", numbers)
        ]
    state = replace(state, unavailable_in_a_row=0)
    outcome, checks = analyse(observation, spec.thresholds)
    numbers = {
        c.name: {"outcome": c.outcome.value, "value": c.value, "limit": c.limit} for c in checks
    }
    if outcome is Outcome.FAILED:
        failures = state.failures_in_a_row + 1
        failed = ", ".join(c.name for c in checks if c.outcome is Outcome.FAILED)
        if failures >= spec.failure_threshold:
            state = replace(state, failures_in_a_row=failures)
            return _roll_back(state, f"{failures} failed analyses in a row ({failed})", numbers)
        return replace(state, failures_in_a_row=failures), [
            Record("rollout.check-failed", failed, numbers)
        ]
    if outcome is Outcome.INCONCLUSIVE:
        return state, [Record("rollout.check-inconclusive", "not enough data", numbers)]

    state = replace(state, failures_in_a_row=0, passed_in_step=state.passed_in_step + 1)
    if state.phase is Phase.BAKING:
        if state.bake_until is not None and now >= state.bake_until:
            done = replace(state, phase=Phase.SUCCEEDED, reason="baked")
            return done, [Record("rollout.succeeded", "bake period passed", numbers)]
        return state, [Record("rollout.check-passed", "baking", numbers)]
    if state.passed_in_step < spec.checks_per_step:
        return state, [Record("rollout.check-passed", f"at {state.weight} %", numbers)]
    if state.step == len(spec.steps) - 1:
        return _promote(spec, state, now, "every step passed", numbers)
    return _next_step(spec, state, numbers)


def _roll_back(state: State, reason: str, numbers: dict[str, object]) -> tuple[State, list[Action]]:
    baking = state.phase is Phase.BAKING
    done = replace(state, phase=Phase.ROLLED_BACK, weight=0, reason=reason)
    return done, [
        SetWeight(0),
        Rollback(after_promotion=baking),
        Record("rollout.rolled-back", reason, numbers),
    ]


def _next_step(
    spec: CanarySpec, state: State, numbers: dict[str, object]
) -> tuple[State, list[Action]]:
    step = state.step + 1
    if step in spec.gates:
        waiting = replace(
            state,
            phase=Phase.WAITING_GATE,
            step=step,
            passed_in_step=0,
            reason=f"approval before {spec.steps[step]} %",
        )
        return waiting, [Record("rollout.waiting", waiting.reason, numbers)]
    moved = replace(state, step=step, weight=spec.steps[step], passed_in_step=0)
    return moved, [
        SetWeight(moved.weight),
        Record("rollout.step", f"weight {moved.weight} %", numbers),
    ]


def _promote(
    spec: CanarySpec, state: State, now: float, reason: str, numbers: dict[str, object]
) -> tuple[State, list[Action]]:
    if spec.bake_s > 0:
        baking = replace(
            state,
            phase=Phase.BAKING,
            weight=100,
            step=len(spec.steps) - 1,
            passed_in_step=0,
            bake_until=now + spec.bake_s,
            reason=reason,
        )
        return baking, [Promote(), Record("rollout.promoted", f"{reason}; baking", numbers)]
    done = replace(
        state, phase=Phase.SUCCEEDED, weight=100, step=len(spec.steps) - 1, reason=reason
    )
    return done, [Promote(), Record("rollout.promoted", reason, numbers)]


# ---- operations ---------------------------------------------------------------------


def approve(spec: CanarySpec, state: State, now: float) -> tuple[State, list[Action]]:
    if state.phase is not Phase.WAITING_GATE:
        raise Conflict(f"the rollout is {state.phase}, not waiting for an approval")
    moved = replace(
        state,
        phase=Phase.PROGRESSING,
        weight=spec.steps[state.step],
        last_analysis_at=now,
        reason="approved",
    )
    return moved, [
        SetWeight(moved.weight),
        Record("rollout.step", f"approved: {moved.weight} %", {}),
    ]


def pause(state: State) -> tuple[State, list[Action]]:
    if state.phase.finished or state.phase is Phase.PAUSED:
        raise Conflict(f"the rollout is {state.phase}; only a running rollout pauses")
    paused = replace(state, phase=Phase.PAUSED, paused_phase=state.phase, reason="paused")
    return paused, [Record("rollout.paused", "paused by an operator", {})]


def resume(state: State, now: float) -> tuple[State, list[Action]]:
    if state.phase is not Phase.PAUSED or state.paused_phase is None:
        raise Conflict(f"the rollout is {state.phase}, not paused")
    resumed = replace(
        state, phase=state.paused_phase, paused_phase=None, last_analysis_at=now, reason="resumed"
    )
    return resumed, [Record("rollout.resumed", "resumed by an operator", {})]


def promote_now(spec: CanarySpec, state: State, now: float) -> tuple[State, list[Action]]:
    if state.phase.finished or state.phase is Phase.BAKING:
        raise Conflict(f"the rollout is {state.phase}; there is nothing to promote")
    promoted, actions = _promote(spec, state, now, "promoted by an operator", {})
    return promoted, [SetWeight(100), *actions]


def abort(state: State) -> tuple[State, list[Action]]:
    if state.phase.finished:
        raise Conflict(f"the rollout already {state.phase}")
    after = state.phase is Phase.BAKING or (
        state.phase is Phase.PAUSED and state.paused_phase is Phase.BAKING
    )
    done = replace(state, phase=Phase.ROLLED_BACK, weight=0, reason="aborted by an operator")
    return done, [
        SetWeight(0),
        Rollback(after_promotion=after),
        Record("rollout.rolled-back", done.reason, {}),
    ]
