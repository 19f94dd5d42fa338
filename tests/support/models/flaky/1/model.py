"""A Triton Python-backend test model that doubles its input, and misbehaves on demand.

Two kinds of fault, both in the served model as they would be in production, never a
switch inside the gateway:
- while the file named by the environment variable FLAKY_FAIL_FLAG exists, every
  request is answered with an error (HTTP 500);
- the model config's parameters ``fail_share`` (share of requests answered with an
  error) and ``sleep_ms`` / ``sleep_share`` (added latency on a share of requests) make
  a build that is bad from its first request: a candidate to roll back.
"""

import json
import os
import random
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config, name, default):
    value = config.get("parameters", {}).get(name, {}).get("string_value")
    return float(value) if value not in (None, "") else default


class TritonPythonModel:
    def initialize(self, args):
        self.flag = os.environ.get("FLAKY_FAIL_FLAG", "")
        config = json.loads(args["model_config"])
        self.fail_share = _parameter(config, "fail_share", 0.0)
        self.sleep_s = _parameter(config, "sleep_ms", 0.0) / 1000
        self.sleep_share = _parameter(config, "sleep_share", 1.0)
        self.rng = random.Random()

    def execute(self, requests):
        responses = []
        failing = bool(self.flag) and os.path.exists(self.flag)
        for request in requests:
            if self.sleep_s and self.rng.random() < self.sleep_share:
                time.sleep(self.sleep_s)
            if failing or (self.fail_share and self.rng.random() < self.fail_share):
                error = pb_utils.TritonError("injected failure")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
