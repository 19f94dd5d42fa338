"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on CPU.

Copied as ``<model>/1/model.py`` into repositories built for the local Triton
(the ``nvidia-pytriton`` server has no onnxruntime backend). It runs inside
Triton's Python stub, in the Triton environment, not in Shipway's.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


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

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {
                    name: _feed(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                    for name in self.input_names
                }
                outputs = self.session.run(self.output_names, feeds)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in zip(self.output_names, outputs, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
