"""The accuracy gate: does a candidate engine still compute the same model?

Pure numpy over outputs that the caller computed on held-out inputs (never the
calibration rows). Outputs are compared the way the model is used:

- a float output of rank 3 ``[batch, tokens, hidden]`` with an ``attention_mask``
  input is a token sequence: the attention-mask-aware mean-pooled embedding (what a
  sentence-embedding model serves) is compared by cosine similarity, and the
  token-level cosine is reported too;
- a float output of rank 2 ``[batch, features]`` is compared row by row by cosine;
  when it looks like class scores (at most 1,000 columns) top-1 agreement is
  reported as well;
- integer outputs must match exactly (they are pass-throughs or ids).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MASK = "attention_mask"
CLASS_SCORE_MAX_COLUMNS = 1000


@dataclass(frozen=True)
class OutputAccuracy:
    name: str
    kind: str  # "pooled-embedding", "rows", "exact"
    mean_cosine: float | None = None
    min_cosine: float | None = None
    token_mean_cosine: float | None = None
    top1_agreement: float | None = None
    exact_match: bool | None = None


@dataclass(frozen=True)
class AccuracyReport:
    threshold: float
    outputs: tuple[OutputAccuracy, ...]
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def mean_cosine(self) -> float | None:
        """The lowest mean cosine over compared outputs: the gate's headline number."""
        values = [o.mean_cosine for o in self.outputs if o.mean_cosine is not None]
        return min(values) if values else None

    @property
    def min_cosine(self) -> float | None:
        values = [o.min_cosine for o in self.outputs if o.min_cosine is not None]
        return min(values) if values else None

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "passed": self.passed,
            "mean_cosine": self.mean_cosine,
            "min_cosine": self.min_cosine,
            "failures": list(self.failures),
            "outputs": [asdict(o) for o in self.outputs],
        }


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows = a.shape[0] if a.ndim else 1  # a rank-0 output (no batch axis) is one row
    a = a.astype(np.float64).reshape(rows, -1)
    b = b.astype(np.float64).reshape(rows, -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    # Two all-zero rows are the same vector; one zero row against another is not.
    same = np.all(a == b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask.astype(np.float64)[..., None]
    return (hidden.astype(np.float64) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    threshold: float = 0.99,
) -> AccuracyReport:
    results: list[OutputAccuracy] = []
    failures: list[str] = []
    mask = inputs.get(MASK)
    for name, ref in reference.items():
        got = candidate.get(name)
        if got is None or got.shape != ref.shape:
            failures.append(
                f"output {name!r}: shape {None if got is None else got.shape}, expected {ref.shape}"
            )
            continue
        if not np.issubdtype(ref.dtype, np.floating):
            same = bool(np.array_equal(ref, got))
            results.append(OutputAccuracy(name, "exact", exact_match=same))
            if not same:
                failures.append(f"output {name!r} (integer) differs from the reference")
            continue
        if ref.ndim == 3 and mask is not None and mask.shape == ref.shape[:2]:
            pooled = cosine_rows(mean_pool(ref, mask), mean_pool(got, mask))
            valid = mask.astype(bool).reshape(-1)
            tokens = cosine_rows(
                ref.reshape(-1, ref.shape[-1])[valid], got.reshape(-1, ref.shape[-1])[valid]
            )
            result = OutputAccuracy(
                name,
                "pooled-embedding",
                float(pooled.mean()),
                float(pooled.min()),
                token_mean_cosine=float(tokens.mean()),
            )
        else:
            rows = cosine_rows(ref, got)
            top1 = None
            if ref.ndim == 2 and 1 < ref.shape[1] <= CLASS_SCORE_MAX_COLUMNS:
                top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
            result = OutputAccuracy(
                name, "rows", float(rows.mean()), float(rows.min()), top1_agreement=top1
            )
        results.append(result)
        if result.mean_cosine is not None and result.mean_cosine < threshold:
            failures.append(f"output {name!r}: mean cosine {result.mean_cosine:.4f} < {threshold}")
    return AccuracyReport(threshold, tuple(results), tuple(failures))
