"""The INT8 arm choice and the speed report's shape (``builds.baselines``): pure
functions over measurements, no model runs."""

from __future__ import annotations

import numpy as np
import pytest

from shipway.builds import baselines
from shipway.builds.baselines import ARM_MATMUL, ARM_QATTENTION, ArmResult, choose_arm
from shipway.builds.recipes import BuildOptions, Recipe
from shipway.cli.main import report_lines
from shipway.engines.benchmark import Measurement
from shipway.engines.calibration import Rows
from shipway.errors import InvalidInput
from shipway.registry.signature import Signature, TensorSpec

ENCODER = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ),
    outputs=(TensorSpec("hidden", "float32", ("batch", "seq", 8)),),
)


def arm(name: str, passed: bool = True) -> ArmResult:
    return ArmResult(name, passed, {"mean_cosine": 0.995 if passed else 0.9})


def test_the_faster_arm_that_passed_the_gate_is_chosen() -> None:
    both = [arm(ARM_MATMUL), arm(ARM_QATTENTION)]
    assert choose_arm(both, {ARM_MATMUL: 100.0, ARM_QATTENTION: 130.0}) == ARM_QATTENTION
    assert choose_arm(both, {ARM_MATMUL: 130.0, ARM_QATTENTION: 100.0}) == ARM_MATMUL
    # Faster but failed the gate: never chosen.
    failed = [arm(ARM_MATMUL), arm(ARM_QATTENTION, passed=False)]
    assert choose_arm(failed, {ARM_MATMUL: 100.0, ARM_QATTENTION: 500.0}) == ARM_MATMUL
    # A tie, or a lead within the margin (noise), keeps the present path.
    assert choose_arm(both, {ARM_MATMUL: 100.0, ARM_QATTENTION: 100.0}) == ARM_MATMUL
    assert choose_arm(both, {ARM_MATMUL: 100.0, ARM_QATTENTION: 104.9}) == ARM_MATMUL
    assert choose_arm(both, {ARM_MATMUL: 100.0, ARM_QATTENTION: 105.1}) == ARM_QATTENTION
    # order of the arms given does not matter
    assert choose_arm(both[::-1], {ARM_MATMUL: 100.0, ARM_QATTENTION: 104.9}) == ARM_MATMUL
    # Not measured (skipped: the graph was not fused): not a candidate.
    assert choose_arm(both, {ARM_MATMUL: 100.0}) == ARM_MATMUL
    assert choose_arm([arm(ARM_MATMUL, False), arm(ARM_QATTENTION, False)], {}) is None


def test_a_skipped_arm_says_why() -> None:
    skipped = ArmResult(ARM_QATTENTION, False, {}, "fused no attention", tried=False)
    assert skipped.to_dict() == {
        "description": baselines.ARM_DESCRIPTIONS[ARM_QATTENTION],
        "tried": False,
        "passed": False,
        "reason": "fused no attention",
    }


def rows_of(lengths: list[int], seq: int) -> dict[str, np.ndarray]:
    mask = np.zeros((len(lengths), seq), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return {"input_ids": mask * 7, "attention_mask": mask}


def test_real_length_batches_cut_each_batch_to_its_longest_row() -> None:
    data = rows_of([3, 9, 2, 5, 12, 1, 4], 32)
    real = baselines.real_length_batches(data, ENCODER, "attention_mask", 3)
    assert isinstance(real, baselines.RealLengths)
    assert [f["input_ids"].shape for f in real.feeds] == [(3, 9), (3, 12), (1, 4)]
    assert all(f["attention_mask"].shape == f["input_ids"].shape for f in real.feeds)
    assert real.summary == {
        "rows": 7,
        "batches": 3,
        "mean_length": round(36 / 7, 2),
        "max_length": 12,
        "padded_length": 32,
        "mean_batch_length": round(25 / 3, 2),
    }
    # Every real token is kept: the cut only drops padding.
    kept = sum(int(f["attention_mask"].sum()) for f in real.feeds)
    assert kept == int(data["attention_mask"].sum())


def test_inputs_without_the_sequence_axis_are_not_cut() -> None:
    signature = Signature(
        inputs=(*ENCODER.inputs, TensorSpec("scale", "float32", (4,))),
        outputs=ENCODER.outputs,
    )
    data = Rows({**rows_of([2, 5], 16), "scale": np.ones(4, np.float32)}, ["scale"])
    real = baselines.real_length_batches(data, signature, "attention_mask", 8)
    assert isinstance(real, baselines.RealLengths)
    assert real.feeds[0]["input_ids"].shape == (2, 5) and real.feeds[0]["scale"].shape == (4,)


@pytest.mark.parametrize(
    ("signature", "mask", "reason"),
    [
        (ENCODER, None, "no mask input"),
        (ENCODER, "input_mask", "no mask input (the model has no input 'input_mask')"),
        (
            Signature(
                (
                    TensorSpec("input_ids", "int64", (4, 16)),
                    TensorSpec("attention_mask", "int64", (4, 16)),
                ),
                (TensorSpec("hidden", "float32", (4, 16, 8)),),
            ),
            "attention_mask",
            "the model has no batch axis",
        ),
        (
            Signature(
                (
                    TensorSpec("input_ids", "int64", ("batch", 16)),
                    TensorSpec("attention_mask", "int64", ("batch", 16)),
                ),
                (TensorSpec("hidden", "float32", ("batch", 16, 8)),),
            ),
            "attention_mask",
            "is not [batch, seq] with seq dynamic",
        ),
    ],
)
def test_real_lengths_are_refused_with_the_reason(
    signature: Signature, mask: str | None, reason: str
) -> None:
    result = baselines.real_length_batches(rows_of([2, 5], 16), signature, mask, 8)
    assert isinstance(result, str) and reason in result


def measured(rate: float, batch: int = 8) -> Measurement:
    return Measurement(rate, 1000 * batch / rate, 2000 * batch / rate, batch, 1.0)


def test_the_speed_report_names_both_baselines_at_both_shapes() -> None:
    padded = {
        "candidate": measured(200.0),
        "raw_fp32": measured(100.0),
        "fused_fp32": measured(110.0),
    }
    real = {
        "candidate": measured(900.0),
        "raw_fp32": measured(300.0),
        "fused_fp32": measured(450.0),
    }
    summary = {"rows": 16, "mean_length": 24.0, "padded_length": 128}
    fusions = {"Attention": 3, "SkipLayerNormalization": 6}
    report = baselines.speed_report(padded, real, summary, fusions, ARM_QATTENTION)
    assert report["arm"] == ARM_QATTENTION
    assert report["speedup_vs_raw_fp32"] == {"padded": 2.0, "real_lengths": 3.0}
    assert report["speedup_vs_fused_fp32"] == {"padded": round(200 / 110, 3), "real_lengths": 2.0}
    raw, fused = report["baselines"]["raw_fp32"], report["baselines"]["fused_fp32"]
    assert (
        raw["padded"]["rows_per_second"] == 100.0
        and raw["real_lengths"]["rows_per_second"] == 300.0
    )
    assert fused["fused"] is True and fused["fusions"] == fusions
    assert fused["real_lengths"]["rows_per_second"] == 450.0
    assert report["candidate_real_lengths"]["rows_per_second"] == 900.0
    assert report["shapes"] == {"padded": {"batch": 8}, "real_lengths": summary}

    lines = report_lines({"benchmark": {**report, "speedup_vs_fp32": 2.0}})
    assert lines == [
        "speed: 2.00x FP32",
        "  arm: qattention",
        "  vs raw_fp32: 2.00x padded, 3.00x real_lengths",
        "  vs fused_fp32: 1.82x padded, 2.00x real_lengths",
        "  real lengths: 16 rows, mean 24.0 tokens (padded to 128)",
    ]


def test_without_fusion_the_fused_baseline_is_the_raw_one_and_says_so() -> None:
    padded = {"candidate": measured(150.0), "raw_fp32": measured(100.0)}
    report = baselines.speed_report(
        padded, None, "no mask input", "fused nothing in this graph", None
    )
    fused = report["baselines"]["fused_fp32"]
    assert fused["fused"] is False and fused["same_as"] == "raw_fp32"
    assert fused["reason"] == "fused nothing in this graph"
    assert "padded" not in fused  # not measured twice
    assert report["speedup_vs_fused_fp32"] == report["speedup_vs_raw_fp32"]
    assert report["speedup_vs_raw_fp32"] == {"padded": 1.5, "real_lengths": None}
    assert report["shapes"]["real_lengths"] == {"skipped": "no mask input"}
    assert report["candidate_real_lengths"] is None
    lines = report_lines({"benchmark": {**report, "speedup_vs_fp32": 1.5}})
    assert "  fused_fp32 = raw_fp32: fused nothing in this graph" in lines
    assert "  real lengths not measured: no mask input" in lines


def test_quantize_embeddings_is_an_int8_dynamic_option() -> None:
    options = BuildOptions.from_dict({"quantize_embeddings": True})
    options.check(Recipe.INT8_DYNAMIC)
    for recipe in (Recipe.INT8, Recipe.FP32, Recipe.FP16):
        with pytest.raises(InvalidInput, match="quantize_embeddings applies to the int8-dynamic"):
            options.check(recipe)
    BuildOptions().check(Recipe.INT8)  # off: fine anywhere
    with pytest.raises(InvalidInput, match="quantize_embeddings must be true or false"):
        BuildOptions.from_dict({"quantize_embeddings": "yes"})
