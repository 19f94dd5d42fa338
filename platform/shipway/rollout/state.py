"""What every strategy shares: the phases of a rollout, its persisted state, and the
actions the engine asks the controller to carry out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    # placed, waiting for the candidate's replicas; no traffic yet, no engine state
    INITIALIZING = "initializing"
    SHADOWING = "shadowing"  # mirrored traffic only, answers compared with stable's
    PROGRESSING = "progressing"
    WAITING_GATE = "waiting-gate"  # a manual approval before the next step
    PAUSED = "paused"
    BAKING = "baking"  # promoted; still watched
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled-back"  # a check failed, or an operator aborted: stable serves
    # no progress (the progress deadline, or too many inconclusive analyses in a row):
    # the candidate could not be judged, so it is taken out; stable serves as before
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


@dataclass(frozen=True)
class State:
    phase: Phase
    step: int  # index into spec.step_weights
    weight: int  # candidate's share of live traffic
    started_at: float
    last_analysis_at: float
    passed_in_step: int = 0
    failures_in_a_row: int = 0
    unavailable_in_a_row: int = 0
    inconclusive_in_a_row: int = 0  # analyses with too little data, in a row
    # the last time the rollout moved forward (a passed analysis, a step, more mirrored
    # answers compared, an approval or a resume); None: since it started
    progressed_at: float | None = None
    shadow_compared: int = 0  # mirrored answers compared at the last shadow analysis
    bake_until: float | None = None
    paused_phase: Phase | None = None
    reason: str = ""
    winner: str | None = None  # an experiment's decision: the arm that serves on


# ---- actions: what the controller must carry out ---------------------------------


@dataclass(frozen=True)
class SetWeight:
    weight: int  # the candidate's percent; stable gets the rest


@dataclass(frozen=True)
class Promote:
    """The candidate becomes stable (its replicas take all traffic; the old go)."""


@dataclass(frozen=True)
class Rollback:
    """Back to the stable of before: weight 0, the candidate's replicas removed; after
    a promotion, the previous stable build is restored."""

    after_promotion: bool = False


@dataclass(frozen=True)
class Record:
    """A transition to persist and audit, with its reason and the numbers."""

    event: str
    reason: str
    details: dict[str, object]


Action = SetWeight | Promote | Rollback | Record
