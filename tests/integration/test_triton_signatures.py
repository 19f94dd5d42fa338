"""Every kind of signature, packaged as a build packages it, loads in a real
tritonserver (Python backend), warms up on its reference sample, and answers a request
in the model's own shape as ONNX Runtime run directly does.

The signatures (tests/support/signatures.py): a rank-0 input beside ``[batch, 4]``; a
rank-1 ``[batch]`` input; a fixed first axis ``[1, 4]``; a symbolic first axis that is
not the batch (``[n]`` beside ``[batch, n]``, and ``[n, 4]`` reduced to ``[4]``);
several symbolic axes ``[batch, n]`` with a ``[4]`` bias; two ``[batch, seq]`` int64
inputs (the one batched config); four inputs of ranks 3, 1, 0 and 2 with outputs of
ranks 2 and 1; a rank-0 output; a rank-0 input and output alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.errors import Unavailable
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.gateway.store_routes import scalar_tensors
from shipway.registry.signature import Signature, load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from tests.support.gateway import running_gateway
from tests.support.signatures import CASES

pytestmark = pytest.mark.integration

WIRE = {"float32": "FP32", "int64": "INT64"}


@dataclass
class Served:
    process: TritonProcess
    signatures: dict[str, Signature]


@pytest.fixture(scope="module")
def served(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One tritonserver holding every case, each with its reference sample's warm-up."""
    root = tmp_path_factory.mktemp("signatures")
    signatures = {}
    for name, make in CASES.items():
        made = make()
        (root / f"{name}.onnx").write_bytes(made.onnx)
        signatures[name] = read_signature(load_model(made.onnx))
        package_repository(
            root / "repo",
            name,
            root / f"{name}.onnx",
            signatures[name],
            Target.ONNXRUNTIME_CPU,
            sample=made.sample(16),
        )
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(180)  # every model loaded, so every warm-up succeeded
        yield Served(process, signatures)
    finally:
        process.stop()


def infer(
    url: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str], binary: bool
) -> dict[str, np.ndarray]:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, value in inputs.items():
            wire = value.reshape(value.shape or (1,))  # Triton has no rank-0 tensors
            tensor = triton_http.InferInput(name, list(wire.shape), WIRE[value.dtype.name])
            tensor.set_data_from_numpy(wire, binary_data=binary)
            tensors.append(tensor)
        wanted = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_request_in_the_models_own_shape_is_answered_as_onnxruntime_does(
    served: Served, case: str
) -> None:
    made = CASES[case]()
    names = [o.name for o in served.signatures[case].outputs]
    session = ort.InferenceSession(made.onnx)
    expected = dict(zip(names, session.run(names, made.request), strict=True))
    for binary in (True, False):
        answer = infer(served.process.url, case, made.request, names, binary)
        for name, value in expected.items():
            assert answer[name].shape == (value.shape or (1,)), (case, name)
            assert answer[name].dtype == value.dtype
            np.testing.assert_allclose(answer[name].reshape(value.shape), value, rtol=1e-6)


def test_only_the_all_batch_axis_model_is_batched_by_triton(served: Served) -> None:
    """Triton's own reading of each config: what it batches, and the dims it checks."""
    url = served.process.url
    loaded = {
        case: httpx.get(f"{url}/v2/models/{case}/config", trust_env=False).json() for case in CASES
    }
    assert {c: cfg["max_batch_size"] for c, cfg in loaded.items() if cfg["max_batch_size"]} == {
        "tokens": 8
    }
    assert [i["dims"] for i in loaded["tokens"]["input"]] == [[-1], [-1]]
    assert {i["name"]: i["dims"] for i in loaded["scalar-scale"]["input"]} == {
        "x": [-1, 4],
        "scale": [1],
    }
    # The warm-up Triton ran at load: the sample's first row, from the files written.
    warmup = loaded["bias"]["model_warmup"][0]
    assert warmup["batch_size"] == 1
    assert {k: v["dims"] for k, v in warmup["inputs"].items()} == {"x": [1, 4], "b": [4]}


def test_several_rows_are_served_by_the_batched_model(served: Served) -> None:
    made = CASES["tokens"]()
    rows = made.sample(5)  # five rows of seq 7 in one request, and one row alone
    for request in (rows, {k: v[:1] for k, v in rows.items()}):
        answer = infer(served.process.url, "tokens", request, ["y"], binary=True)["y"]
        np.testing.assert_array_equal(answer, (request["ids"] * request["mask"]).astype(np.float32))


def test_a_rank_0_tensor_travels_as_one_element(served: Served) -> None:
    """Triton refuses shape [] for every config it accepts ("must specify 'dims'"; no
    empty reshape without batching), so [1] is the wire shape of a scalar."""
    body = {"inputs": [{"name": "s", "shape": [], "datatype": "FP32", "data": [2.0]}]}
    refused = httpx.post(
        f"{served.process.url}/v2/models/scalar-only/infer", json=body, trust_env=False
    )
    assert refused.status_code == 400 and "Expected [1], got []" in refused.text
    body["inputs"][0]["shape"] = [1]
    answered = httpx.post(
        f"{served.process.url}/v2/models/scalar-only/infer", json=body, trust_env=False
    )
    assert answered.status_code == 200
    assert answered.json()["outputs"][0]["shape"] == [1]
    assert answered.json()["outputs"][0]["data"] == [6.0]


def test_a_model_that_fails_its_warmup_fails_its_load_with_tritons_words(
    triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    """Packaged with a sample it cannot run (x [2, 3] against a bias of 4), the model
    fails its warm-up, Triton fails the load, and the error says so and why."""
    made = CASES["bias"]()
    (tmp_path / "m.onnx").write_bytes(made.onnx)
    bad = {"x": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}
    signature = read_signature(load_model(made.onnx))
    package_repository(
        tmp_path / "repo",
        "bias",
        tmp_path / "m.onnx",
        signature,
        Target.ONNXRUNTIME_CPU,
        sample=bad,
    )
    process = TritonProcess(triton_dist, tmp_path / "repo", tmp_path / "triton.log")
    process.start()
    try:
        with pytest.raises(Unavailable, match="tritonserver exited") as info:
            process.wait_ready(120)
        message = str(info.value)
        # ONNX Runtime's reason, in Triton's load failure ("failed to load 'bias' ...:
        # failed to run warmup sample 'reference-row': ...") or, when this Triton dies
        # before logging it (it often does, SIGSEGV), in the served model's own line.
        assert "Attempting to broadcast an axis by a dimension other than 1. 3 by 4" in message
        assert (
            "failed to run warmup sample 'reference-row'" in message
            or "shipway model error: bias:" in message
        )
        assert not process.alive()
    finally:
        process.stop()


def test_through_the_gateway_a_scalar_keeps_its_own_shape(served: Served, tmp_path: Path) -> None:
    """Triton holds a rank-0 tensor as [1]; the gateway, Shipway's front door, takes and
    gives the model's own shape: a request with shape [] is served, and a rank-0 output
    comes back with shape [] (model metadata says so too)."""
    table = RoutingTable(
        {
            case: DeploymentRoute(
                case,
                (
                    VariantRoute(
                        "stable",
                        100,
                        (ReplicaRoute(served.process.url, case, 1),),
                        **scalar_tensors(served.signatures[case].to_dict()),
                    ),
                ),
            )
            for case in CASES
        }
    )
    settings = Settings(home=tmp_path / "home", _env_file=None)
    with running_gateway(settings, lambda: table) as (url, _):
        for case in sorted(CASES):
            made = CASES[case]()
            names = [o.name for o in served.signatures[case].outputs]
            session = ort.InferenceSession(made.onnx)
            expected = dict(zip(names, session.run(names, made.request), strict=True))
            for binary in (True, False):
                client = triton_http.InferenceServerClient(url.removeprefix("http://"))
                try:
                    tensors = []
                    for name, value in made.request.items():  # the model's own shapes
                        tensor = triton_http.InferInput(
                            name, list(value.shape), WIRE[value.dtype.name]
                        )
                        tensor.set_data_from_numpy(value, binary_data=binary)
                        tensors.append(tensor)
                    wanted = [
                        triton_http.InferRequestedOutput(n, binary_data=binary) for n in names
                    ]
                    result = client.infer(case, tensors, outputs=wanted)
                    metadata = client.get_model_metadata(case)
                finally:
                    client.close()
                for name, value in expected.items():
                    got = result.as_numpy(name)
                    assert got.shape == value.shape, (case, name, binary)
                    np.testing.assert_allclose(got, value, rtol=1e-6)
                shapes = {t["name"]: t["shape"] for t in metadata["inputs"] + metadata["outputs"]}
                for spec in (*served.signatures[case].inputs, *served.signatures[case].outputs):
                    if spec.shape == ():
                        assert shapes[spec.name] == [], (case, spec.name)


def test_a_request_the_model_cannot_run_is_the_clients_error_not_the_replicas(
    served: Served,
) -> None:
    """``y = x + b``: x is ``[batch, n]`` in the signature, but b has 4 elements, so an x
    of 3 columns cannot broadcast. The model ran its warm-up, so it works: the request
    is at fault — 400, not a 500 that would count against the replica."""
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]},
            {"name": "b", "shape": [4], "datatype": "FP32", "data": [1.0, 1.0, 1.0, 1.0]},
        ]
    }
    answer = httpx.post(
        f"{served.process.url}/v2/models/bias/infer", json=body, trust_env=False, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert "broadcast" in answer.json()["error"]
    fine = {
        **body,
        "inputs": [{**body["inputs"][0], "shape": [1, 4], "data": [1.0] * 4}, body["inputs"][1]],
    }
    assert (
        httpx.post(
            f"{served.process.url}/v2/models/bias/infer", json=fine, trust_env=False, timeout=30
        ).status_code
        == 200
    )
