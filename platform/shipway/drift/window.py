"""Live windows from sampled requests: many small batches become one set of arrays.

Requests differ in batch size and, for token inputs, in sequence length. Integer
tensors (token ids, masks) are right-padded with zeros to the longest, which is what
a tokenizer's padding does (mask 0, so the padding never counts); float tensors must
agree in their trailing shape, and a request whose float tensor does not is left out
of the window whole (counted), so that every input keeps the same rows. An input that
some requests lack is left out of the window, and the drift report names it missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    inputs: dict[str, np.ndarray]
    requests: int  # requests in the window
    skipped: int  # requests left out: unmatched float shapes or rows

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0


def assemble(requests: Iterable[dict[str, np.ndarray]]) -> Window:
    batches = [r for r in requests if r]
    if not batches:
        return Window({}, 0, 0)
    names = set.intersection(*(set(r) for r in batches))
    float_shapes: dict[str, tuple[int, ...]] = {}
    for name in sorted(names):
        shapes = [r[name].shape[1:] for r in batches if np.issubdtype(r[name].dtype, np.floating)]
        if shapes:  # the most common trailing shape wins
            float_shapes[name] = max(set(shapes), key=shapes.count)
    kept = [
        r
        for r in batches
        if all(
            r[n].ndim >= 1 and (n not in float_shapes or r[n].shape[1:] == float_shapes[n])
            for n in names
        )
        and len({r[n].shape[0] for n in names}) == 1
    ]
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(names):
        parts = [r[name] for r in kept]
        if not parts:
            continue
        if name not in float_shapes and parts[0].ndim > 1:
            width = tuple(max(p.shape[axis] for p in parts) for axis in range(1, parts[0].ndim))
            parts = [
                np.pad(p, [(0, 0), *((0, w - s) for w, s in zip(width, p.shape[1:], strict=True))])
                for p in parts
            ]
        arrays[name] = np.concatenate(parts)
    return Window(arrays, len(batches), len(batches) - len(kept))
