"""The shared rollout controller's ``RolloutStatus`` as ``.status.rollout`` of a
ModelDeployment, in Kubernetes API conventions, and back (pure).

``RolloutStatus.to_dict`` is the engine's own storage form (snake_case keys, Unix epoch
seconds, kebab-case phases, the candidate's variant named ``canary`` or ``challenger``);
the local store keeps it as it is. On the resource the same record reads as every other
status field does:

- keys in camelCase, recursively for the record's own fields (``state``, ``counters``
  and each variant's counts); ``candidate_build``/``stable_build`` become
  ``candidateBuildID``/``stableBuildID`` (plain ids: the resource's top-level
  ``candidateBuild``/``stableBuild`` objects say where a build is, not repeated here);
- times (``createdAt``, ``state.startedAt``, ``lastAnalysisAt``, ``progressedAt``,
  ``bakeUntil``) as RFC 3339 UTC strings, with the fraction of a second written out in
  full so that reading them back gives the very same float;
- phases (``phase``, ``state.phase``, ``state.pausedPhase``, the phase in ``converged``)
  in CamelCase (``WaitingGate``, ``RolledBack``), as Kubernetes enums are;
- the candidate's variant as ``candidate`` (the operator's name for it: the
  ``<name>-candidate`` objects), also as a key of ``counters`` and as ``state.winner``.
  The engine's name follows from the strategy (``canary`` -> ``canary``, ``experiment``
  -> ``challenger``); it is written (``engineVariant``) only if it does not;
- optional fields that are unset are left out (a merge patch would drop a null anyway).

Why the record keeps its own build ids although the resource has ``stableBuild`` and
``candidateBuild``: the record's are the builds *at the rollout's start*, which it
needs after a promotion has moved the resource's ``stableBuild`` (a rollback restores
the previous stable), and the record must read back on its own.

``from_resource(to_resource(s)) == s`` for every status; ``from_resource`` raises
``shipway.errors.InvalidInput`` for a record it cannot read, as ``from_dict`` does.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from shipway.errors import InvalidInput
from shipway.rollout.controller import VARIANTS
from shipway.rollout.state import Phase, State
from shipway.rollout.status import RolloutStatus

CANDIDATE = "candidate"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# the record's own keys, the engine's -> the resource's (and back)
_TOP = {
    "candidate_build": "candidateBuildID",
    "stable_build": "stableBuildID",
    "created_at": "createdAt",
}
_STATE = {f.name: _camel(f.name) for f in fields(State)}
_COUNTS = {"client_errors": "clientErrors"}
_STATE_TIMES = ("started_at", "last_analysis_at", "progressed_at", "bake_until")
_PHASES = {phase.value: "".join(p.capitalize() for p in phase.value.split("-")) for phase in Phase}


def _inverse(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def _rename(data: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(k, k): v for k, v in data.items()}


def _phase_out(value: str) -> str:
    return _PHASES.get(value, value)


def _phase_in(value: Any) -> Any:
    return _inverse(_PHASES).get(value, value)


def to_time(epoch: float) -> str:
    """RFC 3339 UTC of Unix epoch seconds, the fraction as the shortest decimal that
    reads back as the same float (``repr``'s), so nothing is lost."""
    if not math.isfinite(epoch):
        raise InvalidInput(f"a time must be finite, got {epoch!r}")
    exact = Decimal(repr(float(epoch)))
    whole = int(exact.to_integral_value(rounding=ROUND_FLOOR))
    fraction = exact - whole
    text = (_EPOCH + timedelta(seconds=whole)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += format(fraction, "f")[1:]  # ".25"
    return text + "Z"


def from_time(text: Any) -> float:
    """Unix epoch seconds of an RFC 3339 time (any offset); raises ``InvalidInput``."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"not an RFC 3339 time: {text!r}")
    offset = "+00:00" if match[3] == "Z" else match[3]
    try:
        moment = datetime.fromisoformat(match[1] + offset)
        fraction = Decimal("0" + (match[2] or ""))
    except (ValueError, InvalidOperation) as exc:
        raise InvalidInput(f"not an RFC 3339 time: {text!r}") from exc
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    return float(Decimal(whole) + fraction)  # correctly rounded: the float written


def _converged_out(value: str) -> str:
    phase, sep, weight = value.partition(":")
    return _phase_out(phase) + sep + weight


def _converged_in(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    phase, sep, weight = value.partition(":")
    return _phase_in(phase) + sep + weight


def _snapshot_out(snapshot: dict[str, Any], engine: str) -> dict[str, Any]:
    return {
        (CANDIDATE if name == engine else name): _rename(counts, _COUNTS)
        for name, counts in snapshot.items()
    }


def _snapshot_in(snapshot: Any, engine: str) -> Any:
    if not isinstance(snapshot, dict):
        return snapshot
    return {
        (engine if name == CANDIDATE else name): (
            _rename(counts, _inverse(_COUNTS)) if isinstance(counts, dict) else counts
        )
        for name, counts in snapshot.items()
    }


def to_resource(status: RolloutStatus) -> dict[str, Any]:
    """``status`` as ``.status.rollout`` (plain JSON types, Kubernetes conventions)."""
    data = status.to_dict()
    engine = data["variant"]
    out: dict[str, Any] = {
        "version": data["version"],
        "strategy": data["strategy"],
        "variant": CANDIDATE,
    }
    if VARIANTS.get(status.strategy) != engine:
        out["engineVariant"] = engine
    out["candidateBuildID"] = data["candidate_build"]
    out["stableBuildID"] = data["stable_build"]
    out["createdAt"] = to_time(data["created_at"])
    out["phase"] = _phase_out(data["phase"])
    if data["state"] is not None:
        state = dict(data["state"])
        for name in _STATE_TIMES:
            if state.get(name) is not None:
                state[name] = to_time(state[name])
        state["phase"] = _phase_out(state["phase"])
        if state.get("paused_phase") is not None:
            state["paused_phase"] = _phase_out(state["paused_phase"])
        if state.get("winner") == engine:
            state["winner"] = CANDIDATE
        out["state"] = {k: v for k, v in _rename(state, _STATE).items() if v is not None}
    out["counters"] = {
        name: _snapshot_out(snapshot, engine) for name, snapshot in data["counters"].items()
    }
    if data["converged"] is not None:
        out["converged"] = _converged_out(data["converged"])
    out["finished"] = data["finished"]
    return out


def from_resource(data: Any) -> RolloutStatus:
    """The ``RolloutStatus`` that ``to_resource`` wrote; raises ``InvalidInput`` for a
    record this code cannot read (not an object, a newer version, a field missing or
    of the wrong kind), never half-reads one."""
    if not isinstance(data, dict):
        raise InvalidInput(f"a rollout status must be an object, got {type(data).__name__}")
    strategy = data.get("strategy")
    engine = data.get("engineVariant") or (
        VARIANTS.get(strategy) if isinstance(strategy, str) else None
    )
    if engine is None:
        raise InvalidInput(f"unreadable rollout status: unknown strategy {strategy!r}")
    stored = {k: v for k, v in _rename(data, _inverse(_TOP)).items() if k != "engineVariant"}
    stored["variant"] = engine
    if "created_at" in stored:
        stored["created_at"] = from_time(stored["created_at"])
    stored["phase"] = _phase_in(stored.get("phase"))
    state = stored.get("state")
    if isinstance(state, dict):
        state = _rename(state, _inverse(_STATE))
        for name in _STATE_TIMES:
            if state.get(name) is not None:
                state[name] = from_time(state[name])
        state["phase"] = _phase_in(state.get("phase"))
        if state.get("paused_phase") is not None:
            state["paused_phase"] = _phase_in(state["paused_phase"])
        if state.get("winner") == CANDIDATE:
            state["winner"] = engine
        # unset optionals were left out; the engine's own form has them as None
        stored["state"] = {name: state.get(name) for name in _STATE if name in state} | {
            name: None
            for name in ("progressed_at", "bake_until", "paused_phase", "winner")
            if name not in state
        }
    counters = stored.get("counters")
    if isinstance(counters, dict):
        stored["counters"] = {
            name: _snapshot_in(snapshot, engine) for name, snapshot in counters.items()
        }
    stored["converged"] = _converged_in(stored.get("converged"))
    return RolloutStatus.from_dict(stored)


def candidate_build_id(record: dict[str, Any] | None) -> str | None:
    """The build a ``.status.rollout`` record rolls out, without reading all of it."""
    value = (record or {}).get("candidateBuildID")
    return value if isinstance(value, str) else None
