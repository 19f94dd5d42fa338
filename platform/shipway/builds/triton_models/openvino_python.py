"""Triton Python-backend model that runs an OpenVINO IR (``model.xml``/``model.bin``) with
OpenVINO on CPU: the local Triton's way to serve an openvino-cpu build (the
``nvidia-pytriton`` server has no OpenVINO backend; the official image's backend is
configured by ``shipway.builds.triton_config.openvino_parameters``). It runs inside
Triton's Python stub, in the Triton environment (``scripts/install-triton.sh`` installs
``openvino`` there), not in Shipway's.

Everything but the runtime is shared with ``onnxruntime_python.py`` in
``shipway_served.py`` (``served_model.py``, copied beside this file; read its docstring):
the shapes ``config.pbtxt`` declares (a rank-0 input arrives as ``[1]`` and is given to
OpenVINO as the scalar it is; a rank-0 output is answered as ``[1]``), ``ERROR_MARK``
on stderr for a failure before the first answer, INVALID_ARG for a request the model
fails on after it has answered (INTERNAL for running out of memory, or before any
answer), and trimming with ``shipway_padding.py`` when the config carries
``shipway_trim`` (only where the packaging-time check ran this engine, with OpenVINO,
and found it answers padded and trimmed alike).

OpenVINO's properties come from the config's ``shipway_openvino`` parameter (JSON),
``INFERENCE_PRECISION_HINT`` always among them: the precision the build was gated with.
Left unset, OpenVINO would compile in bf16 wherever the CPU has it. One inference
request per model instance: Triton calls ``execute`` of an instance one at a time.
"""

import json
import os
import sys

import numpy as np
import openvino as ov

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shipway_served import ServedModel  # beside this file


class Engine:
    """The compiled IR with one inference request; ``run`` answers the outputs named, in
    order, copied out of the request's buffers (the next run reuses them)."""

    def __init__(self, xml, properties):
        self.compiled = ov.Core().compile_model(xml, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        self.ports = {n: p for p in self.compiled.outputs for n in p.get_names()}
        self.scalars = {
            p.get_any_name()
            for p in self.compiled.inputs
            if p.get_partial_shape().rank.is_static and p.get_partial_shape().rank.get_length() == 0
        }

    def run(self, names, feeds):
        results = self.request.infer(feeds)
        return [np.array(results[self.ports[name]], copy=True) for name in names]


class TritonPythonModel(ServedModel):
    def open(self, config, here):
        parameters = config.get("parameters") or {}
        properties = json.loads(parameters["shipway_openvino"]["string_value"])
        threads = int(os.environ.get("SHIPWAY_ORT_THREADS", "0"))
        if threads:
            properties["INFERENCE_NUM_THREADS"] = threads
        engine = Engine(os.path.join(here, "model.xml"), properties)
        return engine, engine.scalars
