"""Triton Python-backend step of a trimming ensemble: numpy only, for the official image.

The official Triton image serves ONNX with its ``onnxruntime`` backend, which stacks
the requests of a batch itself: it cannot trim them or group them by length. A build
served there is packaged as an ensemble (``shipway.builds.ensemble``) of three models,
and this file is the first and the last, told apart by the ``shipway_step`` parameter
(JSON ``{"role": "trim" | "restore", "buckets": [...]}``):

- ``trim``: inputs ``SEQ_0..n`` are the model's sequence inputs (``SEQ_0`` is the
  mask), outputs ``FIT_0..n`` the same tensors cut, or padded with zeros, to the
  request's **length bucket** (``shipway_padding.bucket`` of its longest real row),
  but never longer than both the length it was sent at and the longest length the
  packaging-time check ran the engine at (``checked_length``): a model with 100
  positions cannot run bucket 128, though it answers a request sent at 100.
  Requests of one bucket then have equal shapes, so the engine's dynamic batcher
  stacks them, and the engine runs on ``[rows, bucket]`` instead of the length sent.
- ``restore``: inputs ``TRIMMED_0..m`` are the engine's token-level outputs, ``MASK``
  the request's own mask; outputs ``RESTORED_0..m`` are the token outputs in the
  request's shape, zeros wherever its mask is zero (``shipway_padding.restore``), as
  the Python backend's trimmed model answers them.

A request whose mask has no real position, or whose sequence inputs disagree on their
length, is refused (INVALID_ARG, HTTP 400), as by the Python backend's trimmed model.
Each request is answered alone, whatever else came in the same ``execute``.

Copied as ``<model>__trim/1/model.py`` and ``<model>__restore/1/model.py`` with
``shipway_padding.py`` beside it; it runs in the image's Python, never with Shipway.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shipway_padding


class RequestError(Exception):
    """A request that cannot be run as it is; its client's error (INVALID_ARG)."""


def _names(config, prefix):
    return sorted(
        (t["name"] for t in config if t["name"].startswith(prefix)),
        key=lambda name: int(name.rsplit("_", 1)[1]),
    )


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        step = json.loads(config["parameters"]["shipway_step"]["string_value"])
        self.role = step["role"]
        self.buckets = shipway_padding.check_buckets(step["buckets"])
        self.mask = step["mask"]
        self.sequence = step["sequence"]  # the model's names of SEQ_0..n
        self.checked_length = int(step["checked_length"])
        if self.role == "trim":
            self.inputs = _names(config["input"], "SEQ_")
            self.outputs = _names(config["output"], "FIT_")
        elif self.role == "restore":
            self.inputs = _names(config["input"], "TRIMMED_")
            self.outputs = _names(config["output"], "RESTORED_")
        else:
            raise ValueError(f"unknown shipway_step role {self.role!r}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                arrays = self._run(request)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in zip(self.outputs, arrays, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except RequestError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _get(self, request, name):
        return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

    def _run(self, request):
        if self.role == "trim":
            values = [self._get(request, name) for name in self.inputs]
            sizes = {value.shape[1] for value in values}
            if len(sizes) > 1:
                raise RequestError(
                    "inputs disagree on the sequence length (axis 1): "
                    + ", ".join(
                        f"{name} has {value.shape[1]}"
                        for name, value in zip(self.sequence, values, strict=True)
                    )
                )
            lengths = shipway_padding.real_lengths(values[0])
            longest = int(lengths.max()) if lengths.size else 0
            if longest == 0:
                raise RequestError(
                    f"the mask input {self.mask!r} has no real position (all zeros): "
                    "there is no token to run the model on"
                )
            # padded past the length sent only up to the longest the packaging-time
            # check ran the engine at: never a length nobody has seen the model run
            sent = values[0].shape[1]
            length = min(
                shipway_padding.bucket(longest, self.buckets), max(sent, self.checked_length)
            )
            return [shipway_padding.fit(value, length) for value in values]
        mask = self._get(request, "MASK")
        return [shipway_padding.restore(self._get(request, name), mask) for name in self.inputs]
