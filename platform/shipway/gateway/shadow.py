"""Does a shadow's answer agree with the answer the client got? Pure; no I/O.

A mirrored request's answer agrees when every row passes the same per-row test as the
candidate build's accuracy gate (``shipway.builds.accuracy.rows_agree``): the cosine of
the row — of the mask-pooled embedding for ``[batch, tokens, hidden]`` outputs — at
least the gate's ``min_cosine``, the same top-1 class for class scores, integers and
strings exactly, no non-finite value the live answer lacks. A build that passed its
gate therefore agrees in shadow on the same kind of traffic; an element-wise
tolerance (what this was before) fails every quantized build, whose answers differ
from FP32 in every element by design.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shipway.builds.accuracy import class_score_outputs, rows_agree
from shipway.gateway.routing import VariantRoute


def shadow_rows(
    shadow: VariantRoute,
    live: dict[str, np.ndarray],
    mirrored: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
) -> np.ndarray:
    """Per row of the request, does the shadow's answer agree (bool ``[rows]``)?

    ``live``: the outputs of the answer the client got; ``mirrored``: the shadow's
    outputs for the same request; ``inputs``: the request's tensors (for the mask).
    Rows are counted one by one, as the gate counts its held-out rows (its top-1 rate
    is a share of rows), so a request of several rows is as many comparisons.
    Class-score outputs are the rule's (from the build's gate), those the registration
    tags declare, and outputs whose live rows are probability distributions (an fp32
    build has no gate to have found them). No comparable output: one disagreeing row."""
    if not live:
        return np.zeros(1, dtype=bool)
    kinds = dict(shadow.output_kinds)
    rule = shadow.agreement
    rule = replace(rule, class_scores=rule.class_scores | class_score_outputs(live, kinds))
    try:
        return rows_agree(live, mirrored, inputs, rule)
    except ValueError:  # outputs that disagree on their number of rows: not comparable
        return np.zeros(answer_rows(live, rule.batched), dtype=bool)


def shadow_agrees(
    shadow: VariantRoute,
    live: dict[str, np.ndarray],
    mirrored: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
) -> bool:
    """Every row agrees (``shadow_rows``)."""
    return bool(shadow_rows(shadow, live, mirrored, inputs).all())


def answer_rows(live: dict[str, np.ndarray], batched: bool = True) -> int:
    """The rows of an answer, as ``rows_agree`` counts them: the leading axis of its
    outputs (1 for an answer of scalars, or none, or of a model without a batch axis)."""
    if not batched:
        return 1
    return max((int(a.shape[0]) for a in live.values() if a.ndim), default=1)
