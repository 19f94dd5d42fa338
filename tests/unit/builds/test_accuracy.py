from __future__ import annotations

import json

import numpy as np
import pytest

from shipway.builds.accuracy import (
    AgreementRule,
    class_score_outputs,
    compare,
    compare_output,
    cosine_rows,
    is_distribution,
    mean_pool,
    output_kinds,
    resolve_rule,
    rows_agree,
)
from shipway.errors import InvalidInput


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def with_cosine(reference: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Rows whose cosine with ``reference``'s rows is exactly ``cosine``: the reference
    plus an orthogonal component of the right length."""
    ref = reference.astype(np.float64).reshape(reference.shape[0], -1)
    noise = rng.normal(size=ref.shape)
    noise -= (np.einsum("ij,ij->i", noise, ref) / np.einsum("ij,ij->i", ref, ref))[:, None] * ref
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    length = np.linalg.norm(ref, axis=1, keepdims=True) * np.tan(np.arccos(cosine))
    return (ref + noise * length).reshape(reference.shape)


def test_mean_pool_ignores_padding() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 0.0]])


def test_cosine_rows_handles_zero_vectors() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 1.0, 0.0])


def test_identical_outputs_pass_with_cosine_one() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 6, 8)).astype(np.float32)
    ids = rng.integers(0, 9, size=(4, 6))
    mask = np.ones((4, 6), dtype=np.int64)
    report = compare(
        {"h": hidden, "ids": ids}, {"h": hidden.copy(), "ids": ids.copy()}, {"attention_mask": mask}
    )
    assert report.passed and report.mean_cosine == pytest.approx(1.0)
    kinds = {o.name: o.kind for o in report.outputs}
    assert kinds == {"h": "pooled-embedding", "ids": "exact"}


def test_noise_on_padding_does_not_count_but_noise_on_tokens_does() -> None:
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(8, 5, 16)).astype(np.float32)
    mask = np.ones((8, 5), dtype=np.int64)
    mask[:, 3:] = 0
    padded_noise = hidden.copy()
    padded_noise[:, 3:] += 50.0
    assert compare({"h": hidden}, {"h": padded_noise}, {"attention_mask": mask}).passed

    wrong = hidden + rng.normal(scale=1.0, size=hidden.shape).astype(np.float32)
    report = compare({"h": hidden}, {"h": wrong}, {"attention_mask": mask}, AgreementRule(0.99))
    assert not report.passed
    assert "mean cosine" in report.failures[0]
    assert report.failed[0].metric == "cosine" and report.failed[0].output == "h"
    assert report.min_cosine is not None and report.min_cosine < report.mean_cosine  # type: ignore[operator]


def test_class_scores_report_and_gate_top1_agreement() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    flipped = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    rule = resolve_rule({"probs": scores}, min_cosine=0.5)
    assert rule.class_scores == {"probs"}  # rows are probability distributions
    report = compare({"probs": scores}, {"probs": flipped}, {}, rule)
    (out,) = report.outputs
    assert out.kind == "class-scores" and out.top1_agreement == pytest.approx(2 / 3)
    assert not report.passed
    assert [(f.output, f.metric) for f in report.failed] == [("probs", "top1")]


def test_a_classifier_whose_decisions_flip_fails_on_top1_though_its_cosine_is_one() -> None:
    # Issue 11: five classes close together; INT8 noise moves the argmax of many rows
    # while the probability vectors stay almost the same.
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=0.01, size=(200, 5))
    probs = softmax(logits)
    candidate = softmax(logits + rng.normal(scale=0.01, size=logits.shape))
    rule = resolve_rule({"probs": probs})
    report = compare({"probs": probs}, {"probs": candidate}, {}, rule)
    (out,) = report.outputs
    assert out.mean_cosine is not None and out.mean_cosine > 0.9999
    assert out.top1_agreement is not None and out.top1_agreement < 0.9
    assert not report.passed and report.failed[0].metric == "top1"
    assert "'probs'" in report.failures[0] and "top1" in report.failures[0]
    # The same candidate with a bar of 0 on top-1 passes: the top-1 check is what fails.
    assert compare({"probs": probs}, {"probs": candidate}, {}, rule, min_top1=0.0).passed


def test_an_embedding_is_never_gated_on_top1() -> None:
    # MiniLM's pooled output: [batch, 384] floats, negative values, not distributions.
    rng = np.random.default_rng(3)
    pooled = rng.normal(size=(16, 384)).astype(np.float32)
    assert not is_distribution(pooled)
    rule = resolve_rule({"sentence_embedding": pooled})
    assert rule.class_scores == frozenset()
    noisy = with_cosine(pooled, 0.995, rng).astype(np.float32)
    assert (pooled.argmax(1) != noisy.argmax(1)).any()  # argmax moves; it does not matter
    report = compare({"sentence_embedding": pooled}, {"sentence_embedding": noisy}, {}, rule)
    assert report.passed and report.outputs[0].top1_agreement is None
    assert report.outputs[0].kind == "rows"


def test_class_scores_are_recognized_by_tag_or_by_probability_rows() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    probs = softmax(logits)
    outputs = {"logits": logits, "probs": probs, "emb": rng.normal(size=(8, 4))}
    assert class_score_outputs(outputs, {}) == {"probs"}  # logits go negative
    kinds = output_kinds(
        {"shipway.output.logits": "class-scores", "shipway.output.probs": "embedding", "x": "y"},
        outputs,
    )
    assert kinds == {"logits": "class-scores", "probs": "embedding"}
    assert class_score_outputs(outputs, kinds) == {"logits"}
    assert not is_distribution(probs * 1.1)  # rows summing to 1.1 are not distributions
    assert not is_distribution(np.full((3, 1), 1.0, np.float32))  # one class is no choice
    with pytest.raises(InvalidInput, match="names no output"):
        output_kinds({"shipway.output.logit": "class-scores"}, outputs)
    with pytest.raises(InvalidInput, match="choose one of class-scores, embedding"):
        output_kinds({"shipway.output.logits": "labels"}, outputs)


def test_non_finite_candidate_values_fail_the_gate_though_nan_hides_from_comparisons() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(6, 8)).astype(np.float32)
    got = ref.copy()
    got[1, 3] = np.inf
    got[4, 0] = np.nan
    report = compare({"y": ref}, {"y": got}, {})
    (out,) = report.outputs
    assert out.nonfinite_rows == 2
    assert out.mean_cosine is not None and np.isfinite(out.mean_cosine)
    assert not report.passed
    assert [(f.output, f.metric, f.value) for f in report.failed] == [("y", "nonfinite", 2)]
    # Non-finite where FP32 has the same non-finite value is no difference.
    both = ref.copy()
    both[2, 2] = -np.inf
    assert compare({"y": both}, {"y": both.copy()}, {}).passed


def test_missing_or_misshapen_outputs_and_integer_mismatch_fail() -> None:
    ref = {"h": np.zeros((2, 3), np.float32), "ids": np.arange(4)}
    report = compare(ref, {"ids": np.arange(4) + 1}, {})
    assert not report.passed
    assert any("shape None" in f for f in report.failures)
    assert any("integer" in f for f in report.failures)
    assert {f.metric for f in report.failed} == {"shape", "exact"}


def test_rule_round_trips_through_json_and_refuses_unknown_fields() -> None:
    rule = AgreementRule(0.995, frozenset({"probs", "logits"}), "mask")
    assert AgreementRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert rule.to_dict() == {
        "min_cosine": 0.995,
        "class_scores": ["logits", "probs"],
        "mask_input": "mask",
        "min_row_cosine": None,
        "scales": {},
        "batched": True,
        "token_outputs": [],
    }
    assert AgreementRule.from_dict({}) == AgreementRule()
    tokens = AgreementRule(token_outputs=frozenset({"h"}))
    assert AgreementRule.from_dict(json.loads(json.dumps(tokens.to_dict()))) == tokens
    # a rule saved before token_outputs existed still loads
    old = {k: v for k, v in rule.to_dict().items() if k != "token_outputs"}
    assert AgreementRule.from_dict(old) == rule
    with pytest.raises(InvalidInput, match="token_outputs must be a list of output names"):
        AgreementRule.from_dict({"token_outputs": "h"})
    with pytest.raises(InvalidInput, match="unknown agreement rule fields"):
        AgreementRule.from_dict({"min_cos": 0.9})
    with pytest.raises(InvalidInput, match="min_cosine must be within"):
        AgreementRule.from_dict({"min_cosine": 0})


def test_rows_agree_on_minilm_int8_like_noise() -> None:
    # Token states [batch, tokens, hidden] with padding: each row's mask-pooled
    # embedding at cosine 0.995 from FP32, as INT8 MiniLM measured (README).
    rng = np.random.default_rng(6)
    hidden = rng.normal(size=(4, 7, 384)).astype(np.float32)
    mask = np.ones((4, 7), np.int64)
    mask[:, 5:] = 0
    pooled = mean_pool(hidden, mask)
    target = with_cosine(pooled, 0.995, rng)
    candidate = hidden.astype(np.float64)
    candidate[:, :5] += (target - pooled)[:, None, :]  # every unmasked token moves alike
    candidate[:, 5:] += 100.0  # padding is not looked at
    inputs = {"input_ids": np.zeros((4, 7), np.int64), "attention_mask": mask}
    reference, got = {"tokens": hidden}, {"tokens": candidate.astype(np.float32)}
    rows = compare_output("tokens", hidden, got["tokens"], mask)
    np.testing.assert_allclose(rows.cosine, 0.995, atol=1e-4)
    assert rows_agree(reference, got, inputs, AgreementRule(0.99)).tolist() == [True] * 4
    assert rows_agree(reference, got, inputs, AgreementRule(0.999)).tolist() == [False] * 4


def test_rows_agree_flags_the_flipped_class_the_inf_and_the_changed_id() -> None:
    probs = softmax(np.array([[2.0, 1.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0]]))
    flipped = probs.copy()
    flipped[1] = probs[1][[1, 0, 2]]  # row 1: classes 0 and 1 swap; cosine stays ~0.99
    assert cosine_rows(probs[1:2], flipped[1:2])[0] > 0.99
    rule = AgreementRule(0.99, frozenset({"probs"}))
    assert rows_agree({"probs": probs}, {"probs": flipped}, {}, rule).tolist() == [
        True,
        False,
        True,
    ]
    # Without the class-score rule the same rows agree: cosine alone misses it.
    assert rows_agree({"probs": probs}, {"probs": flipped}, {}, AgreementRule(0.99)).all()

    emb = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    bad = emb.copy()
    bad[2, 1] = np.inf
    assert rows_agree({"e": emb}, {"e": bad}, {}, rule).tolist() == [True, True, False]
    nan = emb.copy()
    nan[0, 0] = np.nan
    assert rows_agree({"e": emb}, {"e": nan}, {}, rule).tolist() == [False, True, True]

    ids = np.array([[1, 2], [3, 4], [5, 6]])
    changed = ids.copy()
    changed[0, 1] = 9
    both = rows_agree({"e": emb, "ids": ids}, {"e": bad, "ids": changed}, {}, rule)
    assert both.tolist() == [False, True, False]
    # A missing output disagrees everywhere; extra candidate outputs do not matter.
    assert rows_agree({"e": emb}, {"other": emb}, {}, rule).tolist() == [False] * 3
    assert rows_agree({"e": emb}, {"e": emb, "other": emb}, {}, rule).all()


def test_the_gate_and_the_row_test_share_one_arithmetic() -> None:
    # The gate's top-1 agreement is the share of rows the per-row test accepts when
    # the cosine bar is out of the way, and its worst cosine the lowest row's.
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=0.05, size=(50, 4))
    probs = softmax(logits)
    candidate = softmax(logits + rng.normal(scale=0.05, size=logits.shape))
    rule = AgreementRule(1e-9, frozenset({"p"}))
    report = compare({"p": probs}, {"p": candidate}, {}, rule)
    agree = rows_agree({"p": probs}, {"p": candidate}, {}, rule)
    assert report.outputs[0].top1_agreement == pytest.approx(agree.mean())
    assert 0 < agree.mean() < 1
    cosines = compare_output("p", probs, candidate).cosine
    assert cosines is not None and report.outputs[0].min_cosine == pytest.approx(cosines.min())


def test_a_scalar_output_decides_for_every_row() -> None:
    ref = {"y": np.ones((3, 2), np.float32), "count": np.array(5)}
    assert (
        rows_agree(ref, {**ref, "count": np.array(6)}, {}, AgreementRule()).tolist() == [False] * 3
    )
    assert rows_agree(ref, dict(ref), {}, AgreementRule()).tolist() == [True] * 3


def test_one_value_rows_are_judged_on_relative_error_not_on_their_sign() -> None:
    # a regression output [batch, 1]: a cosine of single numbers is 1 for any two of the
    # same sign, so 2.0 against 3.0 would pass; judged on relative error it does not
    ref = np.array([[2.0], [-1.0], [0.0], [10.0]], np.float32)
    close = np.array([[2.02], [-1.01], [0.0], [10.1]], np.float32)  # 1 % off
    far = np.array([[3.0], [-1.0], [0.0], [10.0]], np.float32)  # one row 33 % off
    np.testing.assert_allclose(cosine_rows(ref, close), 1 - (0.01 / 1.01) ** 2 / 2, rtol=1e-4)
    assert compare({"y": ref}, {"y": close}, {}).passed
    report = compare({"y": ref}, {"y": far}, {}, AgreementRule(min_cosine=0.999))
    assert not report.passed and "mean cosine" in report.failures[0]
    assert rows_agree({"y": ref}, {"y": far}, {}, AgreementRule()).tolist() == [
        False,
        True,
        True,
        True,
    ]
    # the same holds for a [batch] vector, one value per row; a flipped sign is -1
    assert cosine_rows(np.array([1.0, -2.0]), np.array([1.0, 2.0])).tolist() == [1.0, -1.0]


def test_every_row_is_held_to_the_row_floor_in_the_gate_and_in_shadow() -> None:
    # a mean of 0.995 can hide one row far off: the gate refuses it, and the shadow's
    # per-row test is that same floor (1 - 2 * (1 - 0.99) = 0.98 by default)
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(10, 16))
    got = np.concatenate([with_cosine(ref[:9], 0.9995, rng), with_cosine(ref[9:], 0.96, rng)])
    report = compare({"e": ref}, {"e": got}, {})
    assert report.mean_cosine is not None and report.mean_cosine >= 0.99
    assert not report.passed and "worst row cosine 0.960000 < 0.98" in report.failures[0]
    assert rows_agree({"e": ref}, {"e": got}, {}, AgreementRule()).tolist() == [True] * 9 + [False]
    # a row at 0.985 is within the floor: a gate-passing build's rows agree in shadow
    near = np.concatenate([with_cosine(ref[:9], 0.9995, rng), with_cosine(ref[9:], 0.985, rng)])
    assert compare({"e": ref}, {"e": near}, {}).passed
    assert rows_agree({"e": ref}, {"e": near}, {}, AgreementRule()).all()
    assert AgreementRule(min_cosine=0.999).row_threshold == pytest.approx(0.998)
    assert AgreementRule(min_row_cosine=0.95).row_threshold == 0.95
    with pytest.raises(InvalidInput, match="min_row_cosine"):
        AgreementRule(min_row_cosine=0.0)


def test_one_value_rows_near_zero_are_judged_against_the_outputs_size() -> None:
    # a regression output around 0: 1 % noise is an excellent INT8 result, though a
    # value of 1e-3 off by 1e-2 is 1,000 % of itself
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(200, 1)).astype(np.float32)
    got = ref + rng.normal(scale=0.01, size=ref.shape).astype(np.float32)
    rule = resolve_rule({"y": ref})
    assert dict(rule.scales)["y"] == pytest.approx(float(np.sqrt(np.mean(ref.astype(float) ** 2))))
    report = compare({"y": ref}, {"y": got}, {}, rule)
    assert report.passed and report.min_cosine is not None and report.min_cosine > 0.999
    # the shadow judges one request's row against the same size, carried in the rule
    near_zero = {"y": np.array([[1e-3]], np.float32)}
    off = {"y": np.array([[1.1e-2]], np.float32)}
    carried = AgreementRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert rows_agree(near_zero, off, {}, carried).tolist() == [True]
    assert rows_agree(near_zero, off, {}, AgreementRule()).tolist() == [False]  # no size
    # and a real error still fails: 30 % of the output's size on every row
    assert not compare({"y": ref}, {"y": ref + 0.3}, {}, rule).passed


def test_a_model_without_a_batch_axis_is_one_row_a_request() -> None:
    # y [4] of a model without a batch axis is one vector, judged by its angle; read as
    # four rows of one value each it would be four relative errors instead
    ref = {"y": np.array([1.0, -2.0, 3.0, 0.5], np.float32)}
    got = {"y": np.array([1.0, -2.0, 3.0, 0.9], np.float32)}  # one small element off
    whole = resolve_rule(ref, batched=False)
    assert not whole.batched and not AgreementRule.from_dict(whole.to_dict()).batched
    assert rows_agree(ref, got, {}, whole).tolist() == [True]  # the vector's cosine 0.9947
    assert rows_agree(ref, got, {}, AgreementRule()).tolist() == [True, True, True, False]
    report = compare(ref, got, {}, whole)
    assert report.passed and report.outputs[0].min_cosine == pytest.approx(0.99473, abs=1e-4)
