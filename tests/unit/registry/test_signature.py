from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from shipway.errors import InvalidInput
from shipway.registry.signature import (
    Signature,
    check_sample,
    load_model,
    load_sample,
    read_signature,
)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def minilm_signature(minilm_onnx: Path) -> Signature:
    return read_signature(load_model(minilm_onnx.read_bytes()))


def test_reads_minilm_signature_from_the_graph(minilm_signature: Signature) -> None:
    inputs = {s.name: s for s in minilm_signature.inputs}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].dtype == "int64"
    assert inputs["input_ids"].shape == ("batch_size", "sequence_length")
    hidden = next(s for s in minilm_signature.outputs if s.name == "onnx::Shape_422")
    assert hidden.dtype == "float32" and hidden.shape[2] == 384
    assert Signature.from_dict(minilm_signature.to_dict()) == minilm_signature


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"this is not a protobuf at all \xff\xfe", "not a valid ONNX model"),
        (onnx.ModelProto().SerializeToString() + b"\x00", "not a valid ONNX model"),
    ],
)
def test_rejects_bytes_that_are_not_onnx(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_model(payload)


def test_rejects_a_graph_that_fails_the_checker() -> None:
    node = helper.make_node("Add", ["x", "nowhere"], ["y"])  # reads an undefined tensor
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    with pytest.raises(InvalidInput, match="failed validation"):
        load_model(model.SerializeToString())


def test_good_sample_counts_rows(minilm_signature: Signature) -> None:
    ids = np.ones((5, 7), dtype=np.int64)
    sample = load_sample(npz(input_ids=ids, attention_mask=ids))
    assert check_sample(minilm_signature, sample) == 5


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"input_ids": np.ones((2, 4), np.int64)}, r"missing \['attention_mask'\]"),
        (
            {
                "input_ids": np.ones((2, 4), np.int64),
                "attention_mask": np.ones((2, 4), np.int64),
                "extra": np.ones(2),
            },
            r"unexpected \['extra'\]",
        ),
        (
            {"input_ids": np.ones((2, 4), np.int32), "attention_mask": np.ones((2, 4), np.int64)},
            "dtype int32, the model expects int64",
        ),
        (
            {
                "input_ids": np.ones((2, 4, 1), np.int64),
                "attention_mask": np.ones((2, 4), np.int64),
            },
            "expects rank 2",
        ),
        (
            {"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((3, 4), np.int64)},
            "disagree on the number of rows",
        ),
        (
            {"input_ids": np.ones((0, 4), np.int64), "attention_mask": np.ones((0, 4), np.int64)},
            "no rows",
        ),
    ],
)
def test_rejects_mismatched_samples(
    minilm_signature: Signature, arrays: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_sample(minilm_signature, load_sample(npz(**arrays)))


def test_fixed_dimensions_must_match() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    signature = read_signature(load_model(helper.make_model(graph).SerializeToString()))
    with pytest.raises(InvalidInput, match="size 4 on axis 1, the model expects 3"):
        check_sample(signature, {"x": np.ones((2, 4), np.float32)})


def test_sample_must_be_npz_and_never_unpickled() -> None:
    with pytest.raises(InvalidInput, match=r"not a readable \.npz"):
        load_sample(b"plain text")
    pickled = npz(input_ids=np.array([object()], dtype=object))
    with pytest.raises(InvalidInput, match=r"not a readable \.npz"):
        load_sample(pickled)["input_ids"]
