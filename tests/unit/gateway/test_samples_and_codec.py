from __future__ import annotations

import json
import random

import numpy as np

from shipway.gateway.kserve_codec import decode
from shipway.gateway.samples import ENTRY_OVERHEAD, Sample, SampleBuffer


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


def sample(at: float, request_bytes: int, response_bytes: int | None = None) -> Sample:
    response = None if response_bytes is None else b"r" * response_bytes
    return Sample(at, b"q" * request_bytes, None, response, None)


def test_sample_buffer_keeps_the_newest_within_its_bytes() -> None:
    # 10 entries of 1,000 + overhead fit the requests' three quarters, not 11.
    entry = 1_000 + ENTRY_OVERHEAD
    bound = 10 * entry * 4 // 3 + 3  # three quarters of it: 10 entries and 2 bytes spare
    buffer = SampleBuffer(rate=1.0, bytes_per_variant=bound)
    for i in range(25):
        buffer.add("d", "stable", sample(float(i), 1_000))
    kept = buffer.requests("d", "stable")
    assert [s.at for s in kept] == [float(i) for i in range(15, 25)]  # oldest out first
    assert buffer.held("d", "stable") == 10 * entry <= bound
    assert [s.at for s in buffer.requests("d", "stable", limit=2)] == [23.0, 24.0]
    assert buffer.requests("d", "other") == [] and buffer.held("d", "other") == 0


def test_sample_buffer_bytes_not_counts_decide() -> None:
    """One large body takes the room of many small ones, and the bound holds."""
    buffer = SampleBuffer(rate=1.0, bytes_per_variant=40_000)  # 30,000 for requests
    for i in range(20):
        buffer.add("d", "v", sample(float(i), 744))  # 1,000 bytes with the overhead
    assert len(buffer.requests("d", "v")) == 20
    buffer.add("d", "v", sample(20.0, 19_744))  # 20,000: half the small ones must go
    kept = buffer.requests("d", "v")
    assert [s.at for s in kept] == [float(i) for i in range(10, 21)]
    assert buffer.held("d", "v") == 30_000


def test_a_body_larger_than_the_bound_is_not_kept_and_evicts_nothing() -> None:
    buffer = SampleBuffer(rate=1.0, bytes_per_variant=4_000)  # requests 3,000; pairs 1,000
    buffer.add("d", "v", sample(0.0, 100, 100))
    buffer.add("d", "v", sample(1.0, 3_000))  # larger than the requests' part
    assert [s.at for s in buffer.requests("d", "v")] == [0.0]
    # The request fits, the pair (request and a 2 KB response) does not: only the request.
    buffer.add("d", "v", sample(2.0, 100, 2_000))
    assert [s.at for s in buffer.requests("d", "v")] == [0.0, 2.0]
    assert all(s.response is None for s in buffer.requests("d", "v"))
    assert [s.at for s in buffer.pairs("d", "v")] == [0.0]
    assert buffer.pairs("d", "v")[0].response == b"r" * 100
    nothing = SampleBuffer(rate=1.0, bytes_per_variant=0)
    nothing.add("d", "v", sample(0.0, 1))
    assert nothing.requests("d", "v") == [] and nothing.held("d", "v") == 0


def test_the_bound_is_per_variant() -> None:
    """A busy stable cannot push a small canary's samples out."""
    buffer = SampleBuffer(rate=1.0, bytes_per_variant=8_000)  # 6,000 for requests
    buffer.add("d", "canary", sample(0.0, 744))
    for i in range(100):
        buffer.add("d", "stable", sample(float(i), 744))
    assert [s.at for s in buffer.requests("d", "canary")] == [0.0]
    assert len(buffer.requests("d", "stable")) == 6
    assert sorted(buffer.keys()) == [("d", "canary"), ("d", "stable")]


def test_responses_get_a_quarter_and_samples_decode() -> None:
    body, length = binary_body("inputs", {"ids": np.ones((1, 2), np.int64)})
    pair_size = ENTRY_OVERHEAD + len(body) + 2
    buffer = SampleBuffer(rate=1.0, bytes_per_variant=4 * 3 * pair_size)  # 3 pairs fit
    for i in range(10):
        buffer.add("d", "stable", Sample(float(i), body, length, b"{}", None))
    assert [s.at for s in buffer.pairs("d", "stable")] == [7.0, 8.0, 9.0]
    # Requests (no response, 2 bytes less) share the other three quarters: 9 pairs' room.
    assert len(buffer.requests("d", "stable")) == 9 * pair_size // (pair_size - 2) == 9
    assert buffer.requests("d", "stable", limit=2)[0].inputs()["ids"].shape == (1, 2)


def test_sampling_keeps_its_rate() -> None:
    buffer = SampleBuffer(rate=0.5, rng=random.Random(0))
    kept = sum(buffer.wants() for _ in range(10_000))
    assert 4700 < kept < 5300
    assert not any(SampleBuffer(rate=0.0).wants() for _ in range(100))


def test_bytes_tensors_decode_from_binary_and_json() -> None:
    words = [b"hello", "w\u00f6rld".encode(), b""]
    chunk = b"".join(len(w).to_bytes(4, "little") + w for w in words)
    header = json.dumps(
        {
            "outputs": [
                {
                    "name": "text",
                    "shape": [3, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(chunk)},
                },
                {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            ]
        }
    ).encode()
    decoded = decode(header + chunk, len(header), "outputs")
    assert decoded["text"].shape == (3, 1) and decoded["text"].ravel().tolist() == words
    assert decoded["flag"].tolist() == [True, False]
    as_json = json.dumps(
        {"inputs": [{"name": "t", "shape": [1, 2], "datatype": "BYTES", "data": [["a", "\u00e9"]]}]}
    ).encode()
    assert decode(as_json, None, "inputs")["t"].tolist() == [[b"a", "\u00e9".encode()]]
