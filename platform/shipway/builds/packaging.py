"""Lay out a Triton model repository for a build.

::

    <repo>/<triton-model-name>/config.pbtxt
    <repo>/<triton-model-name>/1/model.onnx   (model.plan for TensorRT; model.xml and
                                              model.bin, OpenVINO's IR, for openvino-cpu)
    <repo>/<triton-model-name>/1/model.py     (Python backend only)
    <repo>/<triton-model-name>/1/shipway_served.py   (what its model.py shares; ditto)
    <repo>/<triton-model-name>/1/shipway_padding.py  (its trimming arithmetic; trimmed only)
    <repo>/<triton-model-name>/warmup/*.bin   (the warm-up request, raw, row-major)

A build for the official image's ``onnxruntime`` or ``openvino`` backend that trims is
an ensemble under ``<triton-model-name>`` instead, with the engine's folder above renamed
``<triton-model-name>__engine`` and numpy steps beside it (``ensemble``).

The warm-up request comes from the registered reference sample (see
``triton_config``): real shapes and values the model is known to run on, since
registration ran it on them. Whether the served model trims padding is decided here,
per build (``trim_decision``): the signature must allow it (``triton_config.trim_plan``)
and the built engine must answer the reference sample trimmed as it answers it padded
(``trim_check``); the decision and its reason go into the config (``shipway_trim_decision``)
and the build report (``serving``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from shipway.builds import ensemble, trim_check
from shipway.builds.accuracy import MASK
from shipway.builds.recipes import Target
from shipway.builds.triton_config import (
    BACKENDS,
    TRIMMING_BACKENDS,
    WARMUP_DIR,
    ServingOptions,
    TrimPlan,
    batches,
    free_outputs,
    openvino_notes,
    openvino_parameters,
    render_config,
    trim_plan,
    warmup_bytes,
    warmup_file,
    warmup_request,
)
from shipway.builds.triton_models import padding
from shipway.engines.openvino import IR_BIN, IR_XML
from shipway.errors import BuildFailed
from shipway.registry.signature import Signature

_PYTHON_MODEL = Path(__file__).parent / "triton_models" / "onnxruntime_python.py"
_OPENVINO_MODEL = Path(__file__).parent / "triton_models" / "openvino_python.py"
_PADDING = Path(__file__).parent / "triton_models" / "padding.py"
_SEQUENCE_STEP = Path(__file__).parent / "triton_models" / "sequence_step.py"
_SERVED = Path(__file__).parent / "triton_models" / "served_model.py"  # what both share
SERVED_FILE = "shipway_served.py"  # its name beside model.py


def triton_model_name(model: str, build_id: str) -> str:
    """Unique per build, so two builds of one model can be loaded side by side."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{build_id}")


def backend_for(target: Target, onnx_backend: str = "python") -> str:
    """The Triton backend for a target. The local Triton from the nvidia-pytriton wheel
    has the Python backend only, with ONNX Runtime running inside it; the official
    Triton image serves the same ONNX with its ``onnxruntime`` backend."""
    if target is Target.TENSORRT:
        return "tensorrt"
    if onnx_backend not in ("python", "onnxruntime"):
        raise ValueError(f"unknown ONNX backend {onnx_backend!r}")
    if target is Target.OPENVINO_CPU:
        # locally OpenVINO runs inside the Python backend; the official image has
        # Triton's OpenVINO backend (SHIPWAY_TRITON_ONNX_BACKEND=onnxruntime there)
        return "python" if onnx_backend == "python" else "openvino"
    return onnx_backend


def probe_fixed_outputs(
    engine_path: Path,
    signature: Signature,
    mask_input: str | None,
    sample: Mapping[str, np.ndarray] | None,
    session: Any | None = None,
) -> dict[str, int]:
    """The outputs whose axis 1 the signature leaves free (``triton_config.free_outputs``)
    that keep one size when the model runs (ONNX Runtime, CPU) on the sample's first row
    at its length and one token longer (padding: mask 0): name -> that size.

    Shape inference often cannot name a pooled output's width (MiniLM's is
    ``Concat461_dim_1``); trimming needs to know that it does not follow the sequence
    length. Empty (nothing is trusted, the model is not trimmed) without a sample, or
    when either run fails. ``session``: one already open on ``engine_path`` (the
    trimming check's), else one is opened here.
    """
    names = free_outputs(signature, mask_input)
    if not names or sample is None or mask_input not in sample:
        return {}
    mask = next(s for s in signature.inputs if s.name == mask_input)
    seq = mask.shape[1] if len(mask.shape) == 2 else None
    batched = set(signature.batched_inputs)
    request = {
        spec.name: np.asarray(sample[spec.name])[:1]
        if spec.name in batched
        else np.asarray(sample[spec.name])
        for spec in signature.inputs
    }
    sequence = {s.name for s in signature.inputs if seq is not None and s.shape[1:2] == (seq,)}
    length = request[mask_input].shape[1] if request[mask_input].ndim == 2 else 0
    sizes: list[tuple[int, ...]] = []
    try:
        if session is None:
            session = _session(engine_path)
        for run_length in (length, length + 1):
            feeds = {
                name: padding.fit(value, run_length) if name in sequence else value
                for name, value in request.items()
            }
            outputs = session.run(list(names), feeds)
            sizes.append(tuple(int(np.shape(o)[1]) if np.ndim(o) >= 2 else -1 for o in outputs))
    except Exception:
        return {}
    return {n: a for n, a, b in zip(names, *sizes, strict=True) if a == b and a >= 0}


# Operators that quantize activations with a scale computed at run time over the whole
# tensor: padding positions count, so trimming moves every row's answer.
_RUNTIME_SCALES = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention"})
# ONNX float element types narrower than float32, by the name ``trim_check`` knows.
_NARROW_FLOATS = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


@dataclass(frozen=True)
class TrimDecision:
    """Whether a build's served model trims padding, and why (said in the build report's
    ``serving`` and in the config's ``shipway_trim_decision``). ``plan`` is set exactly
    when it trims; ``check`` is what ``trim_check`` found, when it ran."""

    reason: str
    plan: TrimPlan | None = None
    check: trim_check.TrimCheck | None = None

    @property
    def trim(self) -> bool:
        return self.plan is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trim_padding": self.trim, "reason": self.reason}
        if self.check is not None:
            out["check"] = self.check.to_dict()
        return out

    def config_text(self) -> str:
        """The short JSON the config carries (no numbers of the check)."""
        return json.dumps({"trim_padding": self.trim, "reason": self.reason})


def _graph(engine_path: Path) -> onnx.GraphProto | None:
    try:
        return onnx.load(str(engine_path), load_external_data=False).graph
    except Exception:
        return None


def _runtime_scales(graph: onnx.GraphProto | None) -> list[str]:
    """The run-time-scale quantizing operators ``graph`` holds, sorted."""
    return sorted({n.op_type for n in graph.node if n.op_type in _RUNTIME_SCALES} if graph else ())


def engine_precision(graph: onnx.GraphProto | None) -> str:
    """The narrowest float type an ONNX engine computes in (``trim_check.EPSILON``'s
    names): ``float16``/``bfloat16`` when any initializer, ``Constant``, ``Cast``
    target or typed value of the graph is one (an ``fp16`` build keeps float32 inputs
    and outputs, ``keep_io_types``, so the outputs' dtype does not say it), else
    ``float32``. Nested subgraphs are not searched (an FP16 conversion casts the main
    graph)."""
    if graph is None:
        return "float32"
    types = {t.data_type for t in graph.initializer}
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to":
                types.add(attribute.i)
            elif attribute.type == onnx.AttributeProto.TENSOR:
                types.add(attribute.t.data_type)
    for value in (*graph.input, *graph.output, *graph.value_info):
        types.add(value.type.tensor_type.elem_type)
    narrow = [_NARROW_FLOATS[t] for t in types if t in _NARROW_FLOATS]
    # the coarser precision wins: bfloat16 (eps 2^-7) over float16 (2^-10)
    return max(narrow, key=lambda p: trim_check.EPSILON[p], default="float32")


def trim_decision(
    engine_path: Path,
    signature: Signature,
    backend: str,
    options: ServingOptions,
    sample: Mapping[str, np.ndarray] | None,
    mask_input: str | None,
    off_reason: str | None = None,
    precision: str | None = None,
    open_engine: Callable[[], Any] | None = None,
) -> TrimDecision:
    """Decide whether the served model trims padding (the module docstring).

    In order: the options must ask (``off_reason`` says why they do not: the kill
    switch, a tag), the backend must be ``python``, the model must batch, have a mask
    input and a signature trimming can cut (``trim_plan``, outputs the signature leaves
    free probed by ``probe_fixed_outputs``), a reference sample must exist, and the engine
    must answer that sample trimmed as padded (``trim_check.check``, ONNX Runtime on
    CPU, one session for the output probe and the check). Any other outcome, an
    unexpected error inside the check included, packages the model untrimmed with the
    reason: the check never fails a build. ``precision``: the float type the engine
    computes in, when the target sets it at run time (e.g. a precision hint);
    ``None``: read from the graph (``engine_precision``), float32 unless the graph
    holds float16/bfloat16. ``open_engine``: opens the engine with ONNX Runtime's
    session surface (``get_outputs``, ``run``) when another runtime serves it (an
    OpenVINO engine: ``engines.openvino.Session``, compiled as served); default ONNX
    Runtime on CPU.
    """
    if not options.trim_padding:
        return TrimDecision(off_reason or "trimming is switched off for this build")
    if backend == "openvino" and precision != "bfloat16":
        return TrimDecision(
            "Triton's OpenVINO backend takes no key forcing f32: on a CPU with bfloat16 it "
            "computes this f32 engine in bf16, not at the precision trimming is checked at"
        )
    if backend not in TRIMMING_BACKENDS:
        return TrimDecision(
            f"the {backend!r} engine is not what the check runs (ONNX Runtime on the ONNX "
            "file): served untrimmed"
        )
    if not batches(signature, options):
        return TrimDecision("the model is served without batching: nothing is stacked to trim")
    if backend != "python" and ensemble.reserved_names(signature):
        return TrimDecision(
            f"tensors {ensemble.reserved_names(signature)} are named like the trimming "
            "ensemble's own (shipway__*)"
        )
    mask = next((s for s in signature.inputs if s.name == mask_input), None)
    if mask is None:
        return TrimDecision(
            "no mask input"
            + (f" (the model has no input {mask_input!r})" if mask_input else " (tagged none)")
        )
    session = None
    if sample is not None and all(s.name in sample for s in signature.inputs):
        try:
            session = open_engine() if open_engine is not None else _session(engine_path)
        except Exception as exc:
            runtime = "the engine's runtime" if open_engine is not None else "ONNX Runtime"
            return TrimDecision(f"{runtime} cannot load the engine to check trimming: {exc}")
    fixed = probe_fixed_outputs(engine_path, signature, mask_input, sample, session)
    plan = trim_plan(signature, mask_input, options, backend, fixed)
    if plan is None:
        return TrimDecision(
            f"the signature does not make trimming a plain cut of axis 1 by {mask_input!r} "
            "(a float mask, another symbolic or an unknown size on axis 1, strings on the "
            "sequence axis)"
        )
    if sample is None:
        return TrimDecision("no reference sample to check that trimming keeps the answers")
    missing = sorted(s.name for s in signature.inputs if s.name not in sample)
    if missing:
        return TrimDecision(f"the reference sample has no input {', '.join(map(repr, missing))}")
    assert session is not None  # opened above whenever the sample has every input
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))

    graph = _graph(engine_path)
    started = time.monotonic()
    try:
        found = trim_check.check(
            run,
            {s.name: np.asarray(sample[s.name]) for s in signature.inputs},
            plan.mask,
            plan.sequence_inputs,
            plan.token_outputs,
            options.max_batch_size,
            plan.buckets,
            precision or engine_precision(graph),
        )
    except Exception as exc:  # a bug or a sample the check cannot use: not a failed build
        return TrimDecision(f"trimming could not be checked: {exc}")
    found = replace(found, seconds=round(time.monotonic() - started, 3))
    tolerance = found.tolerance.describe()
    if found.agrees:
        largest = max(found.max_abs_diff.values(), default=0.0)
        return TrimDecision(
            f"the engine answers the {found.rows} reference rows trimmed as padded "
            f"({found.runs} runs; largest difference {largest:.1e}, within {tolerance})",
            plan,
            found,
        )
    if found.problem is not None:
        return TrimDecision(f"trimming could not be checked: {found.problem}", None, found)
    changed = ", ".join(
        f"{name!r}"
        + (f" by up to {found.max_abs_diff[name]:.1e}" if name in found.max_abs_diff else "")
        for name in found.differs
    )
    reason = f"trimming changes {changed} on the reference sample (beyond {tolerance})"
    scales = _runtime_scales(graph)
    if scales:
        reason += (
            f": the engine quantizes activations at run time ({', '.join(scales)}), with "
            "scales over the whole tensor, padding positions and batch-mates included"
        )
    return TrimDecision(reason, None, found)


def _session(engine_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(engine_path), options, ["CPUExecutionProvider"])


def package_repository(
    repo: Path,
    model_name: str,
    engine_path: Path,
    signature: Signature,
    target: Target,
    options: ServingOptions | None = None,
    onnx_backend: str = "python",
    sample: Mapping[str, np.ndarray] | None = None,
    mask_input: str | None = MASK,
    decision: TrimDecision | None = None,
    openvino_precision: str | None = None,
    index_bounds: Mapping[str, int] | None = None,
) -> Path:
    """Write the repository for one model under ``repo``; returns the model folder.

    ``sample`` is the version's reference sample; without it there is no warm-up and
    no trimming. ``mask_input`` names the attention mask the served model trims padding
    by (``None``: no mask, nothing trimmed). ``decision`` is ``trim_decision``'s for
    these same arguments, when the caller made it (to report it); else it is made here.
    An openvino-cpu build's engine is its IR's ``model.xml`` (``model.bin`` beside it);
    ``openvino_precision`` is the inference precision it was gated with (``f32`` or
    ``bf16``), which its config carries (``triton_config.openvino_parameters``), with
    ``index_bounds`` (``engines.graph.index_bounds`` of the registered ONNX model).
    """
    backend = backend_for(target, onnx_backend)
    options = options or ServingOptions()
    openvino = target is Target.OPENVINO_CPU
    parameters: dict[str, str] = {}
    notes: list[str] = []
    if openvino:  # checked before anything is written
        if openvino_precision is None:
            raise ValueError("an openvino-cpu build is packaged with its inference precision")
        scalars = [s.name for s in signature.inputs if not s.shape]
        if backend == "openvino" and scalars:
            raise BuildFailed(
                f"Triton's OpenVINO backend does not take scalar (rank-0) inputs ({scalars}; "
                "its README, Known Issues): build this model for onnxruntime-cpu"
            )
        parameters = openvino_parameters(backend, openvino_precision, index_bounds)
        notes = openvino_notes(backend, openvino_precision)
    if decision is None:
        decision = trim_decision(engine_path, signature, backend, options, sample, mask_input)
    trim = decision.plan
    layout = None
    if trim is not None and backend != "python":  # the official image: an ensemble trims
        checked = max(decision.check.lengths, default=0) if decision.check else 0
        layout = ensemble.render_ensemble(model_name, signature, trim, options, checked)
        _write_ensemble(repo, layout, decision)
    # the engine's own model: the ensemble's engine step, or the model clients call
    folder = repo / (layout.engine if layout else model_name)
    version_dir = folder / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    warmup = None
    if options.warmup and sample is not None:
        warmup = warmup_request(signature, sample, batches(signature, options))
        (folder / WARMUP_DIR).mkdir(exist_ok=True)
        for i, spec in enumerate(signature.inputs):
            (folder / WARMUP_DIR / warmup_file(i, spec.name)).write_bytes(
                warmup_bytes(warmup[spec.name])
            )
    (folder / "config.pbtxt").write_text(
        render_config(
            folder.name,
            signature,
            backend,
            options,
            warmup,
            trim if layout is None else None,
            decision.config_text() if backend == "python" else None,
            parameters,
            notes,
        )
    )
    if openvino:  # the IR: model.xml and its weights, model.bin, as the backends expect
        shutil.copyfile(engine_path, version_dir / IR_XML)
        shutil.copyfile(engine_path.with_suffix(".bin"), version_dir / IR_BIN)
    else:
        shutil.copyfile(engine_path, version_dir / BACKENDS[backend][1])
    if backend == "python":
        shutil.copyfile(_OPENVINO_MODEL if openvino else _PYTHON_MODEL, version_dir / "model.py")
        shutil.copyfile(_SERVED, version_dir / SERVED_FILE)
    if trim is not None and layout is None:  # any other model is packaged as before
        shutil.copyfile(_PADDING, version_dir / "shipway_padding.py")
    return repo / model_name


def _write_ensemble(repo: Path, layout: ensemble.EnsembleLayout, decision: TrimDecision) -> None:
    """The ensemble's and its steps' folders (``ensemble``); the engine's is written by
    ``package_repository``. The decision goes into the ensemble's config, the model
    clients call."""
    for name, text in layout.configs.items():
        (repo / name / "1").mkdir(parents=True, exist_ok=True)  # an ensemble's version too
        if name == layout.ensemble:
            text += (
                'parameters { key: "shipway_trim_decision" '
                f"value: {{ string_value: {json.dumps(decision.config_text())} }} }}\n"
            )
        (repo / name / "config.pbtxt").write_text(text)
    for name in layout.steps:
        shutil.copyfile(_SEQUENCE_STEP, repo / name / "1" / "model.py")
        shutil.copyfile(_PADDING, repo / name / "1" / "shipway_padding.py")
