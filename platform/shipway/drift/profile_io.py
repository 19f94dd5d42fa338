"""A reference profile as one ``.npz`` file (no pickles), stored with the version.

Profiles written before input kinds, non-finite counts and per-row category
statistics were kept still load: kinds are read back from the feature names
(``x[0]`` columns, ``x.mean`` moments, ``x.sum`` a count, a categorical name token
ids), every value counted finite, and the categorical test takes the reference's
per-row covariance from the window (equal under H0)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np

from shipway.drift.profile import (
    CategoricalProfile,
    EmbeddingProfile,
    InputKind,
    InputSpec,
    NumericProfile,
    ReferenceProfile,
)


def to_bytes(profile: ReferenceProfile) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    numeric: dict[str, Any] = {}
    categorical: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    for i, (name, p) in enumerate(profile.numeric.items()):
        arrays[f"n{i}.values"], arrays[f"n{i}.edges"] = p.values, p.edges
        numeric[name] = {
            "key": f"n{i}",
            "mean": p.mean,
            "std": p.std,
            "count": p.count,
            "nonfinite": p.nonfinite,
        }
    for i, (name, c) in enumerate(profile.categorical.items()):
        arrays[f"c{i}.categories"], arrays[f"c{i}.edges"] = c.categories, c.edges
        arrays[f"c{i}.counts"] = c.counts
        if c.gram is not None:
            arrays[f"c{i}.gram"] = c.gram
        categorical[name] = {"key": f"c{i}", "low": c.low, "high": c.high, "rows": c.rows}
    for i, (name, e) in enumerate(profile.embeddings.items()):
        arrays[f"e{i}"] = e.sample
        embeddings[name] = {"key": f"e{i}", "rows": e.rows, "nonfinite": e.nonfinite}
    index = {
        "rows": profile.rows,
        "numeric": numeric,
        "categorical": categorical,
        "embeddings": embeddings,
        "inputs": {n: {"kind": s.kind.value, "width": s.width} for n, s in profile.inputs.items()},
    }
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> ReferenceProfile:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        index = json.loads(archive["index"].tobytes())
        numeric = {}
        for name, m in index["numeric"].items():
            values = archive[f"{m['key']}.values"]
            numeric[name] = NumericProfile(
                values,
                archive[f"{m['key']}.edges"],
                m["mean"],
                m["std"],
                m.get("count", len(values)),
                m.get("nonfinite", 0),
            )
        categorical = {
            name: CategoricalProfile(
                archive[f"{m['key']}.categories"],
                archive[f"{m['key']}.edges"],
                m["low"],
                m["high"],
                archive[f"{m['key']}.counts"],
                m.get("rows", 0),
                archive[f"{m['key']}.gram"] if f"{m['key']}.gram" in archive.files else None,
            )
            for name, m in index["categorical"].items()
        }
        embeddings = {}
        for name, m in index["embeddings"].items():
            if isinstance(m, str):  # the older layout: the key alone
                sample = archive[m]
                embeddings[name] = EmbeddingProfile(sample, len(sample), 0)
            else:
                embeddings[name] = EmbeddingProfile(archive[m["key"]], m["rows"], m["nonfinite"])
    if "inputs" in index:
        inputs = {
            n: InputSpec(InputKind(s["kind"]), s["width"]) for n, s in index["inputs"].items()
        }
    else:
        inputs = _kinds_from_names(numeric, categorical)
    return ReferenceProfile(numeric, categorical, embeddings, index["rows"], inputs)


def _kinds_from_names(numeric: dict[str, Any], categorical: dict[str, Any]) -> dict[str, InputSpec]:
    kinds: dict[str, InputSpec] = {n: InputSpec(InputKind.CATEGORICAL) for n in categorical}
    for name in numeric:
        if column := re.fullmatch(r"(.+)\[(\d+)\]", name):
            base, width = column.group(1), int(column.group(2)) + 1
            known = kinds.get(base)
            kinds[base] = InputSpec(InputKind.COLUMNS, max(width, known.width if known else 0))
        elif moment := re.fullmatch(r"(.+)\.(mean|std)", name):
            kinds[moment.group(1)] = InputSpec(InputKind.MOMENTS)
        elif count := re.fullmatch(r"(.+)\.sum", name):
            kinds[count.group(1)] = InputSpec(InputKind.COUNT)
        else:
            kinds[name] = InputSpec(InputKind.COLUMNS, 0)
    return kinds
