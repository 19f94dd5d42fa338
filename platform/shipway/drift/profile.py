"""The reference profile of a model version: what its inputs and outputs looked like
when it was registered, kept in the form each drift test needs.

How model tensors become features (the same rules for the reference and for live
windows, so they always line up):

- a float input ``[n]`` or ``[n, d]``: one numeric feature per column;
- a float input of higher rank: its per-row mean and standard deviation;
- an integer input with a wide range of values (token ids): a categorical feature,
  the frequency of each value over the positions its attention mask keeps;
- an integer input with two values at most (an attention mask): the per-row count
  of ones, a numeric feature (the sequence length);
- a float output ``[n, d]`` (an embedding, scores), or ``[n, tokens, d]`` mean-pooled
  with the attention mask: an embedding, tested as a whole (multivariate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MASK = "attention_mask"
MAX_REFERENCE_VALUES = 10_000  # per numeric feature, evenly thinned beyond
MAX_REFERENCE_EMBEDDINGS = 200  # rows kept for the multivariate test
PSI_BINS = 10
TOP_TOKENS = 200  # frequent values kept as categories of their own
MIN_CATEGORY_COUNT = 20  # ... when seen this often: rarer ones are luck, not frequency
TAIL_BUCKETS = 64


@dataclass(frozen=True)
class NumericProfile:
    values: np.ndarray  # sorted reference values (KS needs them; PSI bins from them)
    edges: np.ndarray  # inner bin edges at reference deciles, for PSI
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalProfile:
    """Frequent values are categories of their own; the long tail falls into range
    buckets over the reference's span of values (token ids of one part of a
    vocabulary stay together, so a shift towards another part shows), and values
    outside that span into one last cell."""

    categories: np.ndarray  # the frequent values, at most TOP_TOKENS
    edges: np.ndarray  # inner edges of the tail's range buckets
    low: int
    high: int  # the reference's smallest and largest value
    counts: np.ndarray  # categories, then tail buckets, then out-of-span


@dataclass(frozen=True)
class ReferenceProfile:
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0


def features(
    inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split tensors into numeric columns, categorical values and embeddings."""
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    embeddings: dict[str, np.ndarray] = {}
    mask = inputs.get(MASK)
    for name, array in inputs.items():
        if array.ndim == 0 or array.shape[0] == 0:
            continue
        if np.issubdtype(array.dtype, np.floating):
            if array.ndim == 1:
                numeric[name] = array.astype(np.float64)
            elif array.ndim == 2:
                for j in range(array.shape[1]):
                    numeric[f"{name}[{j}]"] = array[:, j].astype(np.float64)
            else:
                flat = array.reshape(array.shape[0], -1).astype(np.float64)
                numeric[f"{name}.mean"] = flat.mean(axis=1)
                numeric[f"{name}.std"] = flat.std(axis=1)
        elif np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            if array.min() >= 0 and array.max() <= 1:  # a mask: 0/1 only
                numeric[f"{name}.sum"] = (
                    array.reshape(array.shape[0], -1).sum(axis=1).astype(np.float64)
                )
            else:
                keep = (
                    mask.astype(bool)
                    if mask is not None and mask.shape == array.shape and name != MASK
                    else np.ones(array.shape, dtype=bool)
                )
                categorical[name] = array[keep].astype(np.int64)
    for name, array in (outputs or {}).items():
        if not np.issubdtype(array.dtype, np.floating) or array.shape[0] == 0:
            continue
        if array.ndim == 2:
            embeddings[name] = array  # converted after thinning: windows can be large
        elif array.ndim == 3 and mask is not None and mask.shape == array.shape[:2]:
            weights = mask.astype(np.float64)[..., None]
            pooled = (array * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            embeddings[name] = pooled
    return numeric, categorical, embeddings


def _thin(values: np.ndarray, limit: int) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.linspace(0, len(values) - 1, limit).round().astype(int)]


def build(
    inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None
) -> ReferenceProfile:
    numeric, categorical, embeddings = features(inputs, outputs)
    rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    num = {}
    for name, values in numeric.items():
        ordered = np.sort(values)
        edges = np.unique(np.quantile(ordered, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        num[name] = NumericProfile(
            _thin(ordered, MAX_REFERENCE_VALUES), edges, float(values.mean()), float(values.std())
        )
    cat = {}
    for name, values in categorical.items():
        # Choose the categories on one half and count on the other: chosen and
        # counted on the same values, the top categories' shares are biased upwards
        # (they won by luck too), and every fresh window would look drifted.
        chooser, counted = values[::2], values[1::2]
        uniques, counts = np.unique(chooser, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:TOP_TOKENS]
        top = uniques[order][counts[order] >= MIN_CATEGORY_COUNT]
        low, high = int(values.min()), int(values.max())
        edges = np.unique(np.linspace(low, high + 1, TAIL_BUCKETS + 1)[1:-1].round())
        shell = CategoricalProfile(top, edges, low, high, np.zeros(0, dtype=np.int64))
        cat[name] = CategoricalProfile(top, edges, low, high, category_counts(shell, counted))
    emb = {}
    for name, matrix in embeddings.items():
        rng = np.random.default_rng(0)
        pick = rng.choice(len(matrix), min(len(matrix), MAX_REFERENCE_EMBEDDINGS), replace=False)
        emb[name] = matrix[np.sort(pick)].astype(np.float64)
    return ReferenceProfile(num, cat, emb, rows)


def category_counts(profile: CategoricalProfile, values: np.ndarray) -> np.ndarray:
    """Counts in the profile's cells: categories, tail buckets, out of span."""
    k, buckets = len(profile.categories), len(profile.edges) + 1
    counts = np.zeros(k + buckets + 1, dtype=np.int64)
    frequent = np.isin(values, profile.categories)
    if k:
        positions = np.searchsorted(np.sort(profile.categories), values[frequent])
        order = np.argsort(profile.categories)
        np.add.at(counts, order[positions], 1)
    tail = values[~frequent]
    inside = (tail >= profile.low) & (tail <= profile.high)
    np.add.at(counts, k + np.searchsorted(profile.edges, tail[inside], side="right"), 1)
    counts[-1] += int((~inside).sum())
    return counts
