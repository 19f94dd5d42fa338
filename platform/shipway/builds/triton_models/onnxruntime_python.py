"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on CPU.

Copied as ``<model>/1/model.py`` into repositories built for the local Triton
(the ``nvidia-pytriton`` server has no onnxruntime backend), with ``shipway_served.py``
beside it (``served_model.py``: shapes, error codes, ``ERROR_MARK``, trimming — read its
docstring). It runs inside Triton's Python stub, in the Triton environment, not in
Shipway's; only the engine is opened here.
"""

import os
import sys

import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shipway_served import ServedModel  # beside this file


class TritonPythonModel(ServedModel):
    def open(self, config, here):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("SHIPWAY_ORT_THREADS", "0"))
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: a served model idles between requests, and on a
        # few shared cores the spinning threads cost ~1.4 ms of CPU a request
        # (benchmarks/serving.py: Triton's CPU per request 4.2 -> 2.8 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        return session, {i.name for i in session.get_inputs() if len(i.shape) == 0}
