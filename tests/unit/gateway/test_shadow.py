"""A shadow's answer agrees when it passes the build gate's per-row test."""

from __future__ import annotations

import numpy as np

from shipway.builds.accuracy import AgreementRule
from shipway.gateway.routing import VariantRoute
from shipway.gateway.shadow import answer_rows, shadow_agrees, shadow_rows

RNG = np.random.default_rng(3)


def shadow(rule: AgreementRule | None = None, kinds: dict[str, str] | None = None) -> VariantRoute:
    return VariantRoute(
        "canary",
        0,
        (),
        shadow_share=1.0,
        agreement=rule or AgreementRule(),
        output_kinds=tuple((kinds or {}).items()),
    )


def test_a_quantized_answer_agrees_where_an_elementwise_tolerance_would_not() -> None:
    # MiniLM-like token states [1, tokens, 384]: INT8 moves every element by ~1e-2,
    # the pooled embedding stays at cosine ~0.995 (the gate's 0.99 passes it)
    mask = np.array([[1] * 10 + [0] * 6], dtype=np.int64)
    live = RNG.normal(size=(1, 16, 384)).astype(np.float32)
    quantized = live + RNG.normal(scale=0.08, size=live.shape).astype(np.float32)
    assert np.abs(quantized - live).max() > 1e-3  # what the element-wise check refused
    inputs = {"input_ids": np.ones((1, 16), np.int64), "attention_mask": mask}
    assert shadow_agrees(shadow(), {"h": live}, {"h": quantized}, inputs)
    wrong = {"h": RNG.normal(size=live.shape).astype(np.float32)}
    assert not shadow_agrees(shadow(), {"h": live}, wrong, inputs)
    # the rule's threshold is the build's: a stricter gate is a stricter shadow
    strict = shadow(AgreementRule(min_cosine=0.99999))
    assert not shadow_agrees(strict, {"h": live}, {"h": quantized}, inputs)


def test_class_scores_must_keep_their_decision() -> None:
    live = np.array([[0.21, 0.2, 0.2, 0.19, 0.2]], np.float32)  # softmax-like rows
    flipped = np.array([[0.2, 0.21, 0.2, 0.19, 0.2]], np.float32)  # cosine ~0.9995
    assert not shadow_agrees(shadow(), {"p": live}, {"p": flipped}, {})
    assert shadow_agrees(shadow(), {"p": live}, {"p": live * 1.0001}, {})
    # logits are no distribution: their top-1 counts when the build's rule or a tag
    # says they are class scores, and an "embedding" tag opts out
    logits, swapped = np.array([[2.0, 1.9, -1.0]]), np.array([[1.9, 2.0, -1.0]])
    assert shadow_agrees(shadow(), {"z": logits}, {"z": swapped}, {})
    gated = shadow(AgreementRule(class_scores=frozenset({"z"})))
    assert not shadow_agrees(gated, {"z": logits}, {"z": swapped}, {})
    tagged = shadow(kinds={"z": "class-scores"})
    assert not shadow_agrees(tagged, {"z": logits}, {"z": swapped}, {})
    opted_out = shadow(kinds={"p": "embedding"})
    assert shadow_agrees(opted_out, {"p": live}, {"p": flipped}, {})


def test_exact_kinds_non_finite_values_and_missing_outputs() -> None:
    text = {"t": np.array([[b"a"], [b"b"]], dtype=object)}
    assert shadow_agrees(shadow(), text, {"t": np.array([[b"a"], [b"b"]], dtype=object)}, {})
    assert not shadow_agrees(shadow(), text, {"t": np.array([[b"a"], [b"c"]], dtype=object)}, {})
    flags = {"f": np.array([[True], [False]])}
    assert not shadow_agrees(shadow(), flags, {"f": np.array([[True], [True]])}, {})
    ids = {"i": np.array([[3, 4]], np.int64)}
    assert not shadow_agrees(shadow(), ids, {"i": np.array([[3, 5]], np.int64)}, {})
    nan = {"y": np.array([[np.nan, 1.0, 2.0]], np.float32)}
    assert shadow_agrees(shadow(), nan, {"y": np.array([[np.nan, 1.0, 2.0]], np.float32)}, {})
    new_inf = {"y": np.array([[np.inf, 1.0, 2.0]], np.float32)}
    assert not shadow_agrees(shadow(), {"y": np.ones((1, 3), np.float32)}, new_inf, {})
    assert not shadow_agrees(shadow(), {"y": np.ones((1, 3), np.float32)}, {}, {})  # missing
    assert not shadow_agrees(shadow(), {}, {}, {})  # nothing to compare


def test_rows_are_counted_one_by_one_as_the_gate_counts_them() -> None:
    # a request of 4 class-score rows, one flipped: 3 rows agree and 1 does not (the
    # gate's top-1 rate is a share of rows; a request-level verdict would be stricter)
    live = np.array([[0.7, 0.2, 0.1]] * 3 + [[0.34, 0.33, 0.33]], np.float32)
    flipped = live.copy()
    flipped[3] = [0.33, 0.34, 0.33]
    assert shadow_rows(shadow(), {"p": live}, {"p": flipped}, {}).tolist() == [
        True,
        True,
        True,
        False,
    ]
    assert answer_rows({"p": live}) == 4 and answer_rows({"p": live}, batched=False) == 1
    # a model without a batch axis: the request is one row, its outputs whole (and it
    # disagrees, since one of its class decisions changed)
    whole = shadow(AgreementRule(batched=False))
    assert shadow_rows(whole, {"p": live}, {"p": flipped}, {}).tolist() == [False]
    assert shadow_rows(whole, {"p": live}, {"p": live.copy()}, {}).tolist() == [True]


def test_a_trimmed_answer_agrees_with_an_untrimmed_one_on_token_outputs() -> None:
    """Stable untrimmed (the model's values past the mask), candidate trimmed (zeros
    there): per-token logits [batch, seq] and states [batch, seq, 4] are judged where
    the mask is 1 only, once the rule names them token-level."""
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=np.int64)
    inputs = {"input_ids": np.ones((2, 5), np.int64), "attention_mask": mask}
    live = {
        "token_logits": RNG.normal(size=(2, 5)).astype(np.float32),
        "labels": np.arange(10).reshape(2, 5),
    }
    trimmed = {name: np.where(mask == 1, value, 0) for name, value in live.items()}
    tokens = frozenset({"token_logits", "labels"})
    judged = shadow(AgreementRule(token_outputs=tokens))
    assert shadow_rows(judged, live, trimmed, inputs).tolist() == [True, True]
    assert shadow_rows(judged, trimmed, live, inputs).tolist() == [True, True]
    # without the token outputs named, the masked positions count: rows disagree
    assert not shadow_rows(shadow(), live, trimmed, inputs).any()
    # within the mask, a changed value still disagrees
    changed = {k: v.copy() for k, v in trimmed.items()}
    changed["token_logits"][0, :3] = -changed["token_logits"][0, :3]
    assert shadow_rows(judged, live, changed, inputs).tolist() == [False, True]
