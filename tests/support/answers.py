"""How a served token-level output is compared with ONNX Runtime run directly.

Served models with a mask input trim padding (``shipway.builds.triton_models.padding``):
their token states are the model's where the mask is 1 and zeros where it is 0, in the
request's shape. ONNX Runtime run directly gives padding positions states of their own.
"""

from __future__ import annotations

import numpy as np


def token_state_error(served: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    """Max |served - expected| over real positions; raises ``AssertionError`` when the
    shapes differ or a masked position is not zero."""
    assert served.shape == expected.shape, (served.shape, expected.shape)
    real = np.asarray(mask).astype(bool)
    assert not served[~real].any(), "masked positions must be answered as zeros"
    return float(np.max(np.abs(served[real] - expected[real])))
