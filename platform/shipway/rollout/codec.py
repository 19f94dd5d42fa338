"""Engine values to JSON-able dicts and back: how a rollout's spec and state are
persisted (a database row locally, a custom resource's status on Kubernetes).

Unknown keys in a spec are refused rather than ignored: a typo in ``failure_threshld``
must not silently run a rollout on defaults.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from shipway.errors import InvalidInput
from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.state import Phase, State


def _known(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidInput(f"unknown {what} settings: {', '.join(unknown)}; known: {sorted(names)}")
    return data


def canary_spec(data: dict[str, Any]) -> CanarySpec:
    data = dict(_known(CanarySpec, data, "canary"))
    try:
        if "thresholds" in data:
            data["thresholds"] = Thresholds(
                **_known(Thresholds, dict(data["thresholds"]), "threshold")
            )
        if "steps" in data:
            data["steps"] = tuple(int(s) for s in data["steps"])
        if "gates" in data:
            data["gates"] = frozenset(int(g) for g in data["gates"])
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
    data["phase"] = Phase(data["phase"])
    if data.get("paused_phase") is not None:
        data["paused_phase"] = Phase(data["paused_phase"])
    return State(**data)
