from __future__ import annotations

import numpy as np
import pytest

from shipway.builds.accuracy import compare, cosine_rows, mean_pool


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
    report = compare({"h": hidden}, {"h": wrong}, {"attention_mask": mask}, threshold=0.99)
    assert not report.passed
    assert "mean cosine" in report.failures[0]
    assert report.min_cosine is not None and report.min_cosine < report.mean_cosine  # type: ignore[operator]


def test_class_scores_report_top1_agreement() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    flipped = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    report = compare({"logits": scores}, {"logits": flipped}, {}, threshold=0.5)
    (out,) = report.outputs
    assert out.kind == "rows" and out.top1_agreement == pytest.approx(2 / 3)


def test_missing_or_misshapen_outputs_and_integer_mismatch_fail() -> None:
    ref = {"h": np.zeros((2, 3), np.float32), "ids": np.arange(4)}
    report = compare(ref, {"ids": np.arange(4) + 1}, {})
    assert not report.passed
    assert any("shape None" in f for f in report.failures)
    assert any("integer" in f for f in report.failures)
