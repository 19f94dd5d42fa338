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
    TensorSpec,
    check_sample,
    load_model,
    load_sample,
    read_signature,
)
from tests.support.signatures import CASES, F32, model, tensor


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
    # Declared [LayerNormalizationonnx::Shape_422_dim_0, ..._dim_1, 384]: the export's
    # own names, renamed from ONNX Runtime's symbolic shape inference.
    assert hidden.dtype == "float32"
    assert hidden.shape == ("batch_size", "sequence_length", 384)
    pooled = {s.name: s.shape for s in minilm_signature.outputs}["461"]
    assert pooled == ("batch_size", "Concat461_dim_1")  # a declared name stays a name
    assert minilm_signature.batch_dim == "batch_size"
    assert minilm_signature.batched_inputs == {"input_ids", "attention_mask"}
    assert Signature.from_dict(minilm_signature.to_dict()) == minilm_signature
    assert minilm_signature.to_dict()["batch_dim"] == "batch_size"


def test_a_signature_stored_before_inference_keeps_its_batch_axis() -> None:
    stored = {  # as versions registered before outputs were renamed were stored
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch_size", "seq"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch_size", "seq"]},
        ],
        "outputs": [
            {"name": "h", "dtype": "float32", "shape": ["LayerNorm_dim_0", "seq", 384]},
            {"name": "p", "dtype": "float32", "shape": [None, 384]},
            {"name": "c", "dtype": "float32", "shape": [1, 384]},
        ],
    }
    signature = Signature.from_dict(stored)
    assert [o.shape for o in signature.outputs] == [
        ("batch_size", "seq", 384),
        ("batch_size", 384),
        (1, 384),  # a fixed size is never renamed
    ]
    assert signature.batch_dim is None  # c has no batch axis
    stored["outputs"] = stored["outputs"][:2]
    assert Signature.from_dict(stored).batch_dim == "batch_size"


# The batch axis, the inputs split into rows, and the rows of an 8-row sample, for
# every kind of signature (tests/support/signatures.py has the graphs).
ROWS = {
    "scalar-scale": ("batch", {"x"}, 8),  # scale (rank 0) is the same for every row
    "vector": ("batch", {"x"}, 8),
    "fixed": (None, set(), 1),  # [1, 4]: a fixed first axis is not a batch axis
    "shared-length": ("batch", {"x"}, 8),  # a: [n], symbolic but not the batch
    "column-mean": (None, set(), 1),  # [n, 4] -> [4]: n is reduced away
    "bias": ("batch", {"x"}, 8),
    "tokens": ("batch", {"ids", "mask"}, 8),
    "mixed-ranks": ("batch", {"x", "mask"}, 8),
    "scalar-output": (None, set(), 1),  # a rank-0 output has no rows
    "scalar-only": (None, set(), 1),
}


@pytest.mark.parametrize("case", sorted(ROWS))
def test_batch_axis_and_rows_of_every_kind_of_signature(case: str) -> None:
    batch, split, count = ROWS[case]
    made = CASES[case]()
    signature = read_signature(load_model(made.onnx))
    assert signature.batch_dim == batch
    assert signature.batched_inputs == split
    assert check_sample(signature, made.sample(8)) == count
    assert check_sample(signature, made.request) == (
        len(next(iter(made.request[n] for n in split))) if split else 1
    )


def test_output_names_come_from_inference_only_when_they_name_an_input_axis() -> None:
    onnx_bytes = model(
        [helper.make_node("Add", ["x", "b"], ["y"]), helper.make_node("Relu", ["x"], ["r"])],
        [tensor("x", F32, ["batch", "n"]), tensor("b", F32, [4])],
        [tensor("y", F32, ["out_0", "out_1"]), tensor("r", F32, ["rows", 3])],
    )
    outputs = {s.name: s.shape for s in read_signature(load_model(onnx_bytes)).outputs}
    # out_0 is inferred to be x's batch; out_1 is inferred 4 (b's size), but a declared
    # name is only replaced by an input's axis name. r's declared 3 wins over n.
    assert outputs == {"y": ("batch", "out_1"), "r": ("batch", 3)}


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_tensor_without_a_shape_is_refused(where: str) -> None:
    x = tensor("x", F32, None if where == "input" else ["n"])
    y = tensor("y", F32, None if where == "output" else ["n"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx_bytes = helper.make_model(graph).SerializeToString()
    with pytest.raises(InvalidInput, match="failed validation: Field 'shape'"):
        read_signature(load_model(onnx_bytes))


def test_the_batch_axis_on_another_axis_means_rows_are_not_independent() -> None:
    def signature(*inputs: tuple[str, tuple[int | str, ...]]) -> Signature:
        return Signature(
            tuple(TensorSpec(n, "float32", s) for n, s in inputs),
            (TensorSpec("y", "float32", ("batch", 4)),),
        )

    assert signature(("x", ("batch", 4))).batch_dim == "batch"
    assert signature(("x", ("batch", 4)), ("w", (4, "batch"))).batch_dim is None
    assert signature(("x", ("batch", "batch"))).batch_dim is None
    assert signature(("x", ("n", 4))).batch_dim is None  # no input starts with it
    no_outputs_axis = Signature(
        (TensorSpec("x", "float32", ("batch", 4)),), (TensorSpec("y", "float32", (None, 4)),)
    )
    assert no_outputs_axis.batch_dim is None


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


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        ("scalar-scale", {"scale": np.ones(1, np.float32)}, r"'scale' .*expects rank 0 \(\[\]\)"),
        ("scalar-scale", {"x": np.ones((3, 5), np.float32)}, r"size 5 on axis 1, .*expects 4"),
        ("bias", {"b": np.ones(3, np.float32)}, r"'b' has size 3 on axis 0, the model expects 4"),
        (
            "tokens",
            {"mask": np.ones((8, 6), np.int64)},
            r"disagree on dimension 'seq': 'ids' has 7 on axis 1, 'mask' has 6 on axis 1",
        ),
        (
            "mixed-ranks",
            {"mask": np.ones((5, 6), np.int64)},
            r"disagree on the number of rows \(axis 'batch'\): \[5, 8\]",
        ),
        ("shared-length", {"a": np.ones(4, np.float32)}, r"disagree on dimension 'n'"),
        ("fixed", {"x": np.ones((2, 4), np.float32)}, r"size 2 on axis 0, the model expects 1"),
        ("vector", {"x": np.ones(0, np.float32)}, "the sample has no rows"),
    ],
)
def test_samples_that_do_not_fit_the_signature_are_refused(
    case: str, change: dict[str, np.ndarray], message: str
) -> None:
    made = CASES[case]()
    signature = read_signature(load_model(made.onnx))
    with pytest.raises(InvalidInput, match=message):
        check_sample(signature, {**made.sample(8), **change})


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
    # the message says what to do, not numpy's hint to load a pickle unsafely
    for garbage in (b"plain text", b"", b"\x08\x01onnx-bytes"):
        with pytest.raises(InvalidInput, match=r"not an \.npz file .*numpy\.savez"):
            load_sample(garbage)
    with pytest.raises(InvalidInput, match=r"not a readable \.npz"):
        load_sample(b"PK\x03\x04 a broken zip")
    pickled = npz(input_ids=np.array([object()], dtype=object))
    with pytest.raises(InvalidInput, match="holds Python objects") as refused:
        load_sample(pickled)["input_ids"]
    assert "allow_pickle" not in str(refused.value)
