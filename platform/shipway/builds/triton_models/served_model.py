"""What every local Python-backend model of a build shares, whatever runs the engine.

Copied as ``shipway_served.py`` beside ``model.py`` (``onnxruntime_python.py`` runs an
ONNX file with ONNX Runtime, ``openvino_python.py`` an IR with OpenVINO); both import it
from their own folder and only open their engine (``ServedModel.open``). It runs inside
Triton's Python stub, in the Triton environment, never with Shipway.

It serves what ``config.pbtxt`` declares (``shipway.builds.triton_config``): Triton
has no rank-0 tensors on the wire, so a rank-0 model input arrives as ``[1]`` and is
given to the engine as the scalar it is, and a rank-0 output is answered as ``[1]``.
Every other tensor passes in the shape it came, batch axis included.

A failure before the model's first answer — the warm-up's, which fails the load — is
also written to stderr, which is the server's log, after ``ERROR_MARK``: Triton 2.51
often dies (SIGSEGV) after a failed Python-backend warm-up before logging why, and
``TritonProcess.load_errors`` then reads the reason from this line. Later failures
go to their clients only.

A request the model fails on once it has answered — its warm-up ran on the reference
sample, so the model itself works — is the request's doing (a size the graph cannot
broadcast, an index beyond a table): Triton's INVALID_ARG, HTTP 400, so the client is
told and the replica is not counted as failing (ejection, a rollout's error rate).
Only the runtime running out of memory, or a failure before any answer, is INTERNAL
(HTTP 500). Token ids past their table (``shipway_index_bounds``: input -> table size,
for engines whose runtime does not refuse them itself) are refused before the run.

**Trimming padding.** When ``config.pbtxt`` carries the ``shipway_trim`` parameter
(JSON: the mask input, the sequence inputs, the token-level outputs, the length
buckets; written by ``shipway.builds.triton_config`` for a model with a mask input),
the requests of one ``execute`` are grouped by length bucket, each group runs once
trimmed to its longest real row, and each request is answered in its own shape, token
outputs zero where its mask is zero (``shipway_padding.py``, copied beside this file
only in that case, says how and why). Triton's dynamic batcher may then hand over
requests of different lengths together (``allow_ragged_batch`` on the sequence inputs).
A request with no real position at all (its mask all zeros) is refused (INVALID_ARG):
there is nothing to trim to. A *row* with no real position inside a request that has
some runs at the group's length, so its outputs (pooled ones too) depend on that length,
as an untrimmed row with no real token depends on the length it was padded to. Each
request gets its own answer or its own error, whatever happens to the others. Without
the parameter every request runs alone, as it came.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

ERROR_MARK = "shipway model error:"  # as shipway.runtime.triton_process.MODEL_ERROR_MARK


def _error(exc, answered):
    """The Triton error for an exception of ``execute`` (see the module docstring)."""
    message = str(exc)
    resources = isinstance(exc, MemoryError) or "allocate" in message.lower()
    code = (
        pb_utils.TritonError.INVALID_ARG
        if answered and not resources
        else pb_utils.TritonError.INTERNAL
    )
    return pb_utils.TritonError(message, code)


def _feed(value):
    """BYTES arrive as objects of ``bytes``; the runtimes' string tensors take ``str``
    (ONNX Runtime would feed ``str(b"x")``, i.e. "b'x'", otherwise)."""
    if value.dtype != np.object_:
        return value
    decoded = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.ravel()]
    return np.array(decoded, dtype=object).reshape(value.shape)


def _padding():
    """``shipway_padding.py``, copied beside this file for a trimmed model only."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import shipway_padding

    return shipway_padding


class Trim:
    """The ``shipway_trim`` parameter: which inputs and outputs carry the sequence axis."""

    def __init__(self, text, padding):
        data = json.loads(text)
        self.mask = data["mask"]
        self.sequence_inputs = frozenset(data["sequence_inputs"])
        self.token_outputs = frozenset(data["token_outputs"])
        self.buckets = padding.check_buckets(data["buckets"])
        self.padding = padding


class RequestError(Exception):
    """A request that cannot be run as it is; its client's error (INVALID_ARG)."""


class ServedModel:
    """Triton's ``TritonPythonModel`` minus the engine: a subclass's ``open`` returns the
    engine (``run(output_names, feeds) -> list of arrays``) and its rank-0 input names."""

    def open(self, config, here):
        raise NotImplementedError

    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        self.session, self.scalars = self.open(config, here)
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.name = args["model_name"]
        self.answered = False
        parameters = config.get("parameters") or {}
        bounds = parameters.get("shipway_index_bounds")
        self.bounds = json.loads(bounds["string_value"]) if bounds else {}
        trim = parameters.get("shipway_trim")
        self.trim = Trim(trim["string_value"], _padding()) if trim else None

    def _inputs(self, request):
        feeds = {}
        for name in self.input_names:
            value = _feed(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            size = self.bounds.get(name)
            if size is not None and value.size and (value.max() >= size or value.min() < -size):
                bad = value.max() if value.max() >= size else value.min()
                raise RequestError(
                    f"input {name!r}: index {bad} is out of range [{-size}, {size - 1}] "
                    f"(it looks up a table of {size} rows)"
                )
            feeds[name] = value.reshape(()) if name in self.scalars else value
        return feeds

    def _respond(self, outputs):
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(value.reshape(value.shape or (1,))))
            for name, value in zip(self.output_names, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _failed(self, exc):
        if not self.answered:
            message = " ".join(str(exc).split())  # one line
            print(f"{ERROR_MARK} {self.name}: {message}", file=sys.stderr, flush=True)
        if isinstance(exc, RequestError):
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
        else:
            error = _error(exc, self.answered)
        return pb_utils.InferenceResponse(error=error)

    def execute(self, requests):
        if self.trim is not None:
            return self._execute_trimmed(requests)
        responses = []
        for request in requests:
            try:
                outputs = self.session.run(self.output_names, self._inputs(request))
                responses.append(self._respond(outputs))
                self.answered = True
            except Exception as exc:
                responses.append(self._failed(exc))
        return responses

    def _execute_trimmed(self, requests):
        """Group the requests by length bucket, run each group once at its longest real
        row, answer each request in its own shape (see the module docstring)."""
        trim = self.trim
        padding = trim.padding
        responses = [None] * len(requests)
        feeds, keys = {}, {}
        for index, request in enumerate(requests):
            try:
                inputs = self._inputs(request)
                mask = inputs[trim.mask]
                sizes = {name: inputs[name].shape[1] for name in trim.sequence_inputs}
                if len(set(sizes.values())) > 1:
                    raise RequestError(
                        "inputs disagree on the sequence length (axis 1): "
                        + ", ".join(f"{name} has {size}" for name, size in sorted(sizes.items()))
                    )
                lengths = padding.real_lengths(mask)
                longest = int(lengths.max()) if lengths.size else 0
                if longest == 0:
                    raise RequestError(
                        f"the mask input {trim.mask!r} has no real position (all zeros): "
                        "there is no token to run the model on"
                    )
                feeds[index] = (inputs, longest)
                keys[index] = padding.group_key(longest, inputs, trim.sequence_inputs, trim.buckets)
            except Exception as exc:
                responses[index] = self._failed(exc)
        indices = list(keys)
        for members in padding.group([keys[i] for i in indices]):
            try:
                self._run_group([indices[m] for m in members], feeds, responses)
            except Exception as exc:  # never one error for requests already answered
                for m in members:
                    if responses[indices[m]] is None:
                        responses[indices[m]] = self._failed(exc)
        return responses

    def _run_group(self, members, feeds, responses):
        """Run the requests ``members`` stacked, at their longest real row. When the run
        fails, each request runs alone, so one request the model cannot run (an id past
        its vocabulary) fails alone, as it would without trimming."""
        trim = self.trim
        padding = trim.padding
        try:
            length = max(feeds[i][1] for i in members)  # >= 1: all-masked requests refused
            stacked = {}
            for name in self.input_names:
                parts = [feeds[i][0][name] for i in members]
                if name in trim.sequence_inputs:
                    parts = [padding.fit(part, length) for part in parts]
                stacked[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            outputs = self.session.run(self.output_names, stacked)
        except Exception as exc:
            if len(members) > 1:
                for i in members:
                    self._run_group([i], feeds, responses)
                return
            responses[members[0]] = self._failed(exc)
            return
        self.answered = True  # the model ran: what fails now is the request's
        rows = [feeds[i][0][trim.mask].shape[0] for i in members]
        split = [padding.split_rows(value, rows) for value in outputs]
        for position, i in enumerate(members):
            try:
                mask = feeds[i][0][trim.mask]
                answer = [
                    padding.restore(parts[position], mask)
                    if name in trim.token_outputs
                    else parts[position]
                    for name, parts in zip(self.output_names, split, strict=True)
                ]
                responses[i] = self._respond(answer)
            except Exception as exc:
                responses[i] = self._failed(exc)
