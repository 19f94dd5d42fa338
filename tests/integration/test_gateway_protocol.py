"""The gateway's Open Inference Protocol (KServe v2) surface, asked with tritonclient of
the gateway and of the Triton replica behind it, the answers compared.

Two small models built here with ``onnx.helper`` and packaged as a build packages them
(``package_repository``, the Python backend running ONNX Runtime) in one real
tritonserver: ``mixed`` (FP16, BOOL and INT64 inputs, three outputs to select from) and
``text`` (BYTES in and out). Versions are registered model versions: deployment
``mixed`` serves version 1 from its stable variant and version 2 from its canary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton_http
from onnx import TensorProto, helper

import shipway
from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.gateway.kserve_codec import decode
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.registry.signature import read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from tests.support.gateway import answers, running_gateway
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

MIXED, TEXT = "mixed-b1", "text-b2"  # Triton's model names (one per build)


def mixed_model() -> onnx.ModelProto:
    """h2 = h + h (FP16), notflag = not flag (BOOL), count1 = count + 1 (INT64)."""
    inputs = [
        helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["n", 3]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n", 3]),
        helper.make_tensor_value_info("count", TensorProto.INT64, ["n", 3]),
    ]
    outputs = [
        helper.make_tensor_value_info("h2", TensorProto.FLOAT16, ["n", 3]),
        helper.make_tensor_value_info("notflag", TensorProto.BOOL, ["n", 3]),
        helper.make_tensor_value_info("count1", TensorProto.INT64, ["n", 3]),
    ]
    nodes = [
        helper.make_node("Add", ["h", "h"], ["h2"]),
        helper.make_node("Not", ["flag"], ["notflag"]),
        helper.make_node("Add", ["count", "one"], ["count1"]),
    ]
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    graph = helper.make_graph(nodes, "mixed", inputs, outputs, [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def text_model() -> onnx.ModelProto:
    """same = text, a string tensor (ONNX Runtime's Identity takes strings)."""
    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["n", 2])
    same = helper.make_tensor_value_info("same", TensorProto.STRING, ["n", 2])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])], "t", [text], [same]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@dataclass
class Served:
    gateway: str  # host:port, as tritonclient takes it
    triton: str
    triton_port: str


@pytest.fixture(scope="module")
def served(
    triton_dist: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("protocol")
    for name, model in ((MIXED, mixed_model()), (TEXT, text_model())):
        onnx.checker.check_model(model)
        path = root / f"{name}.onnx"
        onnx.save(model, str(path))
        package_repository(root / "repo", name, path, read_signature(model), Target.ONNXRUNTIME_CPU)
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(120)
        port = process.url.rsplit(":", 1)[1]
        # Two addresses of one server stand for two replicas: the stable variant's of
        # registered version 1, the canary's of version 2.
        table = RoutingTable(
            {
                "mixed": DeploymentRoute(
                    "mixed",
                    (
                        VariantRoute("stable", 50, (ReplicaRoute(process.url, MIXED, 1),)),
                        VariantRoute(
                            "canary", 50, (ReplicaRoute(f"http://localhost:{port}", MIXED, 2),)
                        ),
                    ),
                ),
                "text": DeploymentRoute(
                    "text", (VariantRoute("stable", 100, (ReplicaRoute(process.url, TEXT, 4),)),)
                ),
                "cold": DeploymentRoute("cold", (VariantRoute("stable", 100, ()),)),
                # a canary of another model taking most of the traffic
                "canaried": DeploymentRoute(
                    "canaried",
                    (
                        VariantRoute("canary", 90, (ReplicaRoute(process.url, MIXED, 2),)),
                        VariantRoute("stable", 10, (ReplicaRoute(process.url, TEXT, 1),)),
                    ),
                ),
            }
        )
        with running_gateway(Settings(home=root), lambda: table) as (url, _):
            yield Served(url.removeprefix("http://"), process.url.removeprefix("http://"), port)
    finally:
        process.stop()


@pytest.fixture
def clients(served: Served) -> Iterator[tuple[triton_http.InferenceServerClient, ...]]:
    gateway = triton_http.InferenceServerClient(served.gateway)
    triton = triton_http.InferenceServerClient(served.triton)
    try:
        yield gateway, triton
    finally:
        gateway.close()
        triton.close()


H = np.array([[1.0, -2.5, 1024.0], [0.0, 0.125, -0.0]], np.float16)
FLAG = np.array([[True, False, True], [False, False, True]])
COUNT = np.array([[1, -2, 2**40], [0, 7, -(2**40)]], np.int64)
WORDS = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"\x00\x01 raw"]], dtype=object)


def mixed_inputs(binary: bool) -> list[triton_http.InferInput]:
    """FP16 always binary: Triton takes no FP16 in JSON (see the test below)."""
    tensors = []
    for name, value, datatype in (
        ("h", H, "FP16"),
        ("flag", FLAG, "BOOL"),
        ("count", COUNT, "INT64"),
    ):
        tensor = triton_http.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary or datatype == "FP16")
        tensors.append(tensor)
    return tensors


def outputs_of(names: tuple[str, ...], binary: bool) -> list[triton_http.InferRequestedOutput]:
    """FP16 (h2) always binary: Triton sends no FP16 in JSON either."""
    return [triton_http.InferRequestedOutput(n, binary_data=binary or n == "h2") for n in names]


def same_but_name(ours: dict, theirs: dict, name: str, versions: list[str] | None) -> None:  # type: ignore[type-arg]
    """Equal answers but for the model's name (and its versions, when given)."""
    assert ours["name"] == name
    if versions is not None:
        assert ours.get("versions") == versions
    drop = {"name", "versions", "model_name", "model_version"}
    assert {k: v for k, v in ours.items() if k not in drop} == {
        k: v for k, v in theirs.items() if k not in drop
    }


def test_server_metadata_and_health(
    clients: tuple[triton_http.InferenceServerClient, ...],
) -> None:
    gateway, triton = clients
    ours, theirs = gateway.get_server_metadata(), triton.get_server_metadata()
    assert ours == {
        "name": "shipway",
        "version": shipway.__version__,
        "extensions": ["binary_tensor_data"],
    }
    assert theirs["name"] == "triton" and set(ours["extensions"]) <= set(theirs["extensions"])
    assert gateway.is_server_live() and triton.is_server_live()
    assert gateway.is_server_ready() and triton.is_server_ready()


@pytest.mark.parametrize(
    ("deployment", "model", "versions"), [("mixed", MIXED, ["1", "2"]), ("text", TEXT, ["4"])]
)
def test_model_metadata_and_readiness_with_and_without_a_version(
    clients: tuple[triton_http.InferenceServerClient, ...],
    deployment: str,
    model: str,
    versions: list[str],
) -> None:
    gateway, triton = clients
    theirs = triton.get_model_metadata(model)
    assert theirs["versions"] == ["1"]  # every build's Triton repository has version 1
    same_but_name(gateway.get_model_metadata(deployment), theirs, deployment, versions)
    for version in versions:
        same_but_name(
            gateway.get_model_metadata(deployment, version),
            triton.get_model_metadata(model, "1"),
            deployment,
            versions,
        )
        assert gateway.is_model_ready(deployment, version)
    assert gateway.is_model_ready(deployment) and triton.is_model_ready(model, "1")
    assert not gateway.is_model_ready(deployment, "3") and not triton.is_model_ready(model, "3")
    assert not gateway.is_model_ready("nope") and not triton.is_model_ready("nope")
    with pytest.raises(triton_http.InferenceServerException) as info:
        gateway.get_model_metadata(deployment, "3")
    assert info.value.status() == "404"
    assert f"versions serving: {', '.join(versions)}" in info.value.message()


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("version", ["", "1", "2"])
def test_infer_matches_triton_for_fp16_bool_int64(
    clients: tuple[triton_http.InferenceServerClient, ...],
    binary_in: bool,
    binary_out: bool,
    version: str,
) -> None:
    gateway, triton = clients
    names = ("h2", "notflag", "count1")
    ours = gateway.infer("mixed", mixed_inputs(binary_in), version, outputs_of(names, binary_out))
    theirs = triton.infer(MIXED, mixed_inputs(binary_in), "", outputs_of(names, binary_out))
    expected = {"h2": H + H, "notflag": ~FLAG, "count1": COUNT + 1}
    for name, value in expected.items():
        assert ours.as_numpy(name).dtype == value.dtype
        np.testing.assert_array_equal(ours.as_numpy(name), value)
        np.testing.assert_array_equal(ours.as_numpy(name), theirs.as_numpy(name))
    answer, direct = ours.get_response(), theirs.get_response()
    assert answer["model_name"] == "mixed" and direct["model_name"] == MIXED
    assert answer["model_version"] in ((version,) if version else ("1", "2"))
    assert answer["outputs"] == direct["outputs"]


@pytest.mark.parametrize("binary", [True, False])
def test_output_selection(
    clients: tuple[triton_http.InferenceServerClient, ...], binary: bool
) -> None:
    gateway, triton = clients
    for names in (("count1",), ("notflag", "h2")):
        ours = gateway.infer("mixed", mixed_inputs(True), outputs=outputs_of(names, binary))
        theirs = triton.infer(MIXED, mixed_inputs(True), outputs=outputs_of(names, binary))
        # Triton answers in the model's order of outputs, whatever the request's.
        assert sorted(o["name"] for o in ours.get_response()["outputs"]) == sorted(names)
        assert ours.get_response()["outputs"] == theirs.get_response()["outputs"]
        for name in ("h2", "notflag", "count1"):
            if name in names:
                np.testing.assert_array_equal(ours.as_numpy(name), theirs.as_numpy(name))
            else:
                assert ours.as_numpy(name) is None
    # Without "outputs" every output comes back.
    every = gateway.infer("mixed", mixed_inputs(True)).get_response()["outputs"]
    assert sorted(o["name"] for o in every) == ["count1", "h2", "notflag"]
    for client, model in ((gateway, "mixed"), (triton, MIXED)):
        with pytest.raises(triton_http.InferenceServerException, match="'nope'") as info:
            client.infer(model, mixed_inputs(True), outputs=outputs_of(("nope",), binary))
        assert info.value.status() == "400"


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_bytes_tensors(
    clients: tuple[triton_http.InferenceServerClient, ...], binary_in: bool, binary_out: bool
) -> None:
    gateway, triton = clients
    results = []
    for client, model, version in (
        (gateway, "text", "4"),
        (gateway, "text", ""),
        (triton, TEXT, "1"),
    ):
        tensor = triton_http.InferInput("text", list(WORDS.shape), "BYTES")
        tensor.set_data_from_numpy(WORDS, binary_data=binary_in)
        result = client.infer(model, [tensor], version, outputs_of(("same",), binary_out))
        same = result.as_numpy("same")
        if not binary_out:  # JSON answers hold strings, which tritonclient gives as str
            same = np.array([[s.encode() for s in row] for row in same], dtype=object)
        np.testing.assert_array_equal(same, WORDS)
        results.append(result.get_response())
    assert results[0]["model_version"] == results[1]["model_version"] == "4"
    assert results[0]["outputs"] == results[1]["outputs"] == results[2]["outputs"]


def test_fp16_in_json_is_refused_alike(
    clients: tuple[triton_http.InferenceServerClient, ...],
) -> None:
    """Triton 2.51 takes and sends FP16 only as binary data (its HTTP endpoint has no
    JSON form for it); the gateway passes its 400 on, in both directions."""
    gateway, triton = clients
    for direction in ("receiving", "sending"):
        errors = []
        for client, model in ((gateway, "mixed"), (triton, MIXED)):
            tensors = mixed_inputs(True)
            requested = None
            if direction == "receiving":
                tensors[0].set_data_from_numpy(H, binary_data=False)
            else:
                requested = [triton_http.InferRequestedOutput("h2", binary_data=False)]
            with pytest.raises(triton_http.InferenceServerException) as info:
                client.infer(model, tensors, outputs=requested)
            errors.append((info.value.status(), info.value.message()))
        assert errors[0] == errors[1] and errors[0][0] == "400"
        assert f"{direction} FP16 data via JSON is not supported" in errors[0][1]


def mixed_body(**extra: object) -> tuple[bytes, dict[str, str]]:
    """A raw request to ``mixed``: BOOL and INT64 as JSON, FP16 as binary data."""
    request = {
        **extra,
        "inputs": [
            {"name": "flag", "shape": [2, 3], "datatype": "BOOL", "data": FLAG.tolist()},
            {"name": "count", "shape": [2, 3], "datatype": "INT64", "data": COUNT.tolist()},
            {
                "name": "h",
                "shape": [2, 3],
                "datatype": "FP16",
                "parameters": {"binary_data_size": H.nbytes},
            },
        ],
    }
    head = json.dumps(request).encode()
    return head + H.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def test_binary_data_output_and_the_header_length(served: Served) -> None:
    """The request-level ``binary_data_output``: raw HTTP, the binary answer renamed and
    its ``Inference-Header-Content-Length`` adjusted, the tensors as Triton's."""
    body, headers = mixed_body(id="req-7", parameters={"binary_data_output": True})
    ours = httpx.post(
        f"http://{served.gateway}/v2/models/mixed/versions/2/infer", content=body, headers=headers
    )
    theirs = httpx.post(
        f"http://{served.triton}/v2/models/{MIXED}/infer", content=body, headers=headers
    )
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert (
        ours.headers["content-type"] == theirs.headers["content-type"] == "application/octet-stream"
    )
    assert ours.headers["x-shipway-variant"] == "canary"
    length = int(ours.headers["inference-header-content-length"])
    head_ours = json.loads(ours.content[:length])
    head_theirs = json.loads(
        theirs.content[: int(theirs.headers["inference-header-content-length"])]
    )
    assert head_ours == {**head_theirs, "model_name": "mixed", "model_version": "2"}
    assert head_ours["id"] == "req-7"
    tensors, direct = (
        decode(ours.content, length, "outputs"),
        decode(theirs.content, int(theirs.headers["inference-header-content-length"]), "outputs"),
    )
    assert tensors.keys() == direct.keys() == {"h2", "notflag", "count1"}
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, direct[name])
    np.testing.assert_array_equal(tensors["count1"], COUNT + 1)


def test_a_version_goes_only_to_the_variants_serving_it(served: Served) -> None:
    url = f"http://{served.gateway}/v2/models/mixed"
    body, headers = mixed_body(outputs=[{"name": "count1"}])
    for version, variant in (("1", "stable"), ("2", "canary")):
        for _ in range(10):  # at 50/50, 10 unpinned requests all on one arm: 0.2 %
            response = httpx.post(f"{url}/versions/{version}/infer", content=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.headers["x-shipway-variant"] == variant
            assert response.json()["model_version"] == version
            assert response.json()["outputs"][0]["data"] == (COUNT + 1).ravel().tolist()
    seen = set()
    for _ in range(40):
        response = httpx.post(f"{url}/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        arm = response.headers["x-shipway-variant"]
        assert response.json()["model_version"] == {"stable": "1", "canary": "2"}[arm]
        seen.add(arm)
    assert seen == {"stable", "canary"}


VALID = json.dumps(
    {"inputs": [{"name": "count", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}
).encode()


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "message"),
    [
        ("GET", "/v2/models/nope", None, 404, "deployment 'nope' does not exist"),
        ("GET", "/v2/models/nope/versions/1/ready", None, 404, "does not exist"),
        ("POST", "/v2/models/nope/versions/1/infer", VALID, 404, "does not exist"),
        ("GET", "/v2/models/mixed/versions/3", None, 404, "versions serving: 1, 2"),
        ("POST", "/v2/models/mixed/versions/3/infer", VALID, 404, "does not serve version '3'"),
        ("POST", "/v2/models/mixed/versions/abc/infer", VALID, 404, "versions serving: 1, 2"),
        ("GET", "/v2/models/cold", None, 503, "no ready replica"),
        ("POST", "/v2/models/cold/versions/1/infer", VALID, 503, "no ready replica"),
        ("GET", "/v2/models/mixed/stats", None, 404, "no route for GET"),
        ("GET", "/v2/nothing", None, 404, "no route for GET"),
        ("POST", "/v2/models/mixed/infer", b"{nope", 400, "not JSON"),
        ("POST", "/v2/models/mixed/infer", b"[]", 400, "JSON object"),
        ("POST", "/v2/models/mixed/versions/1/infer", b'{"inputs": 3}', 400, "'inputs'"),
        ("POST", "/v2/models/cold/infer", b"{nope", 400, "not JSON"),
        ("POST", "/v2", None, 405, "use GET"),
        ("DELETE", "/v2/health/live", None, 405, "use GET"),
        ("PUT", "/v2/models/mixed", None, 405, "use GET"),
        ("POST", "/v2/models/mixed/versions/1/ready", None, 405, "use GET"),
        ("GET", "/v2/models/mixed/infer", None, 405, "use POST"),
        ("GET", "/v2/models/mixed/versions/1/infer", None, 405, "use POST"),
        ("POST", "/metrics", None, 405, "use GET"),
    ],
)
def test_errors_are_json_with_the_right_status(
    served: Served, method: str, path: str, content: bytes | None, status: int, message: str
) -> None:
    response = httpx.request(method, f"http://{served.gateway}{path}", content=content)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and message in error["error"], error
    if status == 405:
        assert response.headers["allow"] == ("POST" if "use POST" in message else "GET")


def test_malformed_requests_are_the_clients_fault_not_the_replicas(served: Served) -> None:
    """Triton answers these with a 500, which would count against the replica (its
    ejection, the rollout's error rate); the gateway answers 400 and never forwards."""
    bad = [
        b"{nope",
        b'{"inputs": [{"name": "count", "shape": [-1], "datatype": "INT64", "data": [1]}]}',
    ]
    before = answers(f"http://{served.gateway}", "mixed")
    for body in bad:
        direct = httpx.post(f"http://{served.triton}/v2/models/{MIXED}/infer", content=body)
        assert direct.status_code == 500
        ours = httpx.post(f"http://{served.gateway}/v2/models/mixed/infer", content=body)
        assert ours.status_code == 400 and "x-shipway-variant" not in ours.headers

    def counted() -> dict[tuple[str, str], float]:
        after = answers(f"http://{served.gateway}", "mixed")
        return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}

    wait_until(lambda: counted() == {("", "4xx"): 2.0}, 30, "the two refusals counted")
    assert counted() == {("", "4xx"): 2.0}


def test_during_a_canary_model_metadata_is_stables(
    clients: tuple[triton_http.InferenceServerClient, ...],
) -> None:
    """Clients read the metadata to know what to send: stable's signature while stable
    serves, whatever the canary's weight (its inputs may differ: a renamed input)."""
    gateway, triton = clients
    for _ in range(5):
        same_but_name(
            gateway.get_model_metadata("canaried"),
            triton.get_model_metadata(TEXT),
            "canaried",
            None,
        )
