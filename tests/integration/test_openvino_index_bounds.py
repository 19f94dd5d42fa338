"""Token ids past their embedding table, served by OpenVINO in the local Triton.

ONNX Runtime refuses a ``Gather`` index outside its table (the client's 400);
OpenVINO's Gather answers zeros for it, so an openvino-cpu build would answer 200 with
an embedding nobody asked for, where the same model's onnxruntime-cpu build answers 400.
The served OpenVINO model checks the bounds ``engines.graph.index_bounds`` read from the
registered model (README, "The OpenVINO CPU target").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.builds.triton_config import ServingOptions
from shipway.engines import openvino
from shipway.engines.graph import index_bounds
from shipway.registry.signature import load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from tests.support.graphs import tiny_encoder

pytestmark = pytest.mark.integration

VOCAB = 50  # tiny_encoder's default table


@pytest.fixture(scope="module")
def url(triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("bounds")
    onnx_bytes = tiny_encoder()
    (root / "m.onnx").write_bytes(onnx_bytes)
    bounds = index_bounds(onnx.load_from_string(onnx_bytes))
    assert bounds == {"input_ids": VOCAB}
    xml = openvino.save(openvino.read_onnx(root / "m.onnx"), root / "ir" / "model.xml")
    signature = read_signature(load_model(onnx_bytes))
    sample = {spec.name: np.ones((2, 6), np.int64) for spec in signature.inputs}
    untrimmed = ServingOptions(trim_padding=False)
    package_repository(
        root / "repo", "enc", xml, signature, Target.OPENVINO_CPU, untrimmed,
        sample=sample, openvino_precision="f32", index_bounds=bounds,
    )  # fmt: skip
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(180)
        yield process.url
    finally:
        process.stop()


def infer(url: str, ids: list[int]) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, len(ids)], "datatype": "INT64",
             "data": [1] * len(ids)},
        ]
    }  # fmt: skip
    return httpx.post(f"{url}/v2/models/enc/infer", json=body, trust_env=False, timeout=30)


@pytest.mark.parametrize("bad", [VOCAB, 99_999, -VOCAB - 1])
def test_an_id_past_the_table_is_a_400_as_with_onnx_runtime(url: str, bad: int) -> None:
    answer = infer(url, [1, bad, 3])
    assert answer.status_code == 400, answer.text
    assert (
        f"input 'input_ids': index {bad} is out of range [-{VOCAB}, {VOCAB - 1}]"
        in (answer.json()["error"])
    )


def test_ids_within_the_table_are_answered(url: str) -> None:
    answer = infer(url, [VOCAB - 1, 1, -VOCAB])
    assert answer.status_code == 200, answer.text


def test_index_bounds_reads_only_gathers_of_graph_inputs_into_tables(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [7, 3], [0.0] * 21)
    small = helper.make_tensor("small", TensorProto.FLOAT, [2, 5], [0.0] * 10)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["a"]),
            helper.make_node("Gather", ["small", "ids"], ["b"], axis=1),  # size 5
            helper.make_node("Gather", ["table", "other"], ["c"]),
            helper.make_node("Gather", ["x", "ids"], ["d"]),  # not a table: no bound
        ],
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("other", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abcd"],
        [table, small],
    )
    assert index_bounds(helper.make_model(graph)) == {"ids": 5, "other": 7}
