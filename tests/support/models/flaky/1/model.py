"""A Triton Python-backend test model that doubles its input, and fails on demand.

While the file named by the environment variable FLAKY_FAIL_FLAG exists, every request
is answered with an error (HTTP 500): the fault is in the served model, as it would be
in production, not in a switch inside the gateway.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.flag = os.environ.get("FLAKY_FAIL_FLAG", "")

    def execute(self, requests):
        responses = []
        failing = bool(self.flag) and os.path.exists(self.flag)
        for request in requests:
            if failing:
                error = pb_utils.TritonError("injected failure")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
