"""Precision conversions of an ONNX model with ONNX Runtime's quantization tools.

- ``prepare``: the graph normalized for the quantizers (``graph.normalize``: named
  nodes, Gemm as MatMul, untied weights), ONNX Runtime's transformer fusions
  (LayerNorm, GELU, bias folding; attention fusion off, so the projections stay plain
  MatMuls that Q/DQ can wrap) and symbolic shape inference, done once before
  calibration.
- ``static_qdq``: explicit quantization, Q/DQ pairs around the weighted MatMuls and
  Convs, from ranges calibrated once (a JSON cache) and encoded per target.
- ``dynamic``: weights quantized offline, activations at run time; optionally the
  fused attention (``QAttention``) and the embedding tables (``Gather``) too.
- ``fp16``: float16 weights and arithmetic, inputs and outputs kept as they were.

What helped on MiniLM (see the README's INT8 section): per-channel weights, no Q/DQ on
MatMul outputs (the next op re-quantizes what it needs, and outputs of the FFN carry
outliers), unsigned activations for CPU kernels, and keeping the few most sensitive
layers in FP32 (selective.py).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import onnx

from shipway.engines.calibration import Arrays, ArraysReader, CalibrationMethod
from shipway.engines.graph import LAYER_OPS, name_nodes, normalize
from shipway.errors import BuildFailed

log = logging.getLogger(__name__)

QUANTIZED_OPS = LAYER_OPS  # MatMul, Gemm (normalized to MatMul first), Conv


class Encoding(StrEnum):
    """How calibrated ranges become Q/DQ: the one part that depends on the target."""

    U8S8 = "u8s8"  # unsigned asymmetric activations, signed weights: fast CPU kernels
    S8S8_SYMMETRIC = "s8s8-symmetric"  # what TensorRT's explicit quantization requires


@dataclass(frozen=True)
class QuantOptions:
    method: CalibrationMethod = CalibrationMethod.PERCENTILE
    encoding: Encoding = Encoding.U8S8
    per_channel: bool = True
    percentile: float = 99.999


def prepare(
    src: Path,
    dst: Path,
    fuse: bool = True,
    num_heads: int = 0,
    hidden_size: int = 0,
    attention: bool = False,
    embed_fusion: bool = True,
) -> Path:
    """The FP32 starting point of every recipe: the normalized graph
    (``graph.normalize``), transformer fusions when ``fuse``, shape inference, and
    every node named. The fusions are ONNX Runtime contrib ops, so a graph for another
    runtime (TensorRT) gets shape inference only.

    ``attention`` also fuses attention (one ``Attention`` node per layer, whose Q/K/V
    projections the dynamic quantizer turns into ``QAttention``; static Q/DQ cannot
    wrap them, so it is off by default). ``num_heads``/``hidden_size`` 0: detected
    from the graph. The optimizer fuses only graphs it recognises; what it does not
    recognise it leaves as it was (``fused_ops`` says what it did). ``embed_fusion``
    False keeps the embedding lookups as ``Gather`` nodes (quantizable tables)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory(prefix="shipway-prep-") as tmp:
        normalized = Path(tmp) / "normalized.onnx"
        try:
            onnx.save(normalize(onnx.load(str(src))), str(normalized))
        except Exception as exc:
            raise BuildFailed(f"the model could not be prepared for quantization: {exc}") from exc
        if not fuse:
            try:
                quant_pre_process(
                    str(normalized), str(dst), skip_optimization=True, auto_merge=True
                )
            except Exception as exc:
                raise BuildFailed(f"shape inference failed on the model: {exc}") from exc
        else:
            fused = Path(tmp) / "fused.onnx"
            try:
                options = FusionOptions("bert")
                # off by default: keep Q/K/V as MatMuls that Q/DQ can wrap
                options.enable_attention = attention
                # EmbedLayerNormalization holds the embedding tables as float inputs no
                # quantizer reads: off when the tables are to be quantized (Gather)
                options.enable_embed_layer_norm = embed_fusion
                optimized = optimize_model(
                    str(normalized),
                    model_type="bert",
                    num_heads=num_heads,
                    hidden_size=hidden_size,
                    optimization_options=options,
                    opt_level=0,
                )
                optimized.save_model_to_file(str(fused))
                quant_pre_process(str(fused), str(dst), skip_optimization=True, auto_merge=True)
            except Exception as exc:  # the optimizer raises whatever the graph provokes
                raise BuildFailed(
                    f"the model could not be prepared for quantization: {exc}"
                ) from exc
    prepared = onnx.load(str(dst))
    if name_nodes(prepared.graph):  # fusions may add nodes without names
        onnx.save(prepared, str(dst))
    return dst


def calibrate(src: Path, data: Arrays, options: QuantOptions, cache: Path) -> Path:
    """Compute activation ranges once and keep them as ``cache`` (JSON)."""
    static_qdq(src, cache.with_suffix(".probe.onnx"), data, options, cache, ())
    cache.with_suffix(".probe.onnx").unlink(missing_ok=True)
    return cache


def static_qdq(
    src: Path,
    dst: Path,
    data: Arrays | None,
    options: QuantOptions,
    cache: Path,
    keep_fp32: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> Path:
    """Q/DQ INT8 model; ranges from ``cache`` when it exists, else calibrated on ``data``.

    ``keep_fp32`` names nodes left in float; ``only`` quantizes just these nodes (the
    sensitivity sweep's probe).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    symmetric = options.encoding is Encoding.S8S8_SYMMETRIC
    extra = {
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "CalibPercentile": options.percentile,
        # Not CalibMaxIntermediateOutputs: in ONNX Runtime 1.32 the min-max calibrator
        # drops (not reduces) each full chunk, and the histogram ones ignore it. Memory
        # is bounded by calibration.MAX_CALIBRATION_ROWS instead.
    }
    try:
        quantize_static(
            str(src),
            str(dst),
            ArraysReader(data) if data is not None else None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=options.per_channel,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(only) if only is not None else None,
            nodes_to_exclude=list(keep_fp32),
            calibrate_method=options.method.ort,
            calibration_cache_path=str(cache),
            extra_options=extra,
        )
    except Exception as exc:
        raise BuildFailed(f"static quantization failed: {exc}") from exc
    return dst


def dynamic(
    src: Path,
    dst: Path,
    keep_fp32: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    attention: bool = False,
    embeddings: bool = False,
) -> Path:
    """Weights INT8 offline (per channel), activations quantized at run time.

    ``attention``: fused ``Attention`` nodes become ``QAttention`` too (a graph
    prepared with ``attention=True``). ``embeddings``: ``Gather`` tables (token and
    position embeddings) are stored INT8 and dequantized after the lookup: ~4x
    smaller for the table, the bulk of a small encoder (MiniLM 53 -> 17 MB), at no
    speed cost; the tables must still be ``Gather`` inputs
    (``prepare(embed_fusion=False)``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = [
        *QUANTIZED_OPS,
        *(["Attention"] if attention else []),
        *(["Gather"] if embeddings else []),
    ]
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=ops,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(only) if only is not None else None,
            nodes_to_exclude=list(keep_fp32),
        )
    except Exception as exc:
        raise BuildFailed(f"dynamic quantization failed: {exc}") from exc
    return dst


CONTRIB_DOMAIN = "com.microsoft"


def fused_ops(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each ONNX Runtime contrib op (the transformer optimizer's
    fusions: Attention, SkipLayerNormalization, BiasGelu, ...) the graph holds; empty
    when the optimizer fused nothing."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain == CONTRIB_DOMAIN:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def embedding_tables(model: onnx.ModelProto) -> list[str]:
    """The ``Gather`` tables stored as 8-bit integers (quantized embeddings)."""
    small = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    int8 = {i.name for i in model.graph.initializer if i.data_type in small and len(i.dims) >= 2}
    return [n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in int8]


def fp16(src: Path, dst: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    except Exception as exc:
        raise BuildFailed(f"float16 conversion failed: {exc}") from exc
    return dst
