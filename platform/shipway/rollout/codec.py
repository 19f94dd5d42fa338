"""Engine values to JSON-able dicts and back: how a rollout's spec and state are
persisted (a database row locally, a custom resource's status on Kubernetes).

Unknown keys in a spec are refused rather than ignored: a typo in ``failure_threshld``
must not silently run a rollout on defaults.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, fields
from typing import Any, get_args, get_type_hints

from shipway.errors import InvalidInput
from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.state import Phase, State


def _known(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """Known keys only, and scalars of the declared kind: a ``"2"`` or a ``null`` where a
    number belongs must be refused here, not crash the first analysis minutes later."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidInput(f"unknown {what} settings: {', '.join(unknown)}; known: {sorted(names)}")
    hints = get_type_hints(cls)
    for name, value in data.items():
        kind = hints[name]
        options = set(get_args(kind)) if isinstance(kind, types.UnionType) else {kind}
        if value is None and type(None) in options:
            continue
        if int in options:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif float in options:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        else:
            continue  # collections and nested settings are checked where they are built
        if not ok:
            expected = "an integer" if int in options else "a number"
            raise InvalidInput(f"{what} setting {name} must be {expected}, got {value!r}")
    return data


def canary_spec(data: dict[str, Any]) -> CanarySpec:
    data = dict(_known(CanarySpec, data, "canary"))
    for name, kind in (("steps", list), ("gates", list), ("thresholds", dict), ("shadow", dict)):
        if data.get(name) is not None and not isinstance(data[name], kind):
            expected = "a list" if kind is list else "an object"
            raise InvalidInput(f"canary setting {name} must be {expected}, got {data[name]!r}")
    try:
        if "thresholds" in data:
            data["thresholds"] = Thresholds(
                **_known(Thresholds, dict(data["thresholds"]), "threshold")
            )
        for name in ("steps", "gates"):
            values = data.get(name, [])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise InvalidInput(f"canary setting {name} must be integers, got {values!r}")
        if "steps" in data:
            data["steps"] = tuple(data["steps"])
        if "gates" in data:
            data["gates"] = frozenset(data["gates"])
        if data.get("shadow") is not None:
            data["shadow"] = ShadowSpec(**_known(ShadowSpec, dict(data["shadow"]), "shadow"))
        return CanarySpec(**data)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bad canary settings: {exc}") from exc


def experiment_spec(data: dict[str, Any]) -> ExperimentSpec:
    try:
        return ExperimentSpec(**_known(ExperimentSpec, data, "experiment"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bad experiment settings: {exc}") from exc


def spec_to_dict(spec: CanarySpec | ExperimentSpec) -> dict[str, Any]:
    data = asdict(spec)
    if isinstance(spec, CanarySpec):
        data["steps"] = list(spec.steps)
        data["gates"] = sorted(spec.gates)
    return data


def state_to_dict(state: State) -> dict[str, Any]:
    return asdict(state)


def state_from_dict(data: dict[str, Any]) -> State:
    data = dict(data)
    # saved before the progress deadline existed: its clock starts at the last
    # analysis, not at the rollout's start (which would end a long rollout at once)
    data.setdefault("progressed_at", data.get("last_analysis_at"))
    data["phase"] = Phase(data["phase"])
    if data.get("paused_phase") is not None:
        data["paused_phase"] = Phase(data["paused_phase"])
    return State(**data)
