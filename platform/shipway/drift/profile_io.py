"""A reference profile as one ``.npz`` file (no pickles), stored with the version."""

from __future__ import annotations

import io
import json

import numpy as np

from shipway.drift.profile import CategoricalProfile, NumericProfile, ReferenceProfile


def to_bytes(profile: ReferenceProfile) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, object] = {"rows": profile.rows, "numeric": {}, "categorical": {}}
    for i, (name, p) in enumerate(profile.numeric.items()):
        arrays[f"n{i}.values"], arrays[f"n{i}.edges"] = p.values, p.edges
        index["numeric"][name] = {"key": f"n{i}", "mean": p.mean, "std": p.std}  # type: ignore[index]
    for i, (name, c) in enumerate(profile.categorical.items()):
        arrays[f"c{i}.categories"], arrays[f"c{i}.edges"] = c.categories, c.edges
        arrays[f"c{i}.counts"] = c.counts
        index["categorical"][name] = {"key": f"c{i}", "low": c.low, "high": c.high}  # type: ignore[index]
    index["embeddings"] = {}
    for i, (name, matrix) in enumerate(profile.embeddings.items()):
        arrays[f"e{i}"] = matrix
        index["embeddings"][name] = f"e{i}"  # type: ignore[index]
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> ReferenceProfile:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        index = json.loads(archive["index"].tobytes())
        numeric = {
            name: NumericProfile(
                archive[f"{m['key']}.values"], archive[f"{m['key']}.edges"], m["mean"], m["std"]
            )
            for name, m in index["numeric"].items()
        }
        categorical = {
            name: CategoricalProfile(
                archive[f"{m['key']}.categories"],
                archive[f"{m['key']}.edges"],
                m["low"],
                m["high"],
                archive[f"{m['key']}.counts"],
            )
            for name, m in index["categorical"].items()
        }
        embeddings = {name: archive[key] for name, key in index["embeddings"].items()}
    return ReferenceProfile(numeric, categorical, embeddings, index["rows"])
