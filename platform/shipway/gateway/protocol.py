"""The Open Inference Protocol (KServe v2) surface of the gateway. Pure: no I/O.

- which endpoint a path names, and the method it takes;
- the server metadata;
- the check of an inference request's JSON part, done before it is forwarded;
- renaming an answer from a replica's Triton model to the deployment.

Reference: the KServe v2 / Open Inference Protocol REST spec
(https://github.com/kserve/open-inference-protocol, ``specification/protocol/
inference_rest.md``) and Triton's binary tensor data extension
(``docs/protocol/extension_binary_data.md`` in triton-inference-server/server).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import shipway

SERVER_NAME = "shipway"
# Only what the gateway passes through and is tested for. Triton's other extensions
# (shared memory, model repository, statistics, trace, logging...) have endpoints of
# their own, which the gateway does not route.
EXTENSIONS = ("binary_tensor_data",)


class Kind(StrEnum):
    SERVER_METADATA = "server_metadata"
    LIVE = "live"
    READY = "ready"
    MODEL_METADATA = "model_metadata"
    MODEL_READY = "model_ready"
    INFER = "infer"


METHODS = {kind: "POST" if kind is Kind.INFER else "GET" for kind in Kind}


@dataclass(frozen=True)
class Endpoint:
    kind: Kind
    model: str | None = None
    version: str | None = None  # as written in the path; checked against the routes

    @property
    def method(self) -> str:
        return METHODS[self.kind]


_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")
_FIXED = {
    "/v2": Kind.SERVER_METADATA,
    "/v2/": Kind.SERVER_METADATA,
    "/v2/health/live": Kind.LIVE,
    "/v2/health/ready": Kind.READY,
}


def endpoint(path: str) -> Endpoint | None:
    """The protocol endpoint ``path`` names, or ``None`` (a 404)."""
    kind = _FIXED.get(path)
    if kind is not None:
        return Endpoint(kind)
    match = _MODEL_PATH.fullmatch(path)
    if match is None:
        return None
    model, version, action = match.groups()
    kind = {None: Kind.MODEL_METADATA, "ready": Kind.MODEL_READY, "infer": Kind.INFER}[action]
    return Endpoint(kind, model, version)


def server_metadata() -> bytes:
    """``GET /v2``: the server metadata response object."""
    return json.dumps(
        {"name": SERVER_NAME, "version": shipway.__version__, "extensions": list(EXTENSIONS)}
    ).encode()


class MalformedRequest(ValueError):
    """An inference request the protocol does not allow: the client's fault (400)."""


SIGNED = {"INT8", "INT16", "INT32", "INT64"}
UNSIGNED = {"UINT8", "UINT16", "UINT32", "UINT64"}
FLOATS = {"FP16", "FP32", "FP64", "BF16"}
DATATYPES = SIGNED | UNSIGNED | FLOATS | {"BOOL", "BYTES"}


def check_request(body: bytes, header_length: int | None) -> None:
    """Check the JSON part of an inference request; raise ``MalformedRequest``.

    ``header_length`` is ``Inference-Header-Content-Length`` (``None``: the whole body
    is JSON; ``0``: a raw binary request, Triton's extension, not checked here).

    It checks the request's *structure*, which Triton 2.51 answers with a 500 when it
    is wrong (a JSON syntax error; ``inputs`` missing or no array; a ``name``,
    ``datatype``, ``shape`` or ``id`` of the wrong type; ``data`` whose values do not
    fit the datatype or whose count is not the shape's; ``parameters`` no object;
    ``binary_data_output`` / ``binary_data`` no boolean; ``binary_data_size`` or an
    output's ``classification`` no unsigned integer; an output without a name).
    Passed on, such a 500 would count against the replica (ejection, the rollout's
    error rate) for the client's mistake. What only the model can judge (names,
    shapes, datatypes it expects) is left to Triton, which answers 400 for those.
    """
    if header_length == 0:
        return
    if header_length is not None and header_length > len(body):
        raise MalformedRequest(
            f"inference-header-content-length is {header_length}, "
            f"but the body has {len(body)} bytes"
        )
    try:
        request = json.loads(body if header_length is None else body[:header_length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise MalformedRequest("the request must be a JSON object")
    if "id" in request and not isinstance(request["id"], str):
        raise MalformedRequest("'id' must be a string")
    parameters = _object(request, "parameters", "the request")
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise MalformedRequest("'binary_data_output' must be true or false")
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise MalformedRequest("'inputs' must be an array of input tensors")
    for index, tensor in enumerate(inputs):
        _check_input(tensor, index)
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise MalformedRequest("'outputs' must be an array of requested outputs")
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise MalformedRequest(f"output {index} must be an object with a string 'name'")
        options = output.get("parameters")
        if not isinstance(options, dict):
            continue  # Triton ignores parameters it cannot read
        if not isinstance(options.get("binary_data", False), bool):
            raise MalformedRequest(
                f"output {output['name']!r}: 'binary_data' must be true or false"
            )
        if "classification" in options and not _count(options["classification"]):
            raise MalformedRequest(
                f"output {output['name']!r}: 'classification' must be a count of classes >= 0"
            )


def _object(holder: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = holder.get(key, {})
    if not isinstance(value, dict):
        raise MalformedRequest(f"'{key}' of {where} must be an object")
    return value


def _check_input(tensor: object, index: int) -> None:
    if not isinstance(tensor, dict):
        raise MalformedRequest(f"input {index} must be an object")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise MalformedRequest(f"input {index} must have a string 'name'")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise MalformedRequest(f"input {name!r} must have a string 'datatype'")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise MalformedRequest(f"input {name!r}: 'shape' must be an array of sizes >= 0")
    parameters = tensor.get("parameters")  # not an object: Triton ignores it, so do we
    if isinstance(parameters, dict) and not _count(parameters.get("binary_data_size", 0)):
        raise MalformedRequest(f"input {name!r}: 'binary_data_size' must be a byte count >= 0")
    if "data" not in tensor:
        return  # binary data or shared memory: Triton checks the rest
    _check_data(name, datatype, shape, tensor["data"])


def _count(value: object) -> bool:
    """A JSON integer >= 0 that fits Triton's unsigned 64 bits (not a bool, float, str)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


# The JSON types each datatype's values may have (``bool`` is no ``int`` here: Triton
# refuses ``true`` for a number and ``1`` for a boolean), and the range of integers.
_JSON_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(SIGNED | UNSIGNED, frozenset({int})),
    **dict.fromkeys(FLOATS, frozenset({int, float})),
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
}
_RANGES = {
    **dict.fromkeys(SIGNED, (-(2**63), 2**63 - 1)),
    **dict.fromkeys(UNSIGNED, (0, 2**64 - 1)),
}


def _check_data(name: str, datatype: str, shape: list[int], data: object) -> None:
    if not isinstance(data, list):
        raise MalformedRequest(f"input {name!r}: 'data' must be an array")
    if datatype not in DATATYPES:
        return  # Triton answers 400 for an unknown datatype
    values: list[Any] = []
    _flatten(data, values)  # nested or flat: Triton counts the values either way
    expected = math.prod(shape)
    if len(values) != expected:
        raise MalformedRequest(
            f"input {name!r}: 'data' has {len(values)} values, shape {shape} needs {expected}"
        )
    fits = {type(v) for v in values} <= _JSON_TYPES[datatype]
    if fits and values and datatype in _RANGES:
        low, high = _RANGES[datatype]
        fits = low <= min(values) and max(values) <= high
    if not fits:
        raise MalformedRequest(f"input {name!r}: 'data' holds values that are not {datatype}")


def _flatten(data: list[Any], into: list[Any]) -> None:
    for value in data:
        if type(value) is list:
            _flatten(value, into)
        else:
            into.append(value)


_STRING = rb'"(?:[^"\\]|\\.)*"'
_ANSWER_PREFIX = re.compile(  # groups: the id member (or nothing), the name, the version
    rb'\{((?:"id":' + _STRING + rb",)?)"
    rb'"model_name":(' + _STRING + rb"),"
    rb'"model_version":(' + _STRING + rb")"
)


def rename_answer(
    payload: bytes, header_length: int | None, served_as: str, name: str, version: int | None
) -> tuple[bytes, int | None]:
    """An inference answer from Triton's model ``served_as``, renamed to the deployment
    ``name`` and, when known, the registered ``version``; the new length of its JSON part.

    Triton writes the request's ``id`` (if any), ``model_name`` and ``model_version``
    first (``{"id":"7","model_name":"...","model_version":"1",...``, no spaces), so
    only that prefix is rewritten and the tensors, JSON or binary, are not parsed
    again. An answer that does not start so is returned as it was.
    """
    match = _ANSWER_PREFIX.match(payload, 0, 1024)
    if match is None or match.group(2) != json.dumps(served_as).encode():
        return payload, header_length
    shown = json.dumps(str(version)).encode() if version is not None else match.group(3)
    prefix = (
        b"{"
        + match.group(1)
        + b'"model_name":'
        + json.dumps(name).encode()
        + b',"model_version":'
        + shown
    )
    renamed = b"".join((prefix, memoryview(payload)[match.end() :]))  # one copy, not two
    if header_length is None:
        return renamed, None
    return renamed, header_length + len(prefix) - match.end()


def reshape_tensors(
    body: bytes,
    header_length: int | None,
    key: str,
    names: frozenset[str],
    before: list[int],
    after: list[int],
) -> tuple[bytes, int | None]:
    """The body with the tensors of ``key`` ("inputs" or "outputs") named in ``names``
    whose shape is ``before`` declared as ``after`` (same element count: only the
    declaration changes, binary data stays as it is); the new length of the JSON part.

    Why: Triton cannot hold a rank-0 tensor (its ``dims`` need one axis), so a scalar
    travels inside as ``[1]``; at the gateway it keeps the model's own shape ``[]``,
    both ways. A body that cannot be read, or has nothing to change, is returned as
    it was (the replica answers what is wrong with it).
    """
    if header_length == 0:
        return body, header_length
    split = len(body) if header_length is None else header_length
    try:
        document = json.loads(body[:split])
        tensors = document.get(key) if isinstance(document, dict) else None
    except (ValueError, UnicodeDecodeError):
        return body, header_length
    changed = False
    for tensor in tensors if isinstance(tensors, list) else []:
        named = isinstance(tensor, dict) and tensor.get("name") in names
        if named and tensor.get("shape") == before:
            tensor["shape"] = list(after)
            changed = True
    if not changed:
        return body, header_length
    head = json.dumps(document, separators=(",", ":")).encode()
    return head + body[split:], None if header_length is None else len(head)
