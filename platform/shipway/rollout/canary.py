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

A rollout that cannot be judged must not hang at a partial weight for ever: with no
progress (a passed analysis, a step, more mirrored answers compared) for
``progress_deadline_seconds`` — Argo Rollouts' ``progressDeadlineSeconds`` — or after
``inconclusive_limit`` inconclusive analyses in a row, it ends FAILED: the candidate is
taken out and stable serves as before. Paused and gated time does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shipway.errors import Conflict, InvalidInput
from shipway.rollout.checks import Observation, Outcome, Thresholds, analyse
from shipway.rollout.shadow import ShadowDecision, decide_shadow
from shipway.rollout.state import Action, Phase, Promote, Record, Rollback, SetWeight, State

__all__ = [
    "Action",
    "CanarySpec",
    "Phase",
    "Promote",
    "Record",
    "Rollback",
    "SetWeight",
    "ShadowSpec",
    "State",
]


DAY, WEEK = 86_400, 604_800  # seconds: bounds of intervals and of bakes/deadlines


@dataclass(frozen=True)
class ShadowSpec:
    """A shadow phase before the first step: ``share`` of requests mirrored to the
    candidate (its answers are not returned), until the agreement rate with stable's
    answers is known well enough to hand over, or to give up."""

    share: float = 1.0
    min_compared: int = 200  # rows compared before any decision
    # the share of rows that must agree (the lower Wilson bound must clear it): one
    # point below the gate's own top-1 bar (``min_top1``, 0.99), so a build at its
    # gate's limit hands over instead of sitting on the bar
    min_agreement: float = 0.98
    max_error_rate: float = 0.01
    # rows compared with no decision yet that end the shadow, rolled back (its agreement
    # sits at the bar); None: 10 x min_compared
    max_compared: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1 or not 0 < self.min_agreement < 1:
            raise InvalidInput("shadow share must be within (0, 1], min_agreement (0, 1)")
        if self.min_compared < 1 or not 0 <= self.max_error_rate <= 1:
            raise InvalidInput("shadow min_compared must be >= 1, max_error_rate within [0, 1]")
        if self.max_compared is not None and self.max_compared < self.min_compared:
            raise InvalidInput("shadow max_compared must be at least min_compared")

    @property
    def compared_limit(self) -> int:
        return self.max_compared if self.max_compared is not None else 10 * self.min_compared


@dataclass(frozen=True)
class CanarySpec:
    step_weights: tuple[int, ...] = (5, 25, 50, 100)
    interval_seconds: float = 30.0
    checks_per_step: int = 1  # passed analyses needed before the next step
    failure_limit: int = 2  # failed analyses in a row that roll back
    gates: frozenset[int] = frozenset()  # step indices that wait for an approval first
    bake_seconds: float = 0.0
    # analyses in a row without metrics (the provider is down) before rolling back: the
    # canary cannot be judged, and holding it at its weight forever is not safe either
    consecutive_error_limit: int = 5
    shadow: ShadowSpec | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    # seconds without progress before the rollout ends failed; None: 10 intervals
    progress_deadline_seconds: float | None = None
    inconclusive_limit: int = 10  # inconclusive analyses in a row that end it failed

    def __post_init__(self) -> None:
        if not self.step_weights or list(self.step_weights) != sorted(set(self.step_weights)):
            raise InvalidInput(f"step_weights must rise strictly, got {list(self.step_weights)}")
        if self.step_weights[0] <= 0 or self.step_weights[-1] != 100:
            raise InvalidInput("step_weights must be within 1..100 and end at 100")
        if min(self.checks_per_step, self.failure_limit, self.consecutive_error_limit) < 1:
            raise InvalidInput(
                "checks_per_step, failure_limit, consecutive_error_limit must be >= 1"
            )
        if not 0 < self.interval_seconds <= DAY or not 0 <= self.bake_seconds <= WEEK:
            raise InvalidInput(
                f"the analysis interval must be within (0, {DAY}] s, the bake within [0, {WEEK}] s"
            )
        if any(not 0 <= g < len(self.step_weights) for g in self.gates):
            raise InvalidInput(f"gates must name step indices 0..{len(self.step_weights) - 1}")
        if self.inconclusive_limit < 1:
            raise InvalidInput("inconclusive_limit must be >= 1")
        if self.progress_deadline_seconds is not None and self.progress_deadline_seconds > WEEK:
            raise InvalidInput(f"progress_deadline_seconds must be at most {WEEK} s (a week)")
        deadline = self.progress_deadline_seconds
        if deadline is not None and deadline < self.interval_seconds:
            raise InvalidInput(
                f"progress_deadline_seconds ({deadline}) must be at least one "
                f"analysis interval ({self.interval_seconds})"
            )

    @property
    def deadline_seconds(self) -> float:
        """The progress deadline in effect."""
        if self.progress_deadline_seconds is not None:
            return self.progress_deadline_seconds
        return DEADLINE_INTERVALS * self.interval_seconds


DEADLINE_INTERVALS = 10  # the default progress deadline, in analysis intervals


def start(spec: CanarySpec, now: float) -> tuple[State, list[Action]]:
    if spec.shadow is not None:
        state = State(Phase.SHADOWING, 0, 0, now, now, reason="shadowing")
        share = f"mirroring {spec.shadow.share:.0%} of requests"
        return state, [Record("rollout.shadowing", share, {})]
    return _first_step(spec, now, {})


def _first_step(
    spec: CanarySpec, now: float, numbers: dict[str, object], state: State | None = None
) -> tuple[State, list[Action]]:
    state = state or State(Phase.PROGRESSING, 0, 0, now, now)
    if 0 in spec.gates:
        reason = f"approval before {spec.step_weights[0]} %"
        waiting = replace(state, phase=Phase.WAITING_GATE, weight=0, reason=reason)
        return waiting, [Record("rollout.waiting", reason, {"step": 0, **numbers})]
    moved = replace(state, phase=Phase.PROGRESSING, weight=spec.step_weights[0], reason="")
    return moved, [
        SetWeight(spec.step_weights[0]),
        Record("rollout.step", f"weight {spec.step_weights[0]} %", {"step": 0, **numbers}),
    ]


def advance(
    spec: CanarySpec, state: State, observation: Observation | None, now: float
) -> tuple[State, list[Action]]:
    """One tick. Analyses only once per interval; otherwise nothing changes.

    ``observation`` None means the metrics provider could not be read: that analysis is
    inconclusive, and ``consecutive_error_limit`` of them in a row roll back.
    """
    if state.phase not in (Phase.SHADOWING, Phase.PROGRESSING, Phase.BAKING):
        return state, []
    if now - state.last_analysis_at < spec.interval_seconds:
        return state, []
    state = replace(state, last_analysis_at=now)
    if observation is None:
        missing = state.unavailable_in_a_row + 1
        numbers: dict[str, object] = {"unavailable_in_a_row": missing}
        if missing >= spec.consecutive_error_limit:
            return _roll_back(state, f"no metrics for {missing} analyses in a row", numbers)
        state = replace(state, unavailable_in_a_row=missing)
        return _stalled(
            spec, state, now, [Record("rollout.check-inconclusive", "metrics unavailable", numbers)]
        )
    state = replace(state, unavailable_in_a_row=0)
    if state.phase is Phase.SHADOWING:
        return _shadow_step(spec, state, observation, now)
    outcome, checks = analyse(observation, spec.thresholds)
    numbers = {
        c.name: {"outcome": c.outcome.value, "value": c.value, "limit": c.limit, "bound": c.bound}
        for c in checks
    }
    if outcome is Outcome.FAILED:
        failures = state.failures_in_a_row + 1
        failed = ", ".join(c.name for c in checks if c.outcome is Outcome.FAILED)
        state = replace(state, failures_in_a_row=failures, inconclusive_in_a_row=0)
        if failures >= spec.failure_limit:
            return _roll_back(state, f"{failures} failed analyses in a row ({failed})", numbers)
        return _stalled(spec, state, now, [Record("rollout.check-failed", failed, numbers)])
    if outcome is Outcome.INCONCLUSIVE:
        if state.phase is Phase.BAKING and state.bake_until is not None and now >= state.bake_until:
            # the candidate serves everything now: stable's yardstick may be gone, and
            # promotion is already done; the bake only had to see no failure
            done = replace(state, phase=Phase.SUCCEEDED, reason="baked (last check inconclusive)")
            return done, [Record("rollout.succeeded", done.reason, numbers)]
        waiting = ", ".join(c.name for c in checks if c.outcome is Outcome.INCONCLUSIVE)
        return _inconclusive(spec, state, now, f"not enough data ({waiting})", numbers)

    state = replace(
        state,
        failures_in_a_row=0,
        inconclusive_in_a_row=0,
        passed_in_step=state.passed_in_step + 1,
        progressed_at=now,
    )
    if state.phase is Phase.BAKING:
        if state.bake_until is not None and now >= state.bake_until:
            done = replace(state, phase=Phase.SUCCEEDED, reason="baked")
            return done, [Record("rollout.succeeded", "bake period passed", numbers)]
        return state, [Record("rollout.check-passed", "baking", numbers)]
    if state.passed_in_step < spec.checks_per_step:
        return state, [Record("rollout.check-passed", f"at {state.weight} %", numbers)]
    if state.step == len(spec.step_weights) - 1:
        return _promote(spec, state, now, "every step passed", numbers)
    return _next_step(spec, state, numbers)


def _shadow_step(
    spec: CanarySpec, state: State, observation: Observation, now: float
) -> tuple[State, list[Action]]:
    assert spec.shadow is not None
    counts = observation.shadow
    if counts is None:
        return _inconclusive(spec, state, now, "no shadow answers yet", {})
    verdict = decide_shadow(
        counts,
        spec.shadow.min_agreement,
        spec.shadow.min_compared,
        spec.shadow.max_error_rate,
        spec.shadow.compared_limit,
    )
    numbers: dict[str, object] = {
        "shadow": {
            "agree": counts.agree,
            "disagree": counts.disagree,
            "error": counts.error,
            "agreement": verdict.agreement,
            "low": verdict.low,
            "limit": spec.shadow.min_agreement,
        }
    }
    if verdict.decision is ShadowDecision.FAIL:
        return _roll_back(state, f"shadow: {verdict.reason}", numbers)
    if verdict.decision is ShadowDecision.CONTINUE:
        total = counts.agree + counts.disagree + counts.error
        if total <= state.shadow_compared:  # nothing new was mirrored since the last look
            return _inconclusive(spec, state, now, f"shadow: {verdict.reason}", numbers)
        state = replace(state, shadow_compared=total, inconclusive_in_a_row=0, progressed_at=now)
        return state, [Record("rollout.shadow-check", verdict.reason, numbers)]
    state = replace(state, inconclusive_in_a_row=0, progressed_at=now)
    moved, actions = _first_step(spec, now, numbers, state)
    return moved, [Record("rollout.handed-over", verdict.reason, numbers), *actions]


def _inconclusive(
    spec: CanarySpec, state: State, now: float, reason: str, numbers: dict[str, object]
) -> tuple[State, list[Action]]:
    """An analysis without enough data: counted, and ``inconclusive_limit`` in a row end
    the rollout (not while baking: promotion is done, the bake ends by its clock)."""
    count = state.inconclusive_in_a_row + 1
    state = replace(state, inconclusive_in_a_row=count)
    numbers = {**numbers, "inconclusive_in_a_row": count}
    if state.phase is not Phase.BAKING and count >= spec.inconclusive_limit:
        return _fail(state, f"{count} inconclusive analyses in a row: {reason}", numbers)
    return _stalled(spec, state, now, [Record("rollout.check-inconclusive", reason, numbers)])


def _stalled(
    spec: CanarySpec, state: State, now: float, actions: list[Action]
) -> tuple[State, list[Action]]:
    """After an analysis that did not move the rollout forward: past the progress
    deadline, it ends failed."""
    since = state.started_at if state.progressed_at is None else state.progressed_at
    if state.phase is Phase.BAKING or now - since < spec.deadline_seconds:
        return state, actions
    reason = f"no progress for {now - since:.0f}s (progress deadline {spec.deadline_seconds:.0f}s)"
    last = next((a for a in reversed(actions) if isinstance(a, Record)), None)
    return _fail(state, reason, dict(last.details) if last else {})


def _fail(state: State, reason: str, numbers: dict[str, object]) -> tuple[State, list[Action]]:
    done = replace(state, phase=Phase.FAILED, weight=0, reason=reason)
    return done, [SetWeight(0), Rollback(), Record("rollout.failed", reason, numbers)]


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
            reason=f"approval before {spec.step_weights[step]} %",
        )
        return waiting, [Record("rollout.waiting", waiting.reason, numbers)]
    moved = replace(state, step=step, weight=spec.step_weights[step], passed_in_step=0)
    return moved, [
        SetWeight(moved.weight),
        Record("rollout.step", f"weight {moved.weight} %", numbers),
    ]


def _promote(
    spec: CanarySpec, state: State, now: float, reason: str, numbers: dict[str, object]
) -> tuple[State, list[Action]]:
    if spec.bake_seconds > 0:
        baking = replace(
            state,
            phase=Phase.BAKING,
            weight=100,
            step=len(spec.step_weights) - 1,
            passed_in_step=0,
            bake_until=now + spec.bake_seconds,
            reason=reason,
        )
        return baking, [Promote(), Record("rollout.promoted", f"{reason}; baking", numbers)]
    done = replace(
        state, phase=Phase.SUCCEEDED, weight=100, step=len(spec.step_weights) - 1, reason=reason
    )
    return done, [Promote(), Record("rollout.promoted", reason, numbers)]


# ---- operations ---------------------------------------------------------------------


def approve(spec: CanarySpec, state: State, now: float) -> tuple[State, list[Action]]:
    if state.phase is not Phase.WAITING_GATE:
        raise Conflict(f"the rollout is {state.phase}, not waiting for an approval")
    moved = replace(
        state,
        phase=Phase.PROGRESSING,
        weight=spec.step_weights[state.step],
        last_analysis_at=now,
        progressed_at=now,
        inconclusive_in_a_row=0,
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
        state,
        phase=state.paused_phase,
        paused_phase=None,
        last_analysis_at=now,
        progressed_at=now,  # paused time does not count towards the deadline
        inconclusive_in_a_row=0,
        reason="resumed",
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
