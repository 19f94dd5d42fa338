"""Trim padding and batch by length: the pure arithmetic of the served model.

Copied beside ``model.py`` into repositories for the local Triton's Python backend
(``onnxruntime_python.py`` imports it from its own folder), so it needs numpy only,
never Shipway; Shipway's unit tests import it as ``shipway.builds.triton_models.padding``.

What the served model does with a batch of requests, when the build's config names a
mask input (``shipway.builds.triton_config.trim_plan`` decides which model may):

- Each row's **real length** is one past its last position whose mask is non-zero
  (``real_lengths``): nothing at or before a real token is ever cut, whether the
  client pads on the right, on the left or not at all.
- Requests are **grouped by length bucket** (``bucket``: the smallest of 16/32/64/128
  that holds the request's longest real row; longer ones by multiples of the largest),
  and by the shapes that must be equal to stack rows (``group_key``).
- Each group runs once: every sequence input is cut (or padded with zeros, mask zero)
  to the group's longest real row (``fit``), the requests' rows are stacked, the model
  runs on ``[rows, longest]`` instead of ``[rows, sent length]``.
- Outputs are split back per request (``split_rows``). A **token-level output** (its
  axis 1 is the mask's sequence axis) is answered in the request's own shape: values
  where the row's mask is non-zero, **zeros everywhere the mask is zero** — past the
  mask and at any padding inside it (``restore``). So an answer never depends on which
  requests it was batched with. Every other output (pooled embeddings, class scores)
  is answered as the model computed it.

That is the same answer as the untrimmed run, within float tolerance, for a model in
which masked positions do not change unmasked ones (a transformer: the mask is an
attention bias; positions are numbered from the start, so cutting the end moves
none). A model that reads padding (pooling over every position, mask ignored) would
change: such a model opts out (``trim_padding`` off, or no mask input).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import pairwise

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128)


def real_lengths(mask: np.ndarray) -> np.ndarray:
    """Per row of a ``[rows, seq]`` mask: one past its last non-zero position; 0 for a
    row with no real position. int64, shape ``[rows]``."""
    real = np.asarray(mask) != 0
    seq = real.shape[1]
    if seq == 0:  # no positions at all (argmax has nothing to look at)
        return np.zeros(real.shape[0], dtype=np.int64)
    last_from_end = np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), seq - last_from_end, 0).astype(np.int64)


def bucket(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket holding ``length`` tokens; beyond the largest, the next
    multiple of the largest (129 -> 256 with the defaults). ``buckets`` ascending,
    positive."""
    for size in buckets:
        if length <= size:
            return size
    largest = buckets[-1]
    return -(-length // largest) * largest


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """``buckets`` as a tuple, or ``ValueError`` unless strictly ascending positive ints."""
    values = tuple(buckets)
    if not values or any(not isinstance(b, int) or isinstance(b, bool) for b in values):
        raise ValueError(f"length buckets must be a non-empty list of integers, got {values}")
    if values[0] < 1 or any(b >= a for b, a in pairwise(values)):
        raise ValueError(f"length buckets must be positive and strictly ascending, got {values}")
    return values


def group_key(
    longest: int,
    inputs: dict[str, np.ndarray],
    sequence_inputs: Sequence[str],
    buckets: Sequence[int],
) -> Hashable:
    """Requests with equal keys are stacked into one run: the same length bucket, and
    the same shape past the batch axis for every input (past the sequence axis too for
    the sequence inputs, whose axis 1 ``fit`` makes equal) and the same dtypes."""
    shapes = tuple(
        (name, str(value.dtype), value.shape[2:] if name in sequence_inputs else value.shape[1:])
        for name, value in sorted(inputs.items())
    )
    return (bucket(longest, buckets), shapes)


def group(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices of equal keys, in order of first appearance (requests keep their order
    within a group)."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def fit(value: np.ndarray, length: int) -> np.ndarray:
    """A ``[rows, seq, ...]`` sequence input cut to ``length`` positions, or padded to
    it with zeros (the mask's zeros say those positions are not real; any input's zero
    is a valid value: a pad id, token type 0)."""
    seq = value.shape[1]
    if seq >= length:
        return value[:, :length]
    pad = [(0, 0)] * value.ndim
    pad[1] = (0, length - seq)
    return np.pad(value, pad)


def split_rows(value: np.ndarray, rows: Sequence[int]) -> list[np.ndarray]:
    """A stacked output cut back into the requests' rows, in order."""
    return np.split(value, np.cumsum(rows)[:-1], axis=0)


def restore(value: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A token-level output ``[rows, run length, ...]`` answered in the request's shape
    ``[rows, seq, ...]`` (``seq`` from its ``[rows, seq]`` mask): the model's values
    where the mask is non-zero, zeros wherever it is zero."""
    rows, seq = mask.shape
    out = np.zeros((rows, seq, *value.shape[2:]), dtype=value.dtype)
    kept = min(seq, value.shape[1])
    out[:, :kept] = value[:, :kept]
    out[np.asarray(mask) == 0] = 0
    return out
