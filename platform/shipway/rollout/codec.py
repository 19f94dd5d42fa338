"""Engine values to JSON-able dicts and back: how a rollout's spec and state are
persisted (a database row locally, a custom resource's status on Kubernetes).

Unknown keys in a spec are refused rather than ignored: a typo in ``failure_limt``
must not silently run a rollout on defaults.

Settings saved or sent with the names of before the CRD's vocabulary (``steps``,
``interval_s``, ``failure_threshold``...) still load: ``LEGACY_NAMES`` translates them.
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

# old name -> frozen name (the CRD's camelCase is the frozen name in camelCase)
LEGACY_CANARY_NAMES = {
    "steps": "step_weights",
    "interval_s": "interval_seconds",
    "failure_threshold": "failure_limit",
    "max_unavailable": "consecutive_error_limit",
    "max_inconclusive": "inconclusive_limit",
    "progress_deadline_s": "progress_deadline_seconds",
    "bake_s": "bake_seconds",
}
LEGACY_EXPERIMENT_NAMES = {
    "interval_s": "interval_seconds",
    "max_duration_s": "max_duration_seconds",
}


def translate_legacy(data: dict[str, Any], legacy: dict[str, str], what: str) -> dict[str, Any]:
    """``data`` with old setting names replaced by the frozen ones; both given is refused
    (which one was meant cannot be guessed)."""
    out = dict(data)
    for old, new in legacy.items():
        if old in out:
            if new in out:
                raise InvalidInput(f"{what} settings {old} and {new} name the same setting")
            out[new] = out.pop(old)
    return out


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
    data = translate_legacy(data, LEGACY_CANARY_NAMES, "canary")
    data = dict(_known(CanarySpec, data, "canary"))
    for name, kind in (
        ("step_weights", list),
        ("gates", list),
        ("thresholds", dict),
        ("shadow", dict),
    ):
        if data.get(name) is not None and not isinstance(data[name], kind):
            expected = "a list" if kind is list else "an object"
            raise InvalidInput(f"canary setting {name} must be {expected}, got {data[name]!r}")
    try:
        if "thresholds" in data:
            data["thresholds"] = Thresholds(
                **_known(Thresholds, dict(data["thresholds"]), "threshold")
            )
        for name in ("step_weights", "gates"):
            values = data.get(name, [])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise InvalidInput(f"canary setting {name} must be integers, got {values!r}")
        if "step_weights" in data:
            data["step_weights"] = tuple(data["step_weights"])
        if "gates" in data:
            data["gates"] = frozenset(data["gates"])
        if data.get("shadow") is not None:
            data["shadow"] = ShadowSpec(**_known(ShadowSpec, dict(data["shadow"]), "shadow"))
        return CanarySpec(**data)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bad canary settings: {exc}") from exc


def experiment_spec(data: dict[str, Any]) -> ExperimentSpec:
    try:
        data = translate_legacy(data, LEGACY_EXPERIMENT_NAMES, "experiment")
        return ExperimentSpec(**_known(ExperimentSpec, data, "experiment"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bad experiment settings: {exc}") from exc


def spec_to_dict(spec: CanarySpec | ExperimentSpec) -> dict[str, Any]:
    data = asdict(spec)
    if isinstance(spec, CanarySpec):
        data["step_weights"] = list(spec.step_weights)
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
