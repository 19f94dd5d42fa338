"""The accuracy gate: does a candidate engine still compute the same model?

Pure numpy over outputs that the caller computed on the same inputs (for a build,
held-out rows, never the calibration rows). Each output is judged by its kind, row by
row; one implementation (``compare_output``) does the per-row arithmetic for the
build's gate (``compare``: means over the held-out rows) and for the rollout's shadow
comparison (``rows_agree``: one verdict per row of one request).

Kinds of output, and what each must keep:

- **float** ``[batch, ...]``: cosine similarity of each row, flattened. For a
  ``[batch, tokens, hidden]`` output with a ``[batch, tokens]`` attention mask
  among the inputs, the cosine of the mask-aware mean-pooled embedding (what a
  sentence-embedding model serves); the token-level cosine is reported too.
- **class scores** (a float output whose last axis holds one score per class): the
  cosine as above *and* the same top-1 class in every row (at every unmasked token
  for ``[batch, tokens, classes]``). Cosine alone misses flipped decisions: five
  classes at ~0.2 each keep a cosine of 0.99999 while the argmax changes. An output
  is class scores when its registration tags it ``shipway.output.<name>=class-scores``,
  or, untagged, when every FP32 reference row is a probability distribution over
  the last axis (all values finite and >= 0, summing to 1 within 1e-3; softmax in
  float32 is within ~1e-6). That rule is never true of an embedding, whose values
  go negative, so MiniLM's ``[batch, 384]`` pooled output is never gated on top-1
  (its argmax means nothing). Logits are not distributions: tag them.
  ``shipway.output.<name>=embedding`` opts an output out of the top-1 check.
- **one value a row** (``[batch]``, ``[batch, 1]``: a regression, a score): one number
  has no angle — its cosine would only compare signs. Its relative error
  ``r = |got - ref| / max(|ref|, |got|, s)`` is judged as the cosine of the same angular
  error, ``1 - r**2 / 2`` (for a small error perpendicular to a vector, ``|b - a| / |a|
  = r`` is the angle, and ``1 - cos`` is ``r**2 / 2``), so ``min_cosine`` means the same
  tolerance for both: 0.99 allows ~14 % on a score as on an embedding. The error is
  relative to ``max(|ref|, |got|, s)`` with ``s`` the output's RMS over the gate's FP32
  rows (kept in the rule for the shadow): near zero, a value is judged against the
  output's typical size, not against itself.
- **integer and bool** outputs (ids, pass-throughs): exactly equal.
- **non-finite values**: a candidate element that is NaN or ±inf where FP32's is
  finite (or that differs from FP32's own NaN/inf) makes its row disagree, and fails
  the gate whatever the cosine says (NaN would otherwise slip through a ``<``
  comparison). Cosines are computed over the elements finite in both.

The gate passes when every output's mean cosine is at least ``min_cosine`` (0.99
by default: INT8 MiniLM keeps 0.995 pooled, see the README), every row's cosine at
least ``min_row_cosine`` (by default ``1 - 2 * (1 - min_cosine)``, 0.98: a row may be
twice as far off as the mean allows, no further), every class-score
output's top-1 agreement is at least ``min_top1`` (0.99: at most one decision in a
hundred changes), integer outputs match and no row has new non-finite values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipway.errors import InvalidInput

MASK = "attention_mask"
CLASS_SCORES = "class-scores"
EMBEDDING = "embedding"
OUTPUT_KINDS = (CLASS_SCORES, EMBEDDING)
OUTPUT_TAG_PREFIX = "shipway.output."
MASK_TAG = "shipway.mask_input"  # the registration tag naming the attention mask input
NO_MASK = "none"
PROBABILITY_TOLERANCE = 1e-3

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class AgreementRule:
    """How one candidate row is judged against its reference row; serialisable, so it
    travels in the routing table to the gateway's shadow comparison.

    ``class_scores`` names the outputs checked for the same top-1 class (the build
    resolves them from tags and the FP32 outputs, see the module docstring);
    ``mask_input`` is the input holding the ``[batch, tokens]`` attention mask, or
    None for none.
    """

    min_cosine: float = 0.99
    class_scores: frozenset[str] = field(default_factory=frozenset)
    mask_input: str | None = MASK
    # the per-row floor; None: 1 - 2 * (1 - min_cosine). The gate holds every held-out
    # row to it and the shadow every live row, so that a build that passed its gate
    # agrees in shadow on the same kind of traffic (a mean says nothing of one row)
    min_row_cosine: float | None = None
    # outputs of one value a row: their typical size (RMS over the gate's FP32 rows),
    # against which a row's error is judged (``cosine_rows``); as (name, size) pairs
    scales: tuple[tuple[str, float], ...] = ()
    # False for a model without a batch axis: each request is one row, its outputs
    # whole (an output [4] is one vector, not four values)
    batched: bool = True
    # token-level outputs ([batch, seq, ...], seq the mask's; the signature decides, as
    # for trimming: ``triton_config.sequence_layout``): compared with the positions the
    # request's mask zeroes set to zero on both sides, since a trimmed build answers
    # zeros there and an untrimmed one (a stable built before trimming, the official
    # image's backend) answers the model's values. Empty in rules saved before this field
    token_outputs: frozenset[str] = field(default_factory=frozenset)

    def scale(self, output: str) -> float:
        return dict(self.scales).get(output, 0.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_cosine <= 1.0:
            raise InvalidInput(f"min_cosine must be within (0, 1], got {self.min_cosine}")
        if self.min_row_cosine is not None and not 0.0 < self.min_row_cosine <= 1.0:
            raise InvalidInput(f"min_row_cosine must be within (0, 1], got {self.min_row_cosine}")
        object.__setattr__(self, "class_scores", frozenset(self.class_scores))
        object.__setattr__(self, "token_outputs", frozenset(self.token_outputs))

    @property
    def row_threshold(self) -> float:
        """The cosine every row must reach (a row of a gate, or of one request)."""
        if self.min_row_cosine is not None:
            return self.min_row_cosine
        return max(0.0, 1.0 - 2.0 * (1.0 - self.min_cosine))

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_cosine": self.min_cosine,
            "class_scores": sorted(self.class_scores),
            "mask_input": self.mask_input,
            "min_row_cosine": self.min_row_cosine,
            "scales": dict(self.scales),
            "batched": self.batched,
            "token_outputs": sorted(self.token_outputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgreementRule:
        known = {
            "min_cosine",
            "class_scores",
            "mask_input",
            "min_row_cosine",
            "scales",
            "batched",
            "token_outputs",
        }
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(f"unknown agreement rule fields: {sorted(unknown)}")
        scores = data.get("class_scores", ())
        tokens = data.get("token_outputs") or ()  # absent in rules saved before it
        for key, names in (("class_scores", scores), ("token_outputs", tokens)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise InvalidInput(f"{key} must be a list of output names")
        return cls(
            min_cosine=float(data.get("min_cosine", 0.99)),
            class_scores=frozenset(scores),
            mask_input=data.get("mask_input", MASK),
            min_row_cosine=None
            if data.get("min_row_cosine") is None
            else float(data["min_row_cosine"]),
            scales=tuple(sorted((str(k), float(v)) for k, v in (data.get("scales") or {}).items())),
            batched=bool(data.get("batched", True)),
            token_outputs=frozenset(tokens),
        )


@dataclass(frozen=True)
class OutputRows:
    """One output compared row by row; every array has one entry per row."""

    name: str
    kind: str  # "pooled-embedding" | "rows" | "class-scores" | "exact" | "mismatch"
    rows: int
    cosine: np.ndarray | None = None  # float64, over elements finite in both
    top1_same: np.ndarray | None = None  # bool; class scores only
    exact: np.ndarray | None = None  # bool; integer and bool outputs
    nonfinite: np.ndarray | None = None  # bool: non-finite values FP32 does not have
    token_cosine: np.ndarray | None = None  # per unmasked token; reported only
    problem: str | None = None  # missing output or other shape: every row disagrees

    def agrees(self, min_cosine: float) -> np.ndarray:
        """Per row: does the candidate row stand in for the reference row?"""
        if self.problem is not None:
            return np.zeros(self.rows, dtype=bool)
        ok = np.ones(self.rows, dtype=bool)
        if self.cosine is not None:
            ok &= self.cosine >= min_cosine  # NaN compares False: disagrees
        for verdict in (self.top1_same, self.exact):
            if verdict is not None:
                ok &= verdict
        if self.nonfinite is not None:
            ok &= ~self.nonfinite
        return ok


def cosine_rows(a: np.ndarray, b: np.ndarray, scale: float = 0.0) -> np.ndarray:
    """Cosine similarity of each row pair of ``[rows, ...]`` arrays (flattened rows).

    One value a row has no angle: its error relative to ``max(|a|, |b|, scale)`` is
    taken as the cosine of the same angular error (module docs). ``scale`` is the
    output's typical size (its RMS over the gate's rows), so a value near zero is
    judged against that, not against itself (0 against 1e-4 is no 100 % error)."""
    a = a.astype(np.float64).reshape(a.shape[0], -1)
    b = b.astype(np.float64).reshape(b.shape[0], -1)
    if a.shape[1] == 1:
        size = np.maximum(np.maximum(np.abs(a[:, 0]), np.abs(b[:, 0])), scale)
        error = np.abs(a[:, 0] - b[:, 0]) / np.where(size > 0, size, 1.0)
        return np.clip(1.0 - error**2 / 2, -1.0, 1.0)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    # Two all-zero rows are the same vector; one zero row against another is not.
    same = np.all(a == b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[batch, tokens, hidden]`` → ``[batch, hidden]``, averaging unmasked tokens."""
    weights = mask.astype(np.float64)[..., None]
    return (hidden.astype(np.float64) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _as_rows(array: np.ndarray) -> np.ndarray:
    """A scalar output is one row of one value (it belongs to the whole request)."""
    return array.reshape(1, 1) if array.ndim == 0 else array


def compare_output(
    name: str,
    reference: np.ndarray | None,
    candidate: np.ndarray | None,
    mask: np.ndarray | None = None,
    class_scores: bool = False,
    scale: float = 0.0,
    token_level: bool = False,
) -> OutputRows:
    """The per-row arithmetic shared by the gate and ``rows_agree``.

    ``reference`` and ``candidate`` are one output, ``[rows, ...]``; ``mask`` is the
    request's attention mask ``[rows, tokens]`` (used for a rank-3 output of that
    shape), ``class_scores`` whether to compare the top-1 class of each row,
    ``scale`` the output's typical size for one-value rows (``cosine_rows``).
    ``token_level`` (``AgreementRule.token_outputs``): the output's axis 1 is the mask's,
    and both sides are compared with the positions the mask zeroes set to zero (a
    trimmed answer has zeros there, an untrimmed one the model's values), at any rank.
    """
    if reference is None:
        raise ValueError(f"no reference for output {name!r}")
    ref = _as_rows(np.asarray(reference))
    rows = int(ref.shape[0])
    if candidate is None or np.shape(candidate) != np.shape(reference):
        shape = None if candidate is None else tuple(np.shape(candidate))
        return OutputRows(
            name, "mismatch", rows, problem=f"shape {shape}, expected {tuple(ref.shape)}"
        )
    got = _as_rows(np.asarray(candidate))
    if token_level and mask is not None and ref.ndim >= 2 and tuple(mask.shape) == ref.shape[:2]:
        ref, got = _zero_masked(ref, mask), _zero_masked(got, mask)
    if not np.issubdtype(ref.dtype, np.floating):  # ids, counts, flags: exactly
        same = (ref == got).reshape(rows, -1).all(axis=1)
        return OutputRows(name, "exact", rows, exact=same)

    ref_bad, got_bad = ~np.isfinite(ref), ~np.isfinite(got)
    matching_bad = (np.isnan(ref) & np.isnan(got)) | (ref_bad & (ref == got))
    wrong = (got_bad & ~ref_bad) | (ref_bad & ~matching_bad)
    nonfinite = wrong.reshape(rows, -1).any(axis=1)
    finite = ~(ref_bad | got_bad)
    ref_f = np.where(finite, ref, 0.0).astype(np.float64)
    got_f = np.where(finite, got, 0.0).astype(np.float64)

    masked = mask is not None and ref.ndim == 3 and tuple(mask.shape) == ref.shape[:2]
    token_cosine = None
    if masked:
        assert mask is not None
        cosine = cosine_rows(mean_pool(ref_f, mask), mean_pool(got_f, mask))
        valid = mask.astype(bool).reshape(-1)
        width = ref.shape[-1]
        token_cosine = cosine_rows(ref_f.reshape(-1, width)[valid], got_f.reshape(-1, width)[valid])
        kind = "pooled-embedding"
    else:
        cosine = cosine_rows(ref_f, got_f, scale)
        kind = "rows"

    top1 = None
    if class_scores and ref.ndim >= 2:
        kind = "class-scores"
        same_class = np.argmax(ref_f, axis=-1) == np.argmax(got_f, axis=-1)  # [rows, ...]
        if masked and same_class.shape == tuple(mask.shape):  # type: ignore[union-attr]
            same_class = same_class | ~mask.astype(bool)  # type: ignore[union-attr]
        top1 = same_class.reshape(rows, -1).all(axis=1)
    return OutputRows(
        name,
        kind,
        rows,
        cosine=cosine,
        top1_same=top1,
        nonfinite=nonfinite,
        token_cosine=token_cosine,
    )


def _zero_masked(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``array`` ``[rows, tokens, ...]`` with zeros wherever ``mask`` ``[rows, tokens]`` is
    zero, as a trimmed build answers a token-level output."""
    out = array.copy()
    out[np.asarray(mask) == 0] = 0
    return out


def _mask(inputs: Arrays, rule: AgreementRule) -> np.ndarray | None:
    return inputs.get(rule.mask_input) if rule.mask_input else None


def rows_agree(
    reference: Arrays, candidate: Arrays, inputs: Arrays, rule: AgreementRule
) -> np.ndarray:
    """Per row of one request: does the candidate's answer agree with the reference's?

    ``reference`` and ``candidate`` map output names to arrays with a leading row
    axis (the candidate may have more outputs; a missing or reshaped one disagrees
    on every row), ``inputs`` are the request's inputs (for the attention mask).
    A row agrees when, for every reference output: its cosine (pooled with the mask
    for ``[batch, tokens, hidden]``) is at least ``rule.row_threshold``, its top-1 class
    is the same for outputs in ``rule.class_scores``, integer values are equal, and
    it has no non-finite value that the reference lacks. A scalar output's verdict
    applies to every row. Returns a bool array ``[rows]``; raises ``ValueError``
    when the reference outputs disagree on the number of rows.
    """
    reference, candidate = as_rows(reference, rule.batched), as_rows(candidate, rule.batched)
    inputs = as_rows(inputs, rule.batched)
    mask = _mask(inputs, rule)
    verdicts = [
        compare_output(
            name,
            ref,
            candidate.get(name),
            mask,
            name in rule.class_scores,
            rule.scale(name),
            name in rule.token_outputs,
        ).agrees(rule.row_threshold)
        for name, ref in reference.items()
    ]
    counts = {len(v) for v in verdicts} - {1}
    if len(counts) > 1:
        raise ValueError(f"reference outputs disagree on the number of rows: {sorted(counts)}")
    rows = counts.pop() if counts else (1 if verdicts else 0)
    result = np.ones(rows, dtype=bool)
    for verdict in verdicts:
        result &= verdict  # a one-row (scalar) verdict broadcasts
    return result


def output_kinds(tags: Mapping[str, str], outputs: Iterable[str]) -> dict[str, str]:
    """Kinds declared at registration: tags ``shipway.output.<name>=class-scores|embedding``.

    Raises ``InvalidInput`` for a tag that names no output or an unknown kind.
    """
    names = set(outputs)
    kinds: dict[str, str] = {}
    for key, value in tags.items():
        if not key.startswith(OUTPUT_TAG_PREFIX):
            continue
        name = key[len(OUTPUT_TAG_PREFIX) :]
        if name not in names:
            raise InvalidInput(
                f"tag {key!r} names no output of the model; outputs: {sorted(names)}"
            )
        if value not in OUTPUT_KINDS:
            raise InvalidInput(
                f"tag {key!r} has kind {value!r}; choose one of {', '.join(OUTPUT_KINDS)}"
            )
        kinds[name] = value
    return kinds


def mask_input(tags: Mapping[str, str], inputs: Iterable[str]) -> str | None:
    """The input holding the ``[batch, tokens]`` attention mask, as registered: the tag
    ``shipway.mask_input=<input>`` names it, ``shipway.mask_input=none`` says the model
    has none; untagged, ``attention_mask`` (used where the model has that input). The
    gate pools by it, the shadow judges by it, the served model trims padding by it.

    Raises ``InvalidInput`` for a tag that names no input.
    """
    value = tags.get(MASK_TAG)
    if value is None:
        return MASK
    names = set(inputs)
    if value in names:
        return value
    if value == NO_MASK:
        return None
    raise InvalidInput(
        f"tag {MASK_TAG!r} names no input of the model ({value!r}); inputs: {sorted(names)}, "
        f"or {NO_MASK!r} for a model without a mask"
    )


def is_distribution(array: np.ndarray) -> bool:
    """Every row along the last axis is a probability distribution (>= 2 classes)."""
    if not np.issubdtype(array.dtype, np.floating) or array.ndim < 2 or array.shape[-1] < 2:
        return False
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        return False
    sums = array.astype(np.float64).sum(axis=-1)
    return bool(np.all(np.abs(sums - 1.0) <= PROBABILITY_TOLERANCE))


def class_score_outputs(reference: Arrays, kinds: Mapping[str, str]) -> frozenset[str]:
    """Outputs gated on top-1: tagged ``class-scores``, or untagged probability rows."""
    return frozenset(
        name
        for name, array in reference.items()
        if kinds.get(name) == CLASS_SCORES or (name not in kinds and is_distribution(array))
    )


def resolve_rule(
    reference: Arrays,
    min_cosine: float = 0.99,
    kinds: Mapping[str, str] | None = None,
    mask_input: str | None = MASK,
    min_row_cosine: float | None = None,
    batched: bool = True,
    token_outputs: Iterable[str] = (),
) -> AgreementRule:
    """The rule for a model, from its FP32 outputs on held-out rows and its tags;
    ``batched`` False for a model without a batch axis (``Signature.batch_dim``);
    ``token_outputs`` from its signature (``triton_config.sequence_layout``)."""
    reference = as_rows(reference, batched)
    scales = tuple(
        sorted((name, s) for name, array in reference.items() if (s := output_scale(array)))
    )
    return AgreementRule(
        min_cosine,
        class_score_outputs(reference, kinds or {}),
        mask_input,
        min_row_cosine,
        scales,
        batched,
        frozenset(token_outputs),
    )


def as_rows(arrays: Arrays, batched: bool) -> Arrays:
    """Arrays whose leading axis is rows: as they are for a batched model; for a model
    without a batch axis, each whole, as one row."""
    if batched:
        return arrays
    return {name: np.asarray(array)[None] for name, array in arrays.items()}


def output_scale(array: np.ndarray) -> float:
    """The typical size of a float output with one value a row (its RMS over the finite
    values); 0 for any other output, whose rows are judged by their angle."""
    rows = _as_rows(np.asarray(array))
    if not np.issubdtype(rows.dtype, np.floating) or rows.reshape(len(rows), -1).shape[1] != 1:
        return 0.0
    finite = rows[np.isfinite(rows)].astype(np.float64)
    return float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0


@dataclass(frozen=True)
class OutputAccuracy:
    name: str
    kind: str  # "pooled-embedding", "rows", "class-scores", "exact", "mismatch"
    mean_cosine: float | None = None
    min_cosine: float | None = None
    token_mean_cosine: float | None = None
    top1_agreement: float | None = None
    exact_match: bool | None = None
    nonfinite_rows: int = 0


@dataclass(frozen=True)
class GateFailure:
    """One reason the gate refused: which output, which metric, its value and limit."""

    output: str
    metric: str  # "cosine", "row-cosine", "top1", "exact", "nonfinite", "shape"
    value: float | str | None
    limit: float | str | None

    def __str__(self) -> str:
        if self.metric == "cosine":
            return f"output {self.output!r}: mean cosine {self.value:.6f} < {self.limit}"
        if self.metric == "row-cosine":
            return f"output {self.output!r}: worst row cosine {self.value:.6f} < {self.limit}"
        if self.metric == "top1":
            return f"output {self.output!r}: top1 agreement {self.value:.4f} < {self.limit}"
        if self.metric == "exact":
            return f"output {self.output!r} (integer): {self.value} rows differ from FP32"
        if self.metric == "nonfinite":
            return (
                f"output {self.output!r}: {self.value} rows have non-finite values "
                "(NaN/inf) where FP32 has none"
            )
        return f"output {self.output!r}: {self.value}"


@dataclass(frozen=True)
class AccuracyReport:
    rule: AgreementRule
    min_top1: float
    outputs: tuple[OutputAccuracy, ...]
    failed: tuple[GateFailure, ...] = ()

    @property
    def threshold(self) -> float:
        return self.rule.min_cosine

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self.failed)

    @property
    def mean_cosine(self) -> float | None:
        """The lowest mean cosine over compared outputs: the gate's headline number."""
        values = [o.mean_cosine for o in self.outputs if o.mean_cosine is not None]
        return min(values) if values else None

    @property
    def min_cosine(self) -> float | None:
        values = [o.min_cosine for o in self.outputs if o.min_cosine is not None]
        return min(values) if values else None

    @property
    def top1_agreement(self) -> float | None:
        values = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(values) if values else None

    @property
    def score(self) -> float | None:
        """The lowest of mean cosine and top-1 agreement: how far from FP32, in one
        number (the sensitivity sweep ranks layers by it)."""
        values = [v for v in (self.mean_cosine, self.top1_agreement) if v is not None]
        return min(values) if values else None

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "min_top1": self.min_top1,
            "passed": self.passed,
            "mean_cosine": self.mean_cosine,
            "min_cosine": self.min_cosine,
            "top1_agreement": self.top1_agreement,
            "failures": list(self.failures),
            "failed": [asdict(f) for f in self.failed],
            "rule": self.rule.to_dict(),
            "outputs": [asdict(o) for o in self.outputs],
        }


def compare(
    reference: Arrays,
    candidate: Arrays,
    inputs: Arrays,
    rule: AgreementRule | None = None,
    min_top1: float = 0.99,
) -> AccuracyReport:
    """The build's gate over held-out rows: per output, the mean of the per-row
    metrics of ``compare_output`` against ``rule.min_cosine`` and ``min_top1``."""
    rule = rule or AgreementRule()
    reference, candidate = as_rows(reference, rule.batched), as_rows(candidate, rule.batched)
    inputs = as_rows(inputs, rule.batched)
    mask = _mask(inputs, rule)
    results: list[OutputAccuracy] = []
    failed: list[GateFailure] = []
    for name, ref in reference.items():
        scale = rule.scale(name) or output_scale(ref)
        rows = compare_output(
            name,
            ref,
            candidate.get(name),
            mask,
            name in rule.class_scores,
            scale,
            name in rule.token_outputs,
        )
        if rows.problem is not None:
            failed.append(GateFailure(name, "shape", rows.problem, None))
            results.append(OutputAccuracy(name, rows.kind))
            continue
        if rows.exact is not None:
            differing = int((~rows.exact).sum())
            results.append(OutputAccuracy(name, rows.kind, exact_match=differing == 0))
            if differing:
                failed.append(GateFailure(name, "exact", differing, 0))
            continue
        assert rows.cosine is not None and rows.nonfinite is not None
        top1 = None if rows.top1_same is None else float(rows.top1_same.mean())
        result = OutputAccuracy(
            name,
            rows.kind,
            float(rows.cosine.mean()),
            float(rows.cosine.min()),
            token_mean_cosine=(
                float(rows.token_cosine.mean())
                if rows.token_cosine is not None and rows.token_cosine.size
                else None
            ),
            top1_agreement=top1,
            nonfinite_rows=int(rows.nonfinite.sum()),
        )
        results.append(result)
        if result.nonfinite_rows:
            failed.append(GateFailure(name, "nonfinite", result.nonfinite_rows, 0))
        if not (result.mean_cosine is not None and result.mean_cosine >= rule.min_cosine):
            failed.append(GateFailure(name, "cosine", result.mean_cosine, rule.min_cosine))
        elif not (result.min_cosine is not None and result.min_cosine >= rule.row_threshold):
            failed.append(GateFailure(name, "row-cosine", result.min_cosine, rule.row_threshold))
        if top1 is not None and not top1 >= min_top1:
            failed.append(GateFailure(name, "top1", top1, min_top1))
    return AccuracyReport(rule, min_top1, tuple(results), tuple(failed))
