"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on CPU.

Copied as ``<model>/1/model.py`` into repositories built for the local Triton
(the ``nvidia-pytriton`` server has no onnxruntime backend). It runs inside
Triton's Python stub, in the Triton environment, not in Shipway's.

It serves what ``config.pbtxt`` declares (``shipway.builds.triton_config``): Triton
has no rank-0 tensors on the wire, so a rank-0 model input arrives as ``[1]`` and is
given to ONNX Runtime as the scalar it is, and a rank-0 output is answered as ``[1]``.
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
Only ONNX Runtime running out of memory, or a failure before any answer, is INTERNAL
(HTTP 500).
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
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
    """BYTES arrive as objects of ``bytes``; ONNX Runtime's string tensors take ``str``
    (it would feed ``str(b"x")``, i.e. "b'x'", otherwise)."""
    if value.dtype != np.object_:
        return value
    decoded = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.ravel()]
    return np.array(decoded, dtype=object).reshape(value.shape)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("SHIPWAY_ORT_THREADS", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.scalars = {i.name for i in self.session.get_inputs() if len(i.shape) == 0}
        self.name = args["model_name"]
        self.answered = False

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self.input_names:
                    value = _feed(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                    feeds[name] = value.reshape(()) if name in self.scalars else value
                outputs = self.session.run(self.output_names, feeds)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value.reshape(value.shape or (1,))))
                    for name, value in zip(self.output_names, outputs, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                self.answered = True
            except Exception as exc:
                if not self.answered:
                    message = " ".join(str(exc).split())  # one line
                    print(f"{ERROR_MARK} {self.name}: {message}", file=sys.stderr, flush=True)
                responses.append(pb_utils.InferenceResponse(error=_error(exc, self.answered)))
        return responses
