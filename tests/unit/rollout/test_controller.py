"""The rollout controller against the in-memory ports (held to the same contract as the
real adapters in test_port_contracts.py): every pass explicit, the clock and the
traffic in the test's hands, the status serialised through JSON between passes as
the store and the custom resource keep it."""

from __future__ import annotations

import json

import pytest

from shipway.errors import Conflict, InvalidInput
from shipway.rollout.canary import CanarySpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.controller import Controller, Event, Result, new_status
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.state import Phase
from shipway.rollout.status import STABLE, RolloutStatus
from shipway.rollout.testing import FakePorts

SPEC = CanarySpec(
    step_weights=(20, 50, 100), interval_seconds=10.0, thresholds=Thresholds(min_requests=50)
)
T0 = 1000.0


def stored(status: RolloutStatus) -> RolloutStatus:
    """Through JSON and back, as every save and load does."""
    return RolloutStatus.from_dict(json.loads(json.dumps(status.to_dict())))


class Store:
    """What the controller asked to be saved, each status through JSON; ``world`` the
    port calls already made when each save happened."""

    def __init__(self, calls: list | None = None) -> None:
        self.saved: list[tuple[RolloutStatus, list[str]]] = []
        self.calls = calls
        self.calls_at_save: list[int] = []

    def __call__(self, status: RolloutStatus, events: list[Event]) -> None:
        self.saved.append((stored(status), [e.event for e in events]))
        if self.calls is not None:
            self.calls_at_save.append(len(self.calls))


class Rollout:
    """One rollout of build c1 on deployment web (stable s1), its status kept as JSON."""

    def __init__(self, spec: CanarySpec | ExperimentSpec = SPEC, strategy: str = "canary"):
        self.fakes = FakePorts()
        self.fakes.world.create("web", "s1")
        self.spec = spec
        self.controller = Controller(self.fakes.ports, start_timeout_seconds=300.0)
        self.status = new_status(strategy, "c1", "s1", T0)
        self.events: list[str] = []
        self.store = Store()

    def keep(self, result: Result) -> Result:
        """The status as the store holds it: the last one saved is the one returned."""
        if self.store.saved:
            assert self.store.saved[-1][0] == stored(result.status)
        self.status = stored(result.status)
        self.events += [e.event for e in result.events]
        return result

    def tick(self, now: float) -> Result:
        return self.keep(self.controller.reconcile("web", self.spec, self.status, now, self.store))

    def operate(self, operation: str, now: float) -> Result:
        return self.keep(
            self.controller.operate(
                "web", self.spec, self.status, operation, "alice", now, self.store
            )
        )

    def traffic(self, stable: int, candidate: int, errors: int = 0) -> None:
        self.fakes.metrics.add("web", STABLE, stable)
        self.fakes.metrics.add("web", self.status.variant, candidate, errors=errors)

    @property
    def weights(self) -> dict[str, int]:
        return self.fakes.world.weights("web")


def begun(spec: CanarySpec | ExperimentSpec = SPEC, strategy: str = "canary") -> Rollout:
    rollout = Rollout(spec, strategy)
    rollout.tick(T0)  # placed
    rollout.fakes.world.serve("web", rollout.status.variant, "c1")
    rollout.tick(T0 + 1)  # begun
    return rollout


def test_begin_steps_promote_and_finish() -> None:
    rollout = Rollout()
    first = rollout.tick(T0)
    assert rollout.status.phase is Phase.INITIALIZING and rollout.weights == {
        STABLE: 100,
        "canary": 0,
    }
    assert first.requeue_after == rollout.controller.poll_seconds  # waiting on replicas
    assert rollout.fakes.aliases.aliases == {"candidate": "c1"}
    rollout.tick(T0 + 0.5)  # not ready yet: nothing moves
    assert rollout.status.phase is Phase.INITIALIZING
    rollout.fakes.world.serve("web", "canary", "c1")
    begun = rollout.tick(T0 + 1)
    assert rollout.status.phase is Phase.PROGRESSING and rollout.weights["canary"] == 20
    assert begun.requeue_after == 10.0  # the first analysis, one interval on

    rollout.traffic(400, 100)
    assert rollout.tick(T0 + 5).requeue_after == 6.0  # early: nothing analysed
    assert rollout.weights["canary"] == 20
    rollout.tick(T0 + 11)
    assert rollout.weights == {STABLE: 50, "canary": 50}
    rollout.traffic(400, 100)
    rollout.tick(T0 + 21)
    assert rollout.weights == {STABLE: 0, "canary": 100}
    rollout.traffic(0, 500)
    waiting = rollout.tick(T0 + 31)  # promoted: stable moves to the candidate
    assert rollout.status.phase is Phase.SUCCEEDED and not rollout.status.finished
    assert rollout.fakes.world.build("web", STABLE) == "c1"
    assert rollout.weights == {STABLE: 0, "canary": 100}  # until the new stable serves
    assert waiting.requeue_after == rollout.controller.poll_seconds
    rollout.fakes.world.serve("web", STABLE, "c1")
    done = rollout.tick(T0 + 32)
    assert rollout.status.finished and done.requeue_after is None
    assert rollout.weights == {STABLE: 100}
    assert rollout.fakes.aliases.aliases == {"production": "c1"}
    assert rollout.events == [
        "rollout.step",
        "rollout.step",
        "rollout.step",
        "rollout.promoted",
        "rollout.finished",
    ]
    calls = len(rollout.fakes.world.calls)
    assert rollout.tick(T0 + 100).requeue_after is None  # finished: nothing to do
    assert len(rollout.fakes.world.calls) == calls


def test_failed_checks_roll_back_to_stable() -> None:
    rollout = begun()
    for second in (11, 21):
        rollout.traffic(400, 100, errors=30)
        rollout.tick(T0 + second)
    assert rollout.status.phase is Phase.ROLLED_BACK and rollout.status.finished
    assert "2 failed analyses in a row (error_rate)" in rollout.status.reason
    assert rollout.weights == {STABLE: 100}
    assert rollout.fakes.world.build("web", STABLE) == "s1"
    assert rollout.fakes.aliases.aliases == {"production": "s1"}
    assert rollout.events[-3:] == [
        "rollout.check-failed",
        "rollout.rolled-back",
        "rollout.finished",
    ]


def test_no_progress_by_the_deadline_ends_failed_with_stable_untouched() -> None:
    spec = CanarySpec(
        step_weights=(20, 100),
        interval_seconds=10.0,
        progress_deadline_seconds=30.0,
        thresholds=Thresholds(min_requests=50),
    )
    rollout = begun(spec)
    for second in (11, 21):  # too few requests: inconclusive, never progress
        rollout.traffic(400, 5)
        rollout.tick(T0 + second)
    assert rollout.status.phase is Phase.PROGRESSING and rollout.weights["canary"] == 20
    rollout.tick(T0 + 31)  # 30 s since it began, without progress
    assert rollout.status.phase is Phase.FAILED and rollout.status.finished
    assert "progress deadline 30s" in rollout.status.reason
    assert rollout.weights == {STABLE: 100} and rollout.fakes.world.build("web", STABLE) == "s1"
    assert rollout.events[-2:] == ["rollout.failed", "rollout.finished"]


def test_a_candidate_never_ready_fails_after_the_start_timeout_having_served_nothing() -> None:
    rollout = Rollout()
    rollout.tick(T0)
    rollout.tick(T0 + 300)
    assert rollout.status.phase is Phase.INITIALIZING
    rollout.tick(T0 + 301)
    assert rollout.status.phase is Phase.FAILED and rollout.status.finished
    assert "not ready after 300s" in rollout.status.reason
    assert rollout.weights == {STABLE: 100}
    assert not any(name == "set_weights" and args[1].get("canary") for name, args in
                   rollout.fakes.world.calls)  # fmt: skip


def test_a_restart_from_the_saved_status_repeats_no_step() -> None:
    rollout = begun()
    rollout.traffic(400, 100)
    rollout.tick(T0 + 11)  # 50 %
    saved = json.dumps(rollout.status.to_dict())

    # a new process: new controller, the status as saved, the same world
    again = Controller(rollout.fakes.ports)
    status = RolloutStatus.from_dict(json.loads(saved))
    rollout.fakes.world.calls.clear()
    early = again.reconcile("web", SPEC, status, T0 + 15, Store())
    assert early.events == [] and rollout.fakes.world.calls == []  # converged: no call
    assert early.status == status and early.requeue_after == 6.0
    rollout.traffic(400, 100)
    late = again.reconcile("web", SPEC, status, T0 + 21, Store())
    assert [(e.event, e.reason) for e in late.events] == [("rollout.step", "weight 100 %")]
    weights = [
        args[1]["canary"] for name, args in rollout.fakes.world.calls if name == "set_weights"
    ]
    assert weights == [100]  # straight on from 50 %, nothing done twice

    # the counters survived too: the analysis judged only the interval since 11 s
    check = next(e for e in late.events if e.event == "rollout.step")
    assert check.details["numbers"]["requests"]["value"] == 100.0


def test_operations_and_what_they_refuse() -> None:
    rollout = Rollout()
    rollout.tick(T0)
    with pytest.raises(Conflict, match="still starting"):
        rollout.operate("pause", T0 + 1)
    with pytest.raises(InvalidInput, match="operation must be one of"):
        rollout.operate("explode", T0 + 1)

    rollout = begun()
    paused = rollout.operate("pause", T0 + 2)
    assert rollout.status.phase is Phase.PAUSED and paused.requeue_after is None
    assert rollout.tick(T0 + 50).events == []  # paused: no analysis
    rollout.traffic(400, 100)  # before the resume: not judged after it
    resumed = rollout.operate("resume", T0 + 60)
    assert resumed.requeue_after == 10.0
    rollout.tick(T0 + 70)
    assert rollout.events[-1] == "rollout.check-inconclusive"  # no traffic since the resume
    aborted = rollout.operate("abort", T0 + 71)
    assert aborted.events[0].actor == "alice" and rollout.status.finished
    assert rollout.weights == {STABLE: 100}
    with pytest.raises(Conflict, match="already rolled-back"):
        rollout.operate("abort", T0 + 72)


def test_aborting_while_starting_takes_the_candidate_out() -> None:
    rollout = Rollout()
    rollout.tick(T0)
    assert rollout.weights == {STABLE: 100, "canary": 0}
    rollout.operate("abort", T0 + 1)
    assert rollout.status.phase is Phase.ROLLED_BACK and rollout.status.finished
    assert rollout.weights == {STABLE: 100}
    assert rollout.status.reason == "aborted by an operator"


def test_a_shadow_phase_mirrors_then_hands_over() -> None:
    from shipway.rollout.canary import ShadowSpec

    spec = CanarySpec(
        step_weights=(50, 100),
        interval_seconds=10.0,
        shadow=ShadowSpec(share=0.5, min_compared=100),
        thresholds=Thresholds(min_requests=50),
    )
    rollout = begun(spec)
    assert rollout.status.phase is Phase.SHADOWING
    variants = rollout.fakes.world.deployments["web"].variants
    assert (variants["canary"].weight, variants["canary"].shadow_share) == (0, 0.5)
    rollout.fakes.metrics.mirror("web", "canary", agree=1000)
    rollout.tick(T0 + 11)
    assert rollout.status.phase is Phase.PROGRESSING
    assert (variants["canary"].weight, variants["canary"].shadow_share) == (50, 0.0)


def test_an_experiment_splits_sticky_and_decides() -> None:
    spec = ExperimentSpec(weight=50, interval_seconds=10.0, min_requests=200)
    rollout = begun(spec, "experiment")
    assert rollout.status.variant == "challenger"
    assert rollout.fakes.world.deployments["web"].sticky
    assert rollout.weights == {STABLE: 50, "challenger": 50}
    rollout.traffic(300, 300, errors=40)
    rollout.tick(T0 + 11)
    assert rollout.status.phase is Phase.ROLLED_BACK and rollout.status.winner == STABLE
    assert rollout.status.finished and not rollout.fakes.world.deployments["web"].sticky
    assert rollout.weights == {STABLE: 100}


def test_a_port_failing_while_converging_keeps_the_decision_and_retries() -> None:
    rollout = begun()
    rollout.traffic(400, 100)
    router = rollout.controller.ports.router
    broken = Controller(
        type(rollout.controller.ports)(  # the same ports, but a router that fails
            _Failing(router),
            rollout.controller.ports.placement,
            rollout.controller.ports.metrics,
            rollout.controller.ports.aliases,
        )
    )
    result = broken.reconcile("web", SPEC, rollout.status, T0 + 11, Store())
    assert isinstance(result.error, OSError) and result.requeue_after == broken.poll_seconds
    assert result.status.weight == 50 and result.status.converged != result.status.target
    assert rollout.weights["canary"] == 20  # not carried out yet
    retried = rollout.controller.reconcile("web", SPEC, stored(result.status), T0 + 12, Store())
    assert retried.error is None and retried.events == []  # no second analysis
    assert rollout.weights == {STABLE: 50, "canary": 50}


def test_a_step_not_carried_out_is_never_stepped_past() -> None:
    """Down longer than an interval after deciding 50 %: the next pass carries out 50 %
    and analyses nothing; the interval restarts there, so the step after is judged on
    traffic served at 50 %, not at 20 %."""
    rollout = begun()
    rollout.traffic(400, 100)
    router = rollout.controller.ports.router
    broken = Controller(
        type(rollout.controller.ports)(
            _Failing(router),
            rollout.controller.ports.placement,
            rollout.controller.ports.metrics,
            rollout.controller.ports.aliases,
        )
    )
    decided = broken.reconcile("web", SPEC, rollout.status, T0 + 11, Store()).status
    assert decided.weight == 50 and rollout.weights["canary"] == 20
    rollout.traffic(400, 100)  # served at 20 % meanwhile
    later = rollout.controller.reconcile("web", SPEC, stored(decided), T0 + 40, Store())
    assert later.events == [] and later.status.weight == 50  # no analysis past 50 %
    assert rollout.weights == {STABLE: 50, "canary": 50}
    assert later.status.state is not None and later.status.state.last_analysis_at == T0 + 40
    assert later.requeue_after == SPEC.interval_seconds
    # the next analysis judges only traffic since 40 s: none yet, so it waits
    quiet = rollout.controller.reconcile("web", SPEC, stored(later.status), T0 + 51, Store())
    assert [e.event for e in quiet.events] == ["rollout.check-inconclusive"]
    assert quiet.status.weight == 50


WRITES = {"place", "remove", "make_stable", "set_weights", "set_split", "set_shadow"}


def _writes(calls: list) -> list:
    return [c for c in calls if c[0] in WRITES]


def test_a_decision_is_saved_before_any_port_changes_the_world() -> None:
    """Decide, save, act: a crash between acting and saving would let a restart decide
    again from a later reading (here: a rollback undone by a step)."""
    spec = CanarySpec(
        step_weights=(20, 50, 100),
        interval_seconds=10.0,
        failure_limit=1,
        thresholds=Thresholds(min_requests=50),
    )
    rollout = begun(spec)
    calls = rollout.fakes.world.calls
    rollout.traffic(100, 100, errors=60)  # the canary fails: roll back

    # the save fails (the store is down): nothing is carried out
    def down(status: RolloutStatus, events: list[Event]) -> None:
        raise OSError("store unreachable")

    calls.clear()
    with pytest.raises(OSError):
        rollout.controller.reconcile("web", spec, rollout.status, T0 + 11, down)
    assert _writes(calls) == []
    assert rollout.weights["canary"] == 20

    # saved, then the process dies before converging: the restart converges the saved
    # decision, and decides nothing new even with healthy traffic since
    store = Store(calls)
    calls.clear()

    class Died(Exception):
        pass

    def dies(status: RolloutStatus, events: list[Event]) -> None:
        store(status, events)
        raise Died

    with pytest.raises(Died):
        rollout.controller.reconcile("web", spec, rollout.status, T0 + 11, dies)
    saved, events = store.saved[0]
    assert saved.phase is Phase.ROLLED_BACK and "rollout.rolled-back" in events
    assert _writes(calls) == []  # nothing done before the save
    rollout.traffic(400, 100)  # healthy since
    again = Store(calls)
    result = Controller(rollout.fakes.ports).reconcile("web", spec, saved, T0 + 30, again)
    assert result.status.phase is Phase.ROLLED_BACK and result.status.finished
    assert ("remove", ("web", "canary")) in [(c[0], c[1][:2]) for c in _writes(calls)]
    assert [e for _, evs in again.saved for e in evs] == ["rollout.finished"]


class _Failing:
    def __init__(self, router: object) -> None:
        self.router = router

    def set_weights(self, deployment: str, weights: dict[str, int]) -> None:
        raise OSError("router unreachable")

    def set_split(self, deployment: str, sticky: bool, header: str | None = None) -> None:
        raise OSError("router unreachable")

    def set_shadow(self, deployment: str, variant: str, share: float) -> None:
        raise OSError("router unreachable")


def test_a_status_round_trips_and_a_newer_one_is_refused() -> None:
    rollout = begun()
    rollout.traffic(400, 100)
    rollout.tick(T0 + 11)
    data = rollout.status.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    assert RolloutStatus.from_dict(data) == rollout.status
    assert data["version"] == 1 and data["phase"] == "progressing"
    with pytest.raises(InvalidInput, match="version 2 is not one this Shipway reads"):
        RolloutStatus.from_dict({**data, "version": 2})
    with pytest.raises(InvalidInput, match="unreadable rollout status"):
        RolloutStatus.from_dict({k: v for k, v in data.items() if k != "variant"})
