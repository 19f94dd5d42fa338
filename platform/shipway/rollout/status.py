"""A rollout's whole memory, as one serialisable object.

``RolloutStatus`` is everything the controller needs to go on after a restart: which
builds, the engine's state, the metric readings each analysis is taken against, and
how far the world was converged. Locally it is one JSON column of the ``rollouts``
row; on Kubernetes ``.status.rollout`` of the ModelDeployment. ``to_dict`` gives plain
JSON types (str, int, float, bool, None, lists, dicts) with snake_case keys, and a
schema ``version``: ``from_dict`` refuses a newer version than it knows rather than
misread it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shipway.errors import InvalidInput
from shipway.rollout import codec, counts
from shipway.rollout.state import Phase, State

STATUS_VERSION = 1
STABLE = "stable"  # the variant that serves before and after a rollout
RUNNING = (Phase.SHADOWING, Phase.PROGRESSING, Phase.BAKING)  # phases that analyse


@dataclass(frozen=True)
class Counters:
    """The metrics provider's readings, so each analysis judges its own interval.

    Totals grow interval by interval, each increase taken against the reading just
    before it, so a provider restart (its counters back at zero) costs one interval's
    precision, not the whole rollout's arithmetic."""

    last: counts.Snapshot | None = None  # the previous reading; None: none yet
    total: counts.Snapshot = field(default_factory=dict)  # increases since it began
    # stable's counters when the rollout began: with ``total``, the 4xx yardstick for
    # intervals in which stable served too little alongside
    before: counts.Snapshot = field(default_factory=dict)

    def accumulate(self, snapshot: counts.Snapshot) -> tuple[Counters, counts.Snapshot]:
        """The counters after ``snapshot``, and the increase since the last reading
        (empty at the first reading, which only sets the baseline)."""
        if self.last is None:
            return replace(self, last=snapshot, total={}), {}
        interval = counts.increase(snapshot, self.last)
        return replace(self, last=snapshot, total=counts.add(self.total, interval)), interval

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "total": counts.snapshot_to_dict(self.total),
            "before": counts.snapshot_to_dict(self.before),
        }
        if self.last is not None:
            data["last"] = counts.snapshot_to_dict(self.last)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Counters:
        data = data or {}
        last = counts.snapshot_from_dict(data["last"]) if "last" in data else None
        return cls(
            last,
            counts.snapshot_from_dict(data.get("total")),
            counts.snapshot_from_dict(data.get("before")),
        )


@dataclass(frozen=True)
class RolloutStatus:
    """One rollout of ``candidate_build`` against ``stable_build``.

    ``phase`` is the engine state's phase once begun (``state`` None while
    initializing: the candidate's replicas are starting). ``converged`` is the
    ``"<phase>:<weight>"`` the ports were last brought to; ``finished`` is set once a
    final phase is converged (the rollout no longer owns the deployment's routing).
    Times are Unix epoch seconds."""

    strategy: str  # "canary" | "experiment"
    variant: str  # the candidate's variant ("canary" or "challenger")
    candidate_build: str
    stable_build: str
    created_at: float  # the candidate's start timeout counts from here
    phase: Phase = Phase.INITIALIZING
    state: State | None = None
    counters: Counters = field(default_factory=Counters)
    converged: str | None = None
    finished: bool = False
    version: int = STATUS_VERSION

    @property
    def weight(self) -> int:
        """The candidate's share of live traffic, percent."""
        return self.state.weight if self.state is not None else 0

    @property
    def step(self) -> int:
        return self.state.step if self.state is not None else 0

    @property
    def reason(self) -> str:
        return self.state.reason if self.state is not None else ""

    @property
    def winner(self) -> str | None:
        return self.state.winner if self.state is not None else None

    @property
    def target(self) -> str:
        """What converging means now: this phase at this weight."""
        return f"{self.phase}:{self.weight}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "strategy": self.strategy,
            "variant": self.variant,
            "candidate_build": self.candidate_build,
            "stable_build": self.stable_build,
            "created_at": self.created_at,
            "phase": self.phase.value,
            "state": None if self.state is None else codec.state_to_dict(self.state),
            "counters": self.counters.to_dict(),
            "converged": self.converged,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutStatus:
        """Raises ``InvalidInput`` for a status this code cannot read (a newer schema
        version, a missing field), never half-reads one."""
        if not isinstance(data, dict):
            raise InvalidInput(f"a rollout status must be an object, got {type(data).__name__}")
        version = data.get("version")
        if not isinstance(version, int) or not 1 <= version <= STATUS_VERSION:
            raise InvalidInput(
                f"rollout status version {version!r} is not one this Shipway reads "
                f"(1..{STATUS_VERSION})"
            )
        try:
            state = data.get("state")
            return cls(
                strategy=str(data["strategy"]),
                variant=str(data["variant"]),
                candidate_build=str(data["candidate_build"]),
                stable_build=str(data["stable_build"]),
                created_at=float(data["created_at"]),
                phase=Phase(data["phase"]),
                state=None if state is None else codec.state_from_dict(state),
                counters=Counters.from_dict(data.get("counters")),
                converged=data.get("converged"),
                finished=bool(data.get("finished", False)),
                version=STATUS_VERSION,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"unreadable rollout status: {exc!r}") from exc
