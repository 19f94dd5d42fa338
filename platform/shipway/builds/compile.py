"""Turn a registered FP32 ONNX model into a candidate engine, with its build report.

The stages, each reported as progress: check the calibration data against the graph,
prepare the graph, calibrate once, quantize (keeping the most sensitive layers in FP32
when the gate asks for it), gate on held-out rows, and benchmark side by side with the
raw and fused FP32 baselines and the stable build, at the padded and at real lengths
(``baselines``). ``int8-dynamic`` on ONNX Runtime makes two arms (``matmul``,
``qattention``), gates both and ships the faster that passed. Files in, files and a
report out: the pipeline does the store and registry I/O around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from shipway.builds import baselines
from shipway.builds.accuracy import MASK, AccuracyReport, AgreementRule, compare, resolve_rule
from shipway.builds.recipes import BuildOptions, Recipe, Target, openvino_precision
from shipway.builds.triton_config import token_outputs
from shipway.engines import evaluate, openvino, quantize, selective, tensorrt
from shipway.engines.benchmark import Measurement, fixed_batch, on_feeds, side_by_side
from shipway.engines.calibration import Arrays, Split, rows, split, take
from shipway.engines.graph import int8_weights, is_qdq, weighted_nodes
from shipway.errors import BuildFailed
from shipway.registry.signature import Signature

Progress = Callable[[str, float], None]
SWEEP_ROWS = 32  # calibration rows per sensitivity probe: enough to rank, cheap to run


class GateFailed(BuildFailed):
    """The candidate is not the same model any more; the report says how far off."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class BenchPlan:
    seconds: float = 1.0
    rounds: int = 3
    batch: int = 8
    threads: int = 0
    regression_tolerance: float = 0.10


@dataclass(frozen=True)
class Inputs:
    model: Path  # the registered FP32 ONNX
    signature: Signature
    sample: Arrays
    calibration: Arrays | None = None
    stable_model: Path | None = None  # the engine of the stable build, to race against
    stable_build: str | None = None
    output_kinds: dict[str, str] = field(default_factory=dict)  # from registration tags
    mask_input: str | None = MASK  # the attention mask input (tag shipway.mask_input)


@dataclass
class Result:
    engine: Path  # the candidate ONNX model (the TensorRT plan is compiled from it)
    report: dict[str, Any] = field(default_factory=dict)
    calibration_cache: Path | None = None


def compile_candidate(
    inputs: Inputs,
    recipe: Recipe,
    target: Target,
    options: BuildOptions,
    workdir: Path,
    bench: BenchPlan,
    progress: Progress,
) -> Result:
    started = time.monotonic()
    if target is Target.OPENVINO_CPU:
        return _compile_openvino(inputs, recipe, options, workdir, bench, progress, started)
    if target is Target.TENSORRT:
        tensorrt.require()  # no GPU or no TensorRT: fail now, not after calibrating
    if recipe is Recipe.FP32:
        return Result(inputs.model, {"recipe": recipe.value, "target": target.value})
    report: dict[str, Any] = {
        "recipe": recipe.value,
        "target": target.value,
        "options": options.to_dict(),
    }
    model = onnx.load(str(inputs.model), load_external_data=False)

    progress("check-calibration-data", 0.1)
    data = split(
        inputs.signature, inputs.sample, inputs.calibration, calibrates=recipe is Recipe.INT8
    )
    report["calibration"] = {
        "method": options.calibration.value,
        "rows": rows(data.calibration),
        "held_out_rows": rows(data.held_out),
        "source": data.source,
    }
    batch = evaluate.batch_size(inputs.signature)
    reference = evaluate.run(evaluate.session(inputs.model), data.held_out, batch)
    rule = resolve_rule(
        reference,
        options.min_cosine,
        inputs.output_kinds,
        mask_input=inputs.mask_input,
        min_row_cosine=options.min_row_cosine,
        batched=inputs.signature.batch_dim is not None,
        token_outputs=token_outputs(inputs.signature, inputs.mask_input),
    )

    def gate(path: Path) -> AccuracyReport:
        candidate = evaluate.run(evaluate.session(path), data.held_out, batch)
        return compare(reference, candidate, data.held_out, rule, options.min_top1)

    # int8-dynamic on ONNX Runtime: each arm's engine, gate verdict and summary
    arms: dict[str, tuple[Path, AccuracyReport | None, baselines.ArmResult]] = {}
    if is_qdq(model):
        # Quantization-aware training already placed Q/DQ with learned scales.
        progress("accuracy-gate", 0.6)
        report["calibration"] = {"skipped": "the model already carries Q/DQ scales"}
        engine, accuracy = inputs.model, gate(inputs.model)
        report["selective"] = {"kept_fp32": []}
        cache = None
    else:
        progress("prepare-graph", 0.15)
        embeddings = options.quantize_embeddings
        prepared = quantize.prepare(
            inputs.model,
            workdir / "prepared.onnx",
            fuse=target is Target.ONNXRUNTIME_CPU,
            embed_fusion=not embeddings,
        )
        layers = weighted_nodes(onnx.load(str(prepared)))
        if not layers:
            raise BuildFailed(
                "nothing to quantize: the model has no MatMul, Gemm or Conv with constant "
                "weights; build it as fp32"
            )
        report["quantization"] = {"layers": layers}
        encoding = (
            quantize.Encoding.S8S8_SYMMETRIC
            if target is Target.TENSORRT
            else quantize.Encoding.U8S8
        )
        quant_options = quantize.QuantOptions(method=options.calibration, encoding=encoding)
        cache = workdir / "calibration-ranges.json"
        if recipe is Recipe.INT8:
            progress("calibrate", 0.25)
            quantize.calibrate(prepared, data.calibration, quant_options, cache)

        def make(keep: tuple[str, ...], only: tuple[str, ...] | None, name: str) -> Path:
            path = workdir / f"{name}.onnx"
            if recipe is Recipe.INT8:
                return quantize.static_qdq(prepared, path, None, quant_options, cache, keep, only)
            if recipe is Recipe.INT8_DYNAMIC:
                return quantize.dynamic(prepared, path, keep, only, embeddings=embeddings)
            return quantize.fp16(prepared, path)

        if recipe is Recipe.FP16:
            progress("convert-fp16", 0.4)
            engine = make((), None, "candidate")
            accuracy = gate(engine)
            report["selective"] = {"kept_fp32": []}
        else:
            engine, accuracy, report["selective"] = _select(
                make, gate, rule, prepared, layers, data.calibration, options, progress, batch
            )
            if recipe is Recipe.INT8_DYNAMIC and target is Target.ONNXRUNTIME_CPU:
                arms[baselines.ARM_MATMUL] = (
                    engine,
                    accuracy,
                    baselines.ArmResult(
                        baselines.ARM_MATMUL,
                        accuracy.passed,
                        _summary(accuracy, report["selective"]),
                        None if accuracy.passed else "; ".join(accuracy.failures),
                    ),
                )
                progress("quantize-attention", 0.7)
                arms[baselines.ARM_QATTENTION] = _qattention_arm(
                    inputs.model, workdir, embeddings, gate
                )
                report["arms"] = {name: arm.to_dict() for name, (_, _, arm) in arms.items()}
                if not accuracy.passed and arms[baselines.ARM_QATTENTION][2].passed:
                    # the matmul arm failed the gate, the fused one passed: it ships
                    engine, verdict, _ = arms[baselines.ARM_QATTENTION]
                    assert verdict is not None
                    accuracy = verdict
                    report["selective"] = {"kept_fp32": [], "arm": baselines.ARM_QATTENTION}
            weights = int8_weights(onnx.load(str(engine), load_external_data=False))
            report["quantization"]["int8_weights"] = weights
            if weights == 0:  # the quantizer left every layer in float: no INT8 build
                raise BuildFailed(
                    f"nothing was quantized: ONNX Runtime's quantizer left all {len(layers)} "
                    "layers in float; build it as fp32"
                )
    report["accuracy"] = accuracy.to_dict()
    if not accuracy.passed:
        report["seconds"] = round(time.monotonic() - started, 2)
        raise GateFailed(
            "accuracy gate failed: "
            + "; ".join(accuracy.failures)
            + (
                f" (kept {len(report['selective']['kept_fp32'])} layers in FP32, "
                f"the most allowed is {report['selective']['max_kept']})"
                if "max_kept" in report.get("selective", {})
                else ""
            ),
            report,
        )

    if target is Target.ONNXRUNTIME_CPU:
        progress("benchmark", 0.75)
        passing = {name: path for name, (path, verdict, arm) in arms.items() if arm.passed}
        report["benchmark"] = _benchmark(
            inputs, passing or {"candidate": engine}, data, bench, workdir, batch=bench.batch
        )
        chosen = report["benchmark"]["arm"]
        if chosen is not None and chosen in arms:
            engine, verdict, _ = arms[chosen]
            assert verdict is not None
            accuracy = verdict
            report["accuracy"] = accuracy.to_dict()
            if chosen != baselines.ARM_MATMUL:
                report["selective"] = {"kept_fp32": [], "arm": chosen}
            report["quantization"]["int8_weights"] = int8_weights(
                onnx.load(str(engine), load_external_data=False)
            )
        if options.quantize_embeddings:
            tables = quantize.embedding_tables(onnx.load(str(engine), load_external_data=False))
            report["quantization"]["embeddings"] = {"quantized": bool(tables), "tables": tables}
            if not tables:
                report["quantization"]["embeddings"]["reason"] = (
                    "the model has no Gather on a constant float table to quantize"
                )
    report["size_mb"] = {
        "fp32": round(inputs.model.stat().st_size / 1e6, 3),
        "candidate": round(engine.stat().st_size / 1e6, 3),
    }
    report["seconds"] = round(time.monotonic() - started, 2)
    return Result(engine, report, cache if cache and cache.exists() else None)


def _select(
    make: Callable[[tuple[str, ...], tuple[str, ...] | None, str], Path],
    gate: Callable[[Path], AccuracyReport],
    rule: AgreementRule,
    prepared: Path,
    layers: list[str],
    calibration: Arrays,
    options: BuildOptions,
    progress: Progress,
    batch: int,
) -> tuple[Path, AccuracyReport, dict[str, Any]]:
    """Full quantization first; if the gate refuses it, rank layers by sensitivity on
    calibration rows and keep the worst in FP32, one more at a time. At least one
    layer stays quantized: a model with every layer in FP32 is no INT8 build."""
    progress("quantize", 0.35)
    full = make((), None, "candidate-0")
    first = gate(full)
    most_kept = min(options.max_fp32_layers, len(layers) - 1)
    if first.passed or most_kept <= 0:
        return (
            full,
            first,
            {
                "kept_fp32": [],
                "max_kept": max(most_kept, 0),
                "tries": [
                    {
                        "kept_fp32": [],
                        "mean_cosine": first.mean_cosine,
                        "top1_agreement": first.top1_agreement,
                    }
                ],
            },
        )

    progress("sensitivity-sweep", 0.45)
    probe_rows = take(calibration, slice(0, min(SWEEP_ROWS, rows(calibration))))
    baseline = evaluate.run(evaluate.session(prepared), probe_rows, batch)
    sensitivities = []
    for i, layer in enumerate(layers):
        probe = make((), (layer,), "probe")
        outputs = evaluate.run(evaluate.session(probe), probe_rows, batch)
        score = compare(baseline, outputs, probe_rows, rule).score
        sensitivities.append(selective.Sensitivity(layer, 1.0 if score is None else score))
        progress("sensitivity-sweep", 0.45 + 0.2 * (i + 1) / len(layers))
    ranked = selective.rank(sensitivities)

    candidates: dict[tuple[str, ...], Path] = {(): full}

    def attempt(kept: tuple[str, ...]) -> tuple[bool, AccuracyReport]:
        if kept == ():
            return first.passed, first
        progress("select-fp32-layers", 0.65)
        path = candidates[kept] = make(kept, None, f"candidate-{len(kept)}")
        verdict = gate(path)
        return verdict.passed, verdict

    chosen = selective.search([s.node for s in ranked], attempt, most_kept)
    details = {
        "kept_fp32": list(chosen.kept_fp32),
        "max_kept": most_kept,
        "tries": [
            {
                "kept_fp32": list(kept),
                "mean_cosine": verdict.mean_cosine,
                "top1_agreement": verdict.top1_agreement,
            }
            for kept, verdict in chosen.tried
        ],
        "most_sensitive": [{"node": s.node, "score": round(s.score, 5)} for s in ranked[:8]],
    }
    return candidates[chosen.kept_fp32], chosen.verdict, details


def _summary(accuracy: AccuracyReport, selective: dict[str, Any] | None = None) -> dict[str, Any]:
    """An arm's gate verdict in the report: the headline numbers, not every output."""
    summary: dict[str, Any] = {
        "mean_cosine": accuracy.mean_cosine,
        "min_cosine": accuracy.min_cosine,
        "top1_agreement": accuracy.top1_agreement,
    }
    if selective is not None:
        summary["kept_fp32"] = list(selective.get("kept_fp32", []))
    return summary


def _qattention_arm(
    model: Path, workdir: Path, embeddings: bool, gate: Callable[[Path], AccuracyReport]
) -> tuple[Path, AccuracyReport | None, baselines.ArmResult]:
    """Attention fused, then MatMul + Attention quantized dynamically, gated. Whatever
    keeps it from being a candidate (the optimizer fuses no attention in this graph,
    the quantizer or the engine fails) is the arm's reason, never the build's failure:
    the matmul arm stands. No selective search here (the fused graph names its layers
    differently); the matmul arm keeps that."""
    name = baselines.ARM_QATTENTION
    path = workdir / "candidate-qattention.onnx"
    try:
        fused = quantize.prepare(
            model, workdir / "prepared-attention.onnx", attention=True, embed_fusion=not embeddings
        )
        found = quantize.fused_ops(onnx.load(str(fused), load_external_data=False))
        if not found.get("Attention"):
            reason = "ONNX Runtime's transformer optimizer fused no attention in this graph"
            return path, None, baselines.ArmResult(name, False, {}, reason, tried=False)
        quantize.dynamic(fused, path, attention=True, embeddings=embeddings)
        verdict = gate(path)
    except BuildFailed as exc:
        return path, None, baselines.ArmResult(name, False, {}, str(exc))
    summary = {**_summary(verdict), "attention_nodes": found["Attention"]}
    failed = None if verdict.passed else "; ".join(verdict.failures)
    return path, verdict, baselines.ArmResult(name, verdict.passed, summary, failed)


def _fused_fp32(model: Path, workdir: Path) -> tuple[Path | None, dict[str, int] | str]:
    """The fused FP32 baseline (every transformer fusion ONNX Runtime's optimizer
    finds), or the reason there is none: then it is the raw FP32 model."""
    try:
        fused = quantize.prepare(model, workdir / "fused-fp32.onnx", attention=True)
    except BuildFailed as exc:
        return None, f"ONNX Runtime's transformer optimizer failed on this graph: {exc}"
    found = quantize.fused_ops(onnx.load(str(fused), load_external_data=False))
    if not found:
        return None, (
            "ONNX Runtime's transformer optimizer fused nothing in this graph: the fused "
            "FP32 baseline is the raw FP32 model"
        )
    return fused, found


def _benchmark(
    inputs: Inputs,
    candidates: dict[str, Path],
    data: Split,
    plan: BenchPlan,
    workdir: Path,
    batch: int,
) -> dict[str, Any]:
    """Every candidate (the arms that passed the gate, or the one engine) with the
    raw and fused FP32 baselines and the stable build, side by side at the padded
    length (held-out rows) and at real lengths (calibration rows, ``baselines``); the
    arm is chosen by these numbers, the report is for the chosen one."""
    fused, fusions = _fused_fp32(inputs.model, workdir)
    models = {**candidates, baselines.RAW_FP32: inputs.model}
    if fused is not None:
        models[baselines.FUSED_FP32] = fused
    if inputs.stable_model is not None:
        models["stable"] = inputs.stable_model
    # The stable build may be another version of the model: optional, and it fixes no
    # batch size for this one.
    optional = frozenset({"stable"})
    padded = side_by_side(
        models, data.held_out, plan.batch, plan.seconds, plan.rounds, plan.threads, optional
    )
    real_lengths = baselines.real_length_batches(
        data.calibration, inputs.signature, inputs.mask_input, batch
    )
    real: dict[str, Measurement] | None = None
    if isinstance(real_lengths, baselines.RealLengths):
        unstable = {k: v for k, v in models.items() if k != "stable"}
        real = on_feeds(
            unstable, None, real_lengths.feeds, plan.seconds, plan.rounds, threads=plan.threads
        )
    deciding = real if real is not None else padded
    arm = None
    if set(candidates) != {"candidate"}:
        results = [baselines.ArmResult(name, True, {}) for name in candidates]
        arm = baselines.choose_arm(results, {k: deciding[k].rows_per_second for k in candidates})
    label = arm or "candidate"

    def view(measured: dict[str, Measurement] | None) -> dict[str, Measurement] | None:
        if measured is None:
            return None
        return {("candidate" if k == label else k): v for k, v in measured.items()}

    result = baselines.speed_report(
        view(padded) or {},
        view(real),
        real_lengths.summary if isinstance(real_lengths, baselines.RealLengths) else real_lengths,
        fusions,
        arm,
    )
    if arm is not None:
        result["arm_decision"] = {
            "by": baselines.REAL_LENGTHS if real is not None else baselines.PADDED,
            "rows_per_second": {
                name: round(deciding[name].rows_per_second, 3) for name in candidates
            },
            "padded_rows_per_second": {
                name: round(padded[name].rows_per_second, 3) for name in candidates
            },
        }
    # The names reports had before the baselines were named: the padded figures.
    result["candidate"] = padded[label].to_dict()
    result["fp32"] = padded[baselines.RAW_FP32].to_dict()
    candidate = padded[label].rows_per_second
    result["speedup_vs_fp32"] = round(candidate / padded[baselines.RAW_FP32].rows_per_second, 3)
    if "stable" in models and "stable" not in padded:
        result["stable_error"] = "the stable build does not run on this version's inputs"
    result["stable_build"] = inputs.stable_build
    if "stable" in padded:
        result["stable"] = padded["stable"].to_dict()
        ratio = candidate / padded["stable"].rows_per_second
        result["speedup_vs_stable"] = round(ratio, 3)
        result["performance_regression"] = bool(ratio < 1.0 - plan.regression_tolerance)
    else:
        result["speedup_vs_stable"] = None
        result["performance_regression"] = False
    return result


OPENVINO_CANDIDATE = "candidate"


def _compile_openvino(
    inputs: Inputs,
    recipe: Recipe,
    options: BuildOptions,
    workdir: Path,
    bench: BenchPlan,
    progress: Progress,
    started: float,
) -> Result:
    """The openvino-cpu build: OpenVINO reads the ONNX model, NNCF quantizes it (int8,
    from the calibration rows the ONNX Runtime int8 recipe uses), it is saved as IR
    (``model.xml``/``model.bin``), compiled with the precision hint the recipe and the
    CPU decide (``recipes.openvino_precision``), gated on the held-out rows as OpenVINO
    runs it, against ONNX Runtime's FP32 answers, and benchmarked against the raw and
    fused FP32 baselines (ONNX Runtime) at the padded and at real lengths. The report's
    ``openvino`` says the precision OpenVINO compiled with, read back from it.
    Anything OpenVINO or NNCF refuses is ``BuildFailed`` with their words; nothing is
    written outside ``workdir``."""
    openvino.require()
    capabilities = openvino.capabilities()
    precision = openvino_precision(recipe, capabilities)  # bf16 without BF16: refused now
    report: dict[str, Any] = {
        "recipe": recipe.value,
        "target": Target.OPENVINO_CPU.value,
        "options": options.to_dict(),
    }
    progress("check-calibration-data", 0.1)
    data = split(
        inputs.signature, inputs.sample, inputs.calibration, calibrates=recipe is Recipe.INT8
    )
    report["calibration"] = {
        "rows": rows(data.calibration),
        "held_out_rows": rows(data.held_out),
        "source": data.source,
    }
    progress("read-openvino", 0.15)
    model = openvino.read_onnx(inputs.model)
    batch = evaluate.batch_size(inputs.signature)
    reference = evaluate.run(evaluate.session(inputs.model), data.held_out, batch)
    rule = resolve_rule(
        reference,
        options.min_cosine,
        inputs.output_kinds,
        mask_input=inputs.mask_input,
        min_row_cosine=options.min_row_cosine,
        batched=inputs.signature.batch_dim is not None,
        token_outputs=token_outputs(inputs.signature, inputs.mask_input),
    )
    if recipe is Recipe.INT8:
        progress("quantize-nncf", 0.3)
        feeds = _row_feeds(data.calibration, inputs.signature)
        model = openvino.quantize(model, feeds, len(feeds))
        layers = openvino.int8_layers(model)
        report["quantization"] = {
            "method": "NNCF post-training quantization, model type transformer",
            "calibration_rows": len(feeds),
            "fake_quantize_nodes": layers,
        }
        if layers == 0:
            raise BuildFailed(
                "nothing was quantized: NNCF found no layer to quantize in this model; "
                "build it as fp32 or bf16"
            )
    folder = workdir / "openvino"
    folder.mkdir(exist_ok=True)
    engine = openvino.save(model, folder / openvino.IR_XML)
    progress("accuracy-gate", 0.5)
    names = [o.name for o in inputs.signature.outputs]
    session = openvino.Session(engine, precision, bench.threads, names)
    used = session.used()
    report["openvino"] = {
        "version": openvino.version(),
        "cpu_capabilities": capabilities,
        "inference_precision_requested": precision,
        **used,
    }
    candidate = evaluate.run(session, data.held_out, batch)  # type: ignore[arg-type]
    accuracy = compare(reference, candidate, data.held_out, rule, options.min_top1)
    report["accuracy"] = accuracy.to_dict()
    if not accuracy.passed:
        report["seconds"] = round(time.monotonic() - started, 2)
        raise GateFailed("accuracy gate failed: " + "; ".join(accuracy.failures), report)
    progress("benchmark", 0.75)
    report["benchmark"] = _benchmark_openvino(inputs, session, engine, data, bench, workdir)
    weights = engine.with_suffix(".bin")
    report["size_mb"] = {
        "fp32": round(inputs.model.stat().st_size / 1e6, 3),
        "candidate": round((engine.stat().st_size + weights.stat().st_size) / 1e6, 3),
    }
    report["seconds"] = round(time.monotonic() - started, 2)
    return Result(engine, report)


def _row_feeds(data: Arrays, signature: Signature) -> list[Arrays]:
    """The calibration rows one by one (constants whole): NNCF's dataset items. A model
    without a batch axis has one item, its whole sample."""
    if signature.batch_dim is None:
        return [dict(data)]
    return [dict(take(data, slice(i, i + 1))) for i in range(rows(data))]


def _benchmark_openvino(
    inputs: Inputs,
    session: openvino.Session,
    engine: Path,
    data: Split,
    plan: BenchPlan,
    workdir: Path,
) -> dict[str, Any]:
    """The OpenVINO engine (compiled as served, its precision read back) next to ONNX
    Runtime's raw and fused FP32 baselines, at the padded and at real lengths, like
    ``_benchmark``; no stable build races it (that is ONNX Runtime's)."""
    fused, fusions = _fused_fp32(inputs.model, workdir)
    models = {OPENVINO_CANDIDATE: engine.with_suffix(".bin"), baselines.RAW_FP32: inputs.model}
    if fused is not None:
        models[baselines.FUSED_FP32] = fused
    sessions: dict[str, Any] = {
        label: evaluate.session(path, plan.threads)
        for label, path in models.items()
        if label != OPENVINO_CANDIDATE
    }
    sessions[OPENVINO_CANDIDATE] = session
    split_inputs = [n for n in data.held_out if n not in getattr(data.held_out, "constants", ())]
    size = fixed_batch([sessions[baselines.RAW_FP32]], split_inputs) or plan.batch
    feed = take(data.held_out, np.arange(size) % rows(data.held_out))
    padded = on_feeds(models, sessions, [feed], plan.seconds, plan.rounds)
    real_lengths = baselines.real_length_batches(
        data.calibration, inputs.signature, inputs.mask_input, evaluate.batch_size(inputs.signature)
    )
    real: dict[str, Measurement] | None = None
    if isinstance(real_lengths, baselines.RealLengths):
        real = on_feeds(models, sessions, real_lengths.feeds, plan.seconds, plan.rounds)
    result = baselines.speed_report(
        padded,
        real,
        real_lengths.summary if isinstance(real_lengths, baselines.RealLengths) else real_lengths,
        fusions,
    )
    result["candidate_runtime"] = {
        "runtime": "openvino",
        "description": "the OpenVINO engine as served, compiled with the precision in "
        "the report's openvino section",
        **session.used(),
    }
    result["candidate"] = padded[OPENVINO_CANDIDATE].to_dict()
    result["fp32"] = padded[baselines.RAW_FP32].to_dict()
    result["speedup_vs_fp32"] = round(
        padded[OPENVINO_CANDIDATE].rows_per_second / padded[baselines.RAW_FP32].rows_per_second, 3
    )
    result["stable_build"] = None
    result["speedup_vs_stable"] = None
    result["performance_regression"] = False
    return result
