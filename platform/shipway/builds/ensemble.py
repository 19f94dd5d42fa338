"""Trimming for the official image's backends: a Triton ensemble around the engine.

The local Triton runs a build's engine inside the Python backend, which trims each
batch itself (``triton_models/onnxruntime_python.py``). The official image's
``onnxruntime`` and ``openvino`` backends stack requests themselves and cannot: there
a build that trims (``packaging.trim_decision``) is served as a Triton ensemble
(Triton's model repository docs, "Ensemble Models"; ``platform: "ensemble"``,
``ensemble_scheduling``) under the build's model name, so clients and the gateway see
the same model:

::

    <model>            ensemble: the model's own inputs and outputs
    <model>__trim      Python backend, numpy only: each request's sequence inputs cut
                       (or zero-padded) to its length bucket (``sequence_step.py``)
    <model>__engine    the engine, as it was packaged before, dynamic batching: requests
                       of one bucket now have equal shapes and are stacked
    <model>__restore   Python backend, numpy only: token-level outputs back in the
                       request's shape, zeros where its mask is zero (only when the
                       model has token-level outputs)

Inputs that do not carry the sequence axis go from the ensemble straight to the
engine; outputs that do not (pooled embeddings, class scores) straight back. Pure:
this module renders config text only; ``packaging`` writes the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shipway.builds.triton_config import ServingOptions, TrimPlan, dims, triton_dtype
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

TRIM_SUFFIX = "__trim"
ENGINE_SUFFIX = "__engine"
RESTORE_SUFFIX = "__restore"
# ensemble-internal tensor names; refused if the model uses one itself
_PREFIX = "shipway__"
_FIT = _PREFIX + "fit_{}"
_TRIMMED = _PREFIX + "trimmed_{}"


@dataclass(frozen=True)
class EnsembleLayout:
    """The models of one trimming ensemble: name -> config text, and which of them run
    ``sequence_step.py`` (the others: the ensemble itself and the engine)."""

    ensemble: str
    engine: str
    steps: tuple[str, ...]
    configs: dict[str, str]


def reserved_names(signature: Signature) -> list[str]:
    """The model's tensor names that the ensemble's own could collide with."""
    return [s.name for s in (*signature.inputs, *signature.outputs) if s.name.startswith(_PREFIX)]


def engine_name(model_name: str) -> str:
    return model_name + ENGINE_SUFFIX


def _tensor(name: str, spec: TensorSpec, ragged: bool = False) -> str:
    shape = ", ".join(map(str, dims(spec, True)))
    return (
        f"  {{ name: {json.dumps(name)} data_type: {triton_dtype(spec)} dims: [ {shape} ]"
        f"{' allow_ragged_batch: true' if ragged else ''} }}"
    )


def _step_config(
    name: str,
    role: str,
    sequence: list[str],
    checked_length: int,
    inputs: list[tuple[str, TensorSpec]],
    outputs: list[tuple[str, TensorSpec]],
    plan: TrimPlan,
    options: ServingOptions,
) -> str:
    """A step's config: batched as the engine, ragged inputs (each request is handled
    alone, so requests of any lengths may share an ``execute``), no queue delay."""
    parameter = json.dumps(
        {
            "role": role,
            "mask": plan.mask,
            "sequence": sequence,
            "buckets": list(plan.buckets),
            "checked_length": checked_length,
        }
    )
    return (
        "\n".join(
            [
                f"name: {json.dumps(name)}",
                'backend: "python"',
                f"max_batch_size: {options.max_batch_size}",
                "input [",
                ",\n".join(_tensor(n, s, ragged=True) for n, s in inputs),
                "]",
                "output [",
                ",\n".join(_tensor(n, s) for n, s in outputs),
                "]",
                f"instance_group [ {{ kind: KIND_CPU count: {options.instance_count} }} ]",
                "dynamic_batching { max_queue_delay_microseconds: 0 }",
                'parameters { key: "shipway_step" '
                f"value: {{ string_value: {json.dumps(parameter)} }} }}",
            ]
        )
        + "\n"
    )


def _map(kind: str, pairs: list[tuple[str, str]]) -> str:
    return " ".join(
        f"{kind} {{ key: {json.dumps(key)} value: {json.dumps(value)} }}" for key, value in pairs
    )


def render_ensemble(
    model_name: str,
    signature: Signature,
    plan: TrimPlan,
    options: ServingOptions,
    checked_length: int,
) -> EnsembleLayout:
    """The ensemble's and its steps' configs for a model ``plan`` trims (the engine's own
    config is rendered as before, under ``engine_name(model_name)``). ``checked_length``:
    the longest sequence length the packaging-time check ran the engine at
    (``trim_check.TrimCheck.lengths``); the trim step pads a request past the length it
    was sent at only up to that, so it never asks the engine for a length neither the
    client nor the check ever ran (a model with 100 positions fails at bucket 128).

    Raises ``InvalidInput`` for a dtype Triton cannot serve, or a tensor named like one
    of the ensemble's own (``shipway__fit_0``), which would be wired to the wrong step.
    """
    specs = {s.name: s for s in (*signature.inputs, *signature.outputs)}
    taken = reserved_names(signature)
    if taken:
        raise InvalidInput(
            f"tensor names {taken} start with 'shipway__', which the trimming ensemble "
            "uses for its own tensors; tag the version shipway.trim_padding=false"
        )
    sequence = [plan.mask, *(n for n in plan.sequence_inputs if n != plan.mask)]
    tokens = list(plan.token_outputs)
    trim, engine, restore = (
        model_name + TRIM_SUFFIX,
        engine_name(model_name),
        model_name + RESTORE_SUFFIX,
    )
    configs = {
        trim: _step_config(
            trim,
            "trim",
            sequence,
            checked_length,
            [(f"SEQ_{i}", specs[n]) for i, n in enumerate(sequence)],
            [(f"FIT_{i}", specs[n]) for i, n in enumerate(sequence)],
            plan,
            options,
        )
    }
    steps = [
        "  {\n"
        f"    model_name: {json.dumps(trim)} model_version: -1\n"
        f"    {_map('input_map', [(f'SEQ_{i}', n) for i, n in enumerate(sequence)])}\n"
        f"    {_map('output_map', [(f'FIT_{i}', _FIT.format(i)) for i in range(len(sequence))])}\n"
        "  }"
    ]
    fitted = {n: _FIT.format(i) for i, n in enumerate(sequence)}
    engine_inputs = [(s.name, fitted.get(s.name, s.name)) for s in signature.inputs]
    trimmed = {n: _TRIMMED.format(i) for i, n in enumerate(tokens)}
    engine_outputs = [(s.name, trimmed.get(s.name, s.name)) for s in signature.outputs]
    steps.append(
        "  {\n"
        f"    model_name: {json.dumps(engine)} model_version: -1\n"
        f"    {_map('input_map', engine_inputs)}\n"
        f"    {_map('output_map', engine_outputs)}\n"
        "  }"
    )
    step_names = [trim]
    if tokens:
        mask = specs[plan.mask]
        configs[restore] = _step_config(
            restore,
            "restore",
            sequence,
            checked_length,
            [*((f"TRIMMED_{i}", specs[n]) for i, n in enumerate(tokens)), ("MASK", mask)],
            [(f"RESTORED_{i}", specs[n]) for i, n in enumerate(tokens)],
            plan,
            options,
        )
        restore_inputs = [(f"TRIMMED_{i}", trimmed[n]) for i, n in enumerate(tokens)]
        steps.append(
            "  {\n"
            f"    model_name: {json.dumps(restore)} model_version: -1\n"
            f"    {_map('input_map', [*restore_inputs, ('MASK', plan.mask)])}\n"
            f"    {_map('output_map', [(f'RESTORED_{i}', n) for i, n in enumerate(tokens)])}\n"
            "  }"
        )
        step_names.append(restore)
    configs[model_name] = (
        "\n".join(
            [
                f"name: {json.dumps(model_name)}",
                'platform: "ensemble"',
                f"max_batch_size: {options.max_batch_size}",
                "input [",
                ",\n".join(_tensor(s.name, s) for s in signature.inputs),
                "]",
                "output [",
                ",\n".join(_tensor(s.name, s) for s in signature.outputs),
                "]",
                "ensemble_scheduling {\n step [\n" + ",\n".join(steps) + "\n ]\n}",
            ]
        )
        + "\n"
    )
    return EnsembleLayout(model_name, engine, tuple(step_names), configs)
