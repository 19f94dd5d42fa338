"""The reference profile of a model version: what its inputs and outputs looked like
when it was registered, kept in the form each drift test needs.

How model tensors become features. The *kind* of each input is decided once, from the
reference sample, and kept in the profile (``ReferenceProfile.inputs``); live windows
are read the way the profile says, never re-classified by what one window happens to
hold (a window of token ids that are all 0 or 1 is still token ids, a float window of
an integer input is still categorical, ``[n]`` and ``[n, 1]`` are one column):

- ``columns``: a float input ``[n]`` or ``[n, d]``: one numeric feature per column;
- ``moments``: a float input of higher rank: its per-row mean and standard deviation;
- ``categorical``: an integer input with a wide range of values (token ids): the
  frequency of each value over the positions its attention mask keeps, row by row
  (the row — one request's sentence — is the unit the tests count, not the token);
- ``count``: an integer input with two values at most (an attention mask): the
  per-row count of ones, a numeric feature (the sequence length);
- a float output ``[n, d]`` (an embedding, scores), or ``[n, tokens, d]`` mean-pooled
  with the attention mask: an embedding, tested as a whole (multivariate). A ``[n, d]``
  output of the attention mask's very shape is read as per-token values (logits
  ``[n, tokens]``) and zeroed wherever the mask is 0, as a build that trims padding
  answers it, so a trimmed answer and an untrimmed one profile alike. (A pooled output
  whose width happens to equal the request's length is zeroed the same way: the
  profile cannot tell them apart without the signature.)

Non-finite values (NaN, ±inf) are data, not errors: numeric features and embeddings
keep their count beside the finite values, which alone go to KS, PSI bins and MMD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from scipy import sparse

MASK = "attention_mask"
MAX_REFERENCE_VALUES = 10_000  # per numeric feature, evenly thinned beyond
MAX_REFERENCE_EMBEDDINGS = 200  # rows kept for the multivariate test
PSI_BINS = 10
TOP_TOKENS = 200  # frequent values kept as categories of their own
MIN_CATEGORY_COUNT = 20  # ... when seen this often: rarer ones are luck, not frequency
TAIL_BUCKETS = 64


class InputKind(StrEnum):
    COLUMNS = "columns"
    MOMENTS = "moments"
    CATEGORICAL = "categorical"
    COUNT = "count"


@dataclass(frozen=True)
class InputSpec:
    kind: InputKind
    width: int = 0  # COLUMNS: columns per row (0: an ``[n]`` input, one feature)


@dataclass(frozen=True)
class NumericProfile:
    values: np.ndarray  # sorted finite reference values (KS needs them; PSI bins from them)
    edges: np.ndarray  # inner bin edges at reference deciles, for PSI
    mean: float  # of the finite values
    std: float
    count: int  # reference values, non-finite ones included, before thinning
    nonfinite: int  # of which NaN or ±inf


@dataclass(frozen=True)
class CategoricalProfile:
    """Frequent values are categories of their own; the long tail falls into range
    buckets over the reference's span of values (token ids of one part of a
    vocabulary stay together, so a shift towards another part shows), and values
    outside that span (or not integers at all) into one last cell.

    ``gram`` is Σ_rows y yᵀ over the counted rows' cell-count vectors y: with
    ``counts`` (Σ y) and ``rows`` it is all the Rao-Scott test needs of the
    reference (the per-row covariance of cell counts). None in profiles written
    before it existed."""

    categories: np.ndarray  # the frequent values, at most TOP_TOKENS
    edges: np.ndarray  # inner edges of the tail's range buckets
    low: int
    high: int  # the reference's smallest and largest value
    counts: np.ndarray  # categories, then tail buckets, then out-of-span
    rows: int = 0  # rows counted
    gram: np.ndarray | None = None  # [cells, cells]


@dataclass(frozen=True)
class EmbeddingProfile:
    sample: np.ndarray  # [≤ MAX_REFERENCE_EMBEDDINGS, d] finite rows, float64
    rows: int  # reference rows, non-finite ones included
    nonfinite: int  # rows holding a NaN or ±inf


@dataclass(frozen=True)
class ReferenceProfile:
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingProfile] = field(default_factory=dict)
    rows: int = 0
    inputs: dict[str, InputSpec] = field(default_factory=dict)  # how windows are read


@dataclass(frozen=True)
class Tokens:
    """A categorical input's kept values and the row each came from."""

    values: np.ndarray  # int64; float64 when a window sent floats (non-integers are out of span)
    row: np.ndarray  # [len(values)] row index of each value
    rows: int


class Features(NamedTuple):
    numeric: dict[str, np.ndarray]  # [rows] float64 each
    categorical: dict[str, Tokens]
    embeddings: dict[str, np.ndarray]  # [rows, d]


def row_count(inputs: dict[str, np.ndarray]) -> int:
    """Rows of a batch: the first axis of its batched (rank ≥ 1) tensors; a lone
    non-batched (0-d) tensor is one row."""
    batched = [int(a.shape[0]) for a in inputs.values() if a.ndim]
    return batched[0] if batched else (1 if inputs else 0)


def input_kinds(inputs: dict[str, np.ndarray]) -> dict[str, InputSpec]:
    """The kind of each input, decided from the reference sample (rules above)."""
    kinds: dict[str, InputSpec] = {}
    for name, array in inputs.items():
        if array.ndim == 0 or array.size == 0:
            continue
        if np.issubdtype(array.dtype, np.floating):
            if array.ndim <= 2:
                kinds[name] = InputSpec(InputKind.COLUMNS, 0 if array.ndim == 1 else array.shape[1])
            else:
                kinds[name] = InputSpec(InputKind.MOMENTS)
        elif np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            binary = array.min() >= 0 and array.max() <= 1  # a mask: 0/1 only
            kinds[name] = InputSpec(InputKind.COUNT if binary else InputKind.CATEGORICAL)
    return kinds


def features(
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray] | None = None,
    kinds: dict[str, InputSpec] | None = None,
) -> Features:
    """Split tensors into numeric columns, categorical values and embeddings, each
    input read as ``kinds`` says (None: as ``input_kinds`` decides for these inputs,
    which is how the reference itself is read). An input whose shape does not fit its
    kind (another number of columns) yields nothing: the report names it missing."""
    kinds = input_kinds(inputs) if kinds is None else kinds
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, Tokens] = {}
    embeddings: dict[str, np.ndarray] = {}
    mask = inputs.get(MASK)
    for name, spec in kinds.items():
        array = inputs.get(name)
        if array is None or array.ndim == 0 or array.size == 0:
            continue
        rows = array.shape[0]
        flat = array.reshape(rows, -1)
        if spec.kind is InputKind.COLUMNS:
            if flat.shape[1] != max(spec.width, 1):
                continue
            columns = flat.astype(np.float64)
            if spec.width == 0:
                numeric[name] = columns[:, 0]
            else:
                for j in range(spec.width):
                    numeric[f"{name}[{j}]"] = columns[:, j]
        elif spec.kind is InputKind.MOMENTS:
            values = flat.astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows stay so
                numeric[f"{name}.mean"] = values.mean(axis=1)
                numeric[f"{name}.std"] = values.std(axis=1)
        elif spec.kind is InputKind.COUNT:
            numeric[f"{name}.sum"] = flat.astype(np.float64).sum(axis=1)
        else:
            keep = (
                mask.astype(bool)
                if mask is not None and mask.shape == array.shape and name != MASK
                else np.ones(array.shape, dtype=bool)
            )
            row = np.broadcast_to(np.arange(rows).reshape(-1, *[1] * (array.ndim - 1)), array.shape)
            integer = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
            values = array[keep].astype(np.int64 if integer else np.float64)
            categorical[name] = Tokens(values, row[keep], rows)
    for name, array in (outputs or {}).items():
        if not np.issubdtype(array.dtype, np.floating) or array.ndim == 0 or array.size == 0:
            continue
        if array.ndim == 2:
            if mask is not None and mask.shape == array.shape:  # per token: masked are 0
                array = np.where(mask.astype(bool), array, 0).astype(array.dtype)
            embeddings[name] = array  # converted after thinning: windows can be large
        elif array.ndim == 3 and mask is not None and mask.shape == array.shape[:2]:
            weights = mask.astype(np.float64)[..., None]
            with np.errstate(invalid="ignore", over="ignore"):
                pooled = (array * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            embeddings[name] = pooled
    return Features(numeric, categorical, embeddings)


def _thin(values: np.ndarray, limit: int) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.linspace(0, len(values) - 1, limit).round().astype(int)]


def build(
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray] | None = None,
    kinds: dict[str, InputSpec] | None = None,
) -> ReferenceProfile:
    """The profile of a reference sample. ``kinds`` fixes how inputs are read (None:
    decided from this sample); a rollout's stable window passes its version's."""
    kinds = input_kinds(inputs) if kinds is None else kinds
    numeric, categorical, embeddings = features(inputs, outputs, kinds)
    num = {name: _numeric(values) for name, values in numeric.items()}
    cat = {name: _categorical(tokens) for name, tokens in categorical.items()}
    emb = {}
    for name, matrix in embeddings.items():
        finite = np.isfinite(matrix).all(axis=1)
        kept = matrix[finite]
        rng = np.random.default_rng(0)
        pick = rng.choice(len(kept), min(len(kept), MAX_REFERENCE_EMBEDDINGS), replace=False)
        sample = kept[np.sort(pick)].astype(np.float64)
        emb[name] = EmbeddingProfile(sample, len(matrix), int((~finite).sum()))
    return ReferenceProfile(num, cat, emb, row_count(inputs), dict(kinds))


def _numeric(values: np.ndarray) -> NumericProfile:
    finite = np.sort(values[np.isfinite(values)])
    edges = (
        np.unique(np.quantile(finite, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        if len(finite)
        else np.zeros(0)
    )
    return NumericProfile(
        _thin(finite, MAX_REFERENCE_VALUES),
        edges,
        float(finite.mean()) if len(finite) else 0.0,
        float(finite.std()) if len(finite) else 0.0,
        len(values),
        len(values) - len(finite),
    )


def _categorical(tokens: Tokens) -> CategoricalProfile:
    # Choose the categories on even rows and count on odd ones: chosen and counted on
    # the same values, the top categories' shares are biased upwards (they won by
    # luck too), and every fresh window would look drifted. Rows, not alternate
    # tokens: a word repeated within a sentence must not sit on both sides.
    values = tokens.values
    valid = values[_integral(values)].astype(np.int64)
    low, high = (int(valid.min()), int(valid.max())) if len(valid) else (0, -1)
    even = tokens.row % 2 == 0
    if tokens.rows >= 2:
        chooser = values[even]
        counted = Tokens(values[~even], tokens.row[~even] // 2, tokens.rows // 2)
    else:  # one row: nothing to split
        chooser, counted = values, tokens
    chooser = chooser[_integral(chooser)].astype(np.int64)
    uniques, counts = np.unique(chooser, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:TOP_TOKENS]
    top = uniques[order][counts[order] >= MIN_CATEGORY_COUNT]
    edges = np.unique(np.linspace(low, high + 1, TAIL_BUCKETS + 1)[1:-1].round())
    shell = CategoricalProfile(top, edges, low, high, np.zeros(0, dtype=np.int64))
    per_row = row_cells(shell, counted)
    gram = (per_row.T @ per_row).toarray().astype(np.int64)
    totals = np.asarray(per_row.sum(axis=0)).ravel().astype(np.int64)
    return CategoricalProfile(top, edges, low, high, totals, counted.rows, gram)


def _integral(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iub":
        return np.ones(values.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values == np.round(values))


def cells(profile: CategoricalProfile, values: np.ndarray) -> np.ndarray:
    """The profile's cell of each value: its category, else its tail bucket, else the
    last cell (outside the reference's span, or no integer at all)."""
    k, buckets = len(profile.categories), len(profile.edges) + 1
    result = np.full(len(values), k + buckets, dtype=np.int64)
    valid = _integral(values)
    v = values[valid]
    hit = np.zeros(len(v), dtype=bool)
    if k:
        order = np.argsort(profile.categories)
        ordered = profile.categories[order]
        positions = np.minimum(np.searchsorted(ordered, v), k - 1)
        hit = ordered[positions] == v
        found = np.flatnonzero(valid)[hit]
        result[found] = order[positions[hit]]
    inside = ~hit & (v >= profile.low) & (v <= profile.high)
    result[np.flatnonzero(valid)[inside]] = k + np.searchsorted(
        profile.edges, v[inside], side="right"
    )
    return result


def category_counts(profile: CategoricalProfile, values: np.ndarray) -> np.ndarray:
    """Counts in the profile's cells: categories, tail buckets, out of span."""
    size = len(profile.categories) + len(profile.edges) + 2
    return np.bincount(cells(profile, values), minlength=size).astype(np.int64)


def row_cells(profile: CategoricalProfile, tokens: Tokens) -> sparse.csr_matrix:
    """[rows, cells] counts: how many of each row's values fall in each cell."""
    size = len(profile.categories) + len(profile.edges) + 2
    ones = np.ones(len(tokens.values), dtype=np.int64)
    return sparse.csr_matrix(
        (ones, (tokens.row, cells(profile, tokens.values))), shape=(tokens.rows, size)
    )
