"""How fast an optimized build is, said against named baselines; which INT8 arm wins.

Pure functions over measurements (``engines.benchmark.Measurement``) and input arrays;
the build (``compile.py``) runs the models and calls these.

Baselines, named in every report:

- ``raw_fp32``: the registered FP32 export, as ONNX Runtime runs it (its own graph
  optimizations at session creation, nothing more).
- ``fused_fp32``: the same FP32 graph with ONNX Runtime's transformer fusions
  (``onnxruntime.transformers.optimizer``, model type bert: attention, LayerNorm,
  GELU, embedding). What a user who knows ONNX Runtime would deploy instead of
  Shipway; against raw FP32, INT8 looks ~5 % better on MiniLM than it is (issue 16).
  Where the optimizer fuses nothing (a graph it does not recognise), the two
  baselines are the same model, and the report says so instead of measuring it twice.

Each is measured at two shapes: ``padded`` (the held-out rows as registered, padded
to their length: 128 for MiniLM's tokenizer) and ``real_lengths``: the calibration
rows in batches of the benchmark's batch size, each batch cut to its longest real row
(by the attention mask), which is what a trimming server runs and what a client that
pads to the longest row of its batch sends. Real sentences are far shorter than 128
(median 24 tokens in the INT8 benchmark's corpus), so the two disagree.

Arms of ``int8-dynamic`` on ONNX Runtime (weights INT8 offline, activations
quantized at run time):

- ``matmul``: LayerNorm/GELU fusions, attention left as MatMuls; every weighted
  MatMul becomes ``MatMulInteger`` (the path since the first INT8 build).
- ``qattention``: attention fused into ONNX Runtime's ``Attention`` op first, whose
  packed Q/K/V projection the quantizer turns into ``QAttention``; only for graphs
  the optimizer recognises (``skipped`` with the reason otherwise).

Both arms go through the accuracy gate; of those that pass, the faster at real
lengths (at the padded length when real lengths cannot be measured) is the build's
engine; ``qattention`` only when more than ``ARM_MARGIN`` (5 %) faster than ``matmul``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipway.builds.triton_models.padding import real_lengths
from shipway.engines.benchmark import Measurement
from shipway.engines.calibration import Arrays, Rows, rows, take
from shipway.registry.signature import Signature

RAW_FP32 = "raw_fp32"
FUSED_FP32 = "fused_fp32"
PADDED = "padded"
REAL_LENGTHS = "real_lengths"
ARM_MATMUL = "matmul"
ARM_QATTENTION = "qattention"
ARMS = (ARM_MATMUL, ARM_QATTENTION)  # in order of preference on a tie
ARM_DESCRIPTIONS = {
    ARM_MATMUL: "attention unfused; weighted MatMuls quantized dynamically (MatMulInteger)",
    ARM_QATTENTION: "attention fused by ONNX Runtime's transformer optimizer; MatMuls and "
    "Attention quantized dynamically (MatMulInteger, QAttention)",
}
BASELINE_DESCRIPTIONS = {
    RAW_FP32: "the registered FP32 export",
    FUSED_FP32: "the FP32 graph with ONNX Runtime's transformer fusions (model type bert)",
}


@dataclass(frozen=True)
class ArmResult:
    """One arm of a build: its accuracy verdict, or why it was not tried.

    ``passed`` is the gate's verdict (False also for a skipped arm); ``summary`` the
    gate's headline numbers; ``reason`` why the arm was skipped or failed."""

    name: str
    passed: bool
    summary: Mapping[str, Any]
    reason: str | None = None
    tried: bool = True  # False: not applicable to this graph (``reason`` says why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": ARM_DESCRIPTIONS.get(self.name, self.name),
            "tried": self.tried,
            "passed": self.passed,
            **dict(self.summary),
            **({"reason": self.reason} if self.reason else {}),
        }


# A later arm in ``ARMS`` must beat an earlier one by this share of its rate to be
# shipped instead. Both arms answer alike (on MiniLM bit for bit), so the choice is
# speed only, and two runs on a busy 2-core machine here picked different arms at a
# 4-15 % difference: without a margin the build would flip on noise, and ``matmul``
# keeps the FP32-layer search that ``qattention`` cannot run.
ARM_MARGIN = 0.05


def choose_arm(arms: Sequence[ArmResult], rates: Mapping[str, float]) -> str | None:
    """The arm to ship of those that passed the gate and were measured (``rates``: rows/s
    at the deciding shape): the first in ``ARMS`` order unless a later one is faster by
    more than ``ARM_MARGIN`` of its rate. None when no arm passed."""
    order = {name: i for i, name in enumerate(ARMS)}
    passing = sorted(
        (a.name for a in arms if a.passed and a.name in rates),
        key=lambda name: order.get(name, len(ARMS)),
    )
    if not passing:
        return None
    chosen = passing[0]
    for name in passing[1:]:
        if rates[name] > rates[chosen] * (1 + ARM_MARGIN):
            chosen = name
    return chosen


@dataclass(frozen=True)
class RealLengths:
    """Batches of rows at their real lengths, and what they are."""

    feeds: tuple[Arrays, ...]
    summary: Mapping[str, Any]


def real_length_batches(
    data: Arrays, signature: Signature, mask_input: str | None, batch: int
) -> RealLengths | str:
    """``data``'s rows in batches of ``batch`` (in their order), each batch's sequence
    inputs cut to the batch's longest real row by the mask. Returns the reason instead
    when the model cannot be run so: no mask input, a mask that is not ``[batch, seq]``
    with ``seq`` symbolic (a fixed length is all the model takes), no batch axis."""
    if signature.batch_dim is None:
        return "the model has no batch axis (its batch size is fixed)"
    if mask_input is None:
        return "no mask input (the registration says the model has none)"
    mask = next((s for s in signature.inputs if s.name == mask_input), None)
    if mask is None or mask_input not in data:
        return f"no mask input (the model has no input {mask_input!r})"
    if len(mask.shape) != 2 or not isinstance(mask.shape[1], str):
        return f"the mask input {mask_input!r} is not [batch, seq] with seq dynamic"
    seq = mask.shape[1]
    cut = {s.name for s in signature.inputs if s.shape[1:2] == (seq,)}
    constants = data.constants if isinstance(data, Rows) else frozenset()
    feeds: list[Arrays] = []
    longest: list[int] = []
    total = rows(data)
    for start in range(0, total, batch):
        chunk = take(data, slice(start, min(start + batch, total)))
        length = max(1, int(real_lengths(chunk[mask_input]).max()))
        longest.append(length)
        feeds.append(
            {
                name: value[:, :length] if name in cut and name not in constants else value
                for name, value in chunk.items()
            }
        )
    lengths = real_lengths(np.asarray(data[mask_input]))
    return RealLengths(
        tuple(feeds),
        {
            "rows": total,
            "batches": len(feeds),
            "mean_length": round(float(lengths.mean()), 2) if total else 0.0,
            "max_length": int(lengths.max()) if total else 0,
            "padded_length": int(np.asarray(data[mask_input]).shape[1]),
            "mean_batch_length": round(float(np.mean(longest)), 2) if longest else 0.0,
        },
    )


def _ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or b.rows_per_second <= 0:
        return None
    return round(a.rows_per_second / b.rows_per_second, 3)


def speed_report(
    padded: Mapping[str, Measurement],
    real: Mapping[str, Measurement] | None,
    real_summary: Mapping[str, Any] | str,
    fusions: Mapping[str, int] | str,
    arm: str | None = None,
) -> dict[str, Any]:
    """The report's speed section for one candidate, from the measurements at both
    shapes (keys: ``candidate``, ``raw_fp32``, ``fused_fp32`` when fusion applied).

    ``fusions`` is the fused graph's fused-op counts, or the reason fusion did not
    apply (then ``fused_fp32`` is ``raw_fp32``, said so, and not measured again).
    ``real_summary`` is ``RealLengths.summary``, or why real lengths were not measured.
    """
    fused_key = FUSED_FP32 if isinstance(fusions, Mapping) else RAW_FP32
    shapes: dict[str, Mapping[str, Measurement]] = {PADDED: padded}
    if real is not None:
        shapes[REAL_LENGTHS] = real

    def figures(key: str) -> dict[str, Any]:
        return {shape: m[key].to_dict() for shape, m in shapes.items() if key in m}

    fused: dict[str, Any] = {"description": BASELINE_DESCRIPTIONS[FUSED_FP32]}
    if isinstance(fusions, Mapping):
        fused |= {"fused": True, "fusions": dict(fusions), **figures(FUSED_FP32)}
    else:
        fused |= {"fused": False, "same_as": RAW_FP32, "reason": fusions}
    speedups = {
        name: {shape: _ratio(m.get("candidate"), m.get(key)) for shape, m in shapes.items()}
        for name, key in (("raw", RAW_FP32), ("fused", fused_key))
    }
    if real is None:
        for ratios in speedups.values():
            ratios[REAL_LENGTHS] = None
    return {
        "arm": arm,
        "shapes": {
            PADDED: {"batch": padded["candidate"].batch},
            REAL_LENGTHS: dict(real_summary)
            if isinstance(real_summary, Mapping)
            else {"skipped": real_summary},
        },
        "candidate_real_lengths": figures("candidate").get(REAL_LENGTHS),
        "baselines": {
            RAW_FP32: {"description": BASELINE_DESCRIPTIONS[RAW_FP32], **figures(RAW_FP32)},
            FUSED_FP32: fused,
        },
        "speedup_vs_raw_fp32": speedups["raw"],
        "speedup_vs_fused_fp32": speedups["fused"],
    }
