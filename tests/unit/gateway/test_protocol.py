"""The Open Inference Protocol surface as pure functions: paths, request checks, renaming."""

from __future__ import annotations

import json
import struct

import pytest

import shipway
from shipway.gateway.protocol import (
    Endpoint,
    Kind,
    MalformedRequest,
    check_request,
    endpoint,
    rename_answer,
    server_metadata,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2", Endpoint(Kind.SERVER_METADATA)),
        ("/v2/health/live", Endpoint(Kind.LIVE)),
        ("/v2/health/ready", Endpoint(Kind.READY)),
        ("/v2/models/web", Endpoint(Kind.MODEL_METADATA, "web")),
        ("/v2/models/web/ready", Endpoint(Kind.MODEL_READY, "web")),
        ("/v2/models/web/infer", Endpoint(Kind.INFER, "web")),
        ("/v2/models/web/versions/3", Endpoint(Kind.MODEL_METADATA, "web", "3")),
        ("/v2/models/web/versions/3/ready", Endpoint(Kind.MODEL_READY, "web", "3")),
        ("/v2/models/web/versions/3/infer", Endpoint(Kind.INFER, "web", "3")),
        ("/v2/models/web/versions/abc/infer", Endpoint(Kind.INFER, "web", "abc")),
        ("/v2/models/", None),
        ("/v2/models/web/versions", None),
        ("/v2/models/web/versions/", None),
        ("/v2/models/web/stats", None),
        ("/v2/models/web/versions/1/config", None),
        ("/v2/repository/index", None),
        ("/v3/models/web/infer", None),
    ],
)
def test_paths_name_protocol_endpoints(path: str, expected: Endpoint | None) -> None:
    assert endpoint(path) == expected


def test_methods_and_server_metadata() -> None:
    assert Endpoint(Kind.INFER, "m").method == "POST"
    assert {Endpoint(k).method for k in Kind if k is not Kind.INFER} == {"GET"}
    assert json.loads(server_metadata()) == {
        "name": "shipway",
        "version": shipway.__version__,
        "extensions": ["binary_tensor_data"],
    }


def x(**changes: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2.5]}
    tensor.update(changes)
    return tensor


def body(request: object) -> bytes:
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    "request_body",
    [
        {"inputs": [x()]},
        {"inputs": []},  # Triton says what is missing (400)
        {"inputs": [x(data=[[1.0], [float("nan")]])]},  # nested, NaN: Triton takes both
        {"inputs": [x(datatype="INT64", data=[1, -2])]},
        {"inputs": [x(datatype="UINT8", data=[1, 2])]},
        {"inputs": [x(datatype="BOOL", data=[True, False])]},
        {"inputs": [x(datatype="BYTES", data=["a", "b"])]},
        {"inputs": [x(datatype="FP16", data=[1.0, 2.0])]},  # Triton refuses FP16 JSON: 400
        {"inputs": [x(datatype="NOPE", data=[1, 2])]},  # Triton: invalid datatype, 400
        {"inputs": [x(shape=[0], data=[])]},
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32"}]},  # Triton: 400
        {"id": "7", "parameters": {"binary_data_output": True}, "inputs": [x()]},
        {"inputs": [x()], "outputs": [{"name": "y", "parameters": {"binary_data": False}}]},
        {"inputs": [x(parameters=[])]},  # Triton ignores input parameters it cannot read
    ],
)
def test_well_formed_requests_pass(request_body: dict[str, object]) -> None:
    check_request(body(request_body), None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{nope", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (body({}), "'inputs' must be an array"),
        (body({"inputs": 3}), "'inputs' must be an array"),
        (body({"inputs": ["x"]}), "input 0 must be an object"),
        (body({"inputs": [x(name=5)]}), "string 'name'"),
        (body({"inputs": [x(datatype=5)]}), "string 'datatype'"),
        (body({"inputs": [x(shape="2")]}), "'shape' must be an array"),
        (body({"inputs": [x(shape=[-2])]}), "'shape' must be an array"),
        (body({"inputs": [x(shape=[2.0])]}), "'shape' must be an array"),
        (body({"inputs": [x(shape=[True, True])]}), "'shape' must be an array"),
        (body({"inputs": [x(data=None)]}), "'data' must be an array"),
        (body({"inputs": [x(data=[1.0])]}), "has 1 values, shape [2] needs 2"),
        (body({"inputs": [x(data=[[1.0], [2.0, 3.0]])]}), "has 3 values, shape [2] needs 2"),
        (body({"inputs": [x(datatype="INT64", data=[True, 2])]}), "not INT64"),
        (body({"inputs": [x(datatype="UINT64", data=[2**64, 2])]}), "not UINT64"),
        (body({"inputs": [x(data=[True, False])]}), "not FP32"),
        (body({"inputs": [x(data=["1", "2"])]}), "not FP32"),
        (body({"inputs": [x(datatype="INT64", data=[1.5, 2])]}), "not INT64"),
        (body({"inputs": [x(datatype="INT64", data=[2**70, 1])]}), "not INT64"),
        (body({"inputs": [x(datatype="UINT8", data=[-1, 2])]}), "not UINT8"),
        (body({"inputs": [x(datatype="BOOL", data=[1, 0])]}), "not BOOL"),
        (body({"inputs": [x(datatype="BYTES", data=["a", 1])]}), "not BYTES"),
        (body({"id": 7, "inputs": [x()]}), "'id' must be a string"),
        (body({"parameters": [], "inputs": [x()]}), "'parameters' of the request"),
        (body({"parameters": {"binary_data_output": "yes"}, "inputs": [x()]}), "true or false"),
        (body({"inputs": [x()], "outputs": 3}), "'outputs' must be an array"),
        (body({"inputs": [x()], "outputs": ["y"]}), "output 0 must be an object"),
        (body({"inputs": [x()], "outputs": [{}]}), "output 0 must be an object"),
        (
            body({"inputs": [x()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}),
            "'binary_data' must be true or false",
        ),
        *(
            (
                body({"inputs": [{**x(), "parameters": {"binary_data_size": size}}]}),
                "'binary_data_size' must be a byte count",
            )
            for size in (-4, "32", 32.0, None, True, 2**64)
        ),
        (
            body(
                {"inputs": [x()], "outputs": [{"name": "y", "parameters": {"classification": "x"}}]}
            ),
            "'classification' must be a count",
        ),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_request(raw, None)


def test_binary_requests_check_their_json_part_only() -> None:
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
    head = body({"inputs": [tensor]})
    check_request(head + b"\x00" * 8, len(head))
    check_request(b"\x00" * 8, 0)  # header length 0: a raw binary request, Triton's to judge
    with pytest.raises(MalformedRequest, match="the body has 16 bytes"):
        check_request(b"{}" + b"\x00" * 14, 100)
    with pytest.raises(MalformedRequest, match="not JSON"):
        check_request(head + b"\x00" * 8, len(head) - 1)


def answer(prefix: str, tensors: bytes = b"") -> bytes:
    return (prefix + ',"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}').encode() + tensors


def test_answers_are_renamed_to_the_deployment_and_registered_version() -> None:
    tensors = b"\x00\x00\x80\x3f"
    payload = answer('{"model_name":"web-abc123","model_version":"1"', tensors)
    renamed, length = rename_answer(payload, len(payload) - 4, "web-abc123", "web", 12)
    assert renamed.endswith(tensors) and length == len(renamed) - 4
    head = json.loads(renamed[:length])
    assert (head["model_name"], head["model_version"]) == ("web", "12")
    assert head["outputs"] == json.loads(payload[:-4])["outputs"]
    # The request's id stays; a version unknown to the routes stays Triton's.
    with_id = answer('{"id":"a \\"quoted\\" id","model_name":"web-abc123","model_version":"1"')
    renamed, length = rename_answer(with_id, None, "web-abc123", "web", None)
    assert length is None
    assert json.loads(renamed) == {**json.loads(with_id), "model_name": "web"}
    # Another model's answer, or another layout, passes as it was.
    other = answer('{"model_name":"other","model_version":"1"')
    assert rename_answer(other, None, "web-abc123", "web", 1) == (other, None)
    spaced = answer('{"model_name": "web-abc123", "model_version": "1"')
    assert rename_answer(spaced, 9, "web-abc123", "web", 1) == (spaced, 9)


def test_reshape_tensors_changes_only_the_declared_shape_of_the_named_tensors() -> None:
    from shipway.gateway.protocol import reshape_tensors

    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4},
                },
                {"name": "x", "shape": [], "datatype": "FP32", "data": [1.0]},
            ]
        }
    ).encode()
    data = struct.pack("<f", 2.5)
    body, length = reshape_tensors(header + data, len(header), "inputs", frozenset({"s"}), [], [1])
    assert length is not None and body[length:] == data  # the binary part untouched
    shapes = {t["name"]: t["shape"] for t in json.loads(body[:length])["inputs"]}
    assert shapes == {"s": [1], "x": []}  # x is not a scalar of this model
    as_json = json.dumps({"outputs": [{"name": "y", "shape": [1], "data": [3.0]}]}).encode()
    back, none = reshape_tensors(as_json, None, "outputs", frozenset({"y"}), [1], [])
    assert none is None and json.loads(back)["outputs"][0]["shape"] == []
    # nothing to change, or unreadable: as it was
    assert reshape_tensors(as_json, None, "outputs", frozenset({"z"}), [1], []) == (as_json, None)
    assert reshape_tensors(b"{nope", None, "inputs", frozenset({"s"}), [], [1]) == (b"{nope", None)


def test_replica_errors_reach_clients_in_their_terms() -> None:
    from shipway.gateway.app import _as_error

    triton = (
        b'{"error":"[request id: <id_unknown>] unexpected inference input \'x\' '
        b"for model 'web-44f82aa80a4d'\"}"
    )
    assert json.loads(_as_error(triton, 400, "web-44f82aa80a4d", "web")) == {
        "error": "unexpected inference input 'x' for model 'web'"
    }
    assert json.loads(_as_error(b"model crashed", 500)) == {
        "error": "the replica answered 500: model crashed"
    }
    assert json.loads(_as_error(b"", 503)) == {"error": "the replica answered 503"}
