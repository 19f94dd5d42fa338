from __future__ import annotations

import json
import random

import numpy as np

from shipway.gateway.kserve_codec import agree, decode
from shipway.gateway.samples import Sample, SampleBuffer


def binary_body(key: str, tensors: dict[str, np.ndarray]) -> tuple[bytes, int]:
    header = {
        key: [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": "INT64" if a.dtype == np.int64 else "FP32",
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a in tensors.items()
        ]
    }
    head = json.dumps(header).encode()
    return head + b"".join(a.tobytes() for a in tensors.values()), len(head)


def test_decodes_binary_and_json_tensors() -> None:
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    vec = np.linspace(0, 1, 4, dtype=np.float32).reshape(1, 4)
    body, length = binary_body("inputs", {"ids": ids, "vec": vec})
    decoded = decode(body, length, "inputs")
    np.testing.assert_array_equal(decoded["ids"], ids)
    np.testing.assert_array_equal(decoded["vec"], vec)
    as_json = json.dumps(
        {"outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}
    ).encode()
    np.testing.assert_array_equal(decode(as_json, None, "outputs")["y"], [1.5, 2.5])


def test_agreement_is_within_tolerance_on_common_outputs() -> None:
    a = {"y": np.array([1.0, 2.0], np.float32)}
    assert agree(a, {"y": np.array([1.0, 2.0005], np.float32)})
    assert not agree(a, {"y": np.array([1.0, 2.1], np.float32)})
    assert not agree(a, {"y": np.array([1.0], np.float32)})
    assert not agree(a, {"z": np.array([1.0, 2.0], np.float32)})


def test_sample_buffer_is_bounded_and_keeps_fewer_responses() -> None:
    buffer = SampleBuffer(rate=0.5, capacity=10, response_capacity=3, rng=random.Random(0))
    body, length = binary_body("inputs", {"ids": np.ones((1, 2), np.int64)})
    for i in range(25):
        buffer.add("d", "stable", Sample(float(i), body, length, b"{}", None))
    assert [s.at for s in buffer.requests("d", "stable")] == [float(i) for i in range(15, 25)]
    assert all(s.response is None for s in buffer.requests("d", "stable"))
    assert [s.at for s in buffer.pairs("d", "stable")] == [22.0, 23.0, 24.0]
    assert buffer.requests("d", "stable", limit=2)[0].inputs()["ids"].shape == (1, 2)
    assert buffer.requests("d", "other") == []
    kept = sum(buffer.wants() for _ in range(10_000))
    assert 4700 < kept < 5300
