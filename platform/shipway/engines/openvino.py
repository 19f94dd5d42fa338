"""OpenVINO on CPU: read an ONNX model, quantize it with NNCF, save it as IR, run it.

The adapter at the edge of the openvino-cpu target: the decisions (which precision,
why a pair is refused) are pure, in ``shipway.builds.recipes``; this module only calls
OpenVINO and NNCF. Both come from the ``openvino`` extra (``pip install
'shipway[openvino]'``) and are imported lazily, so nothing else needs them.

``Session`` looks like an ONNX Runtime ``InferenceSession`` where the build uses one
(``get_inputs``/``get_outputs`` with ``.name``, ``run(names, feeds)``), so the
accuracy gate (``evaluate.run``), the benchmark (``benchmark.on_feeds``) and the
packaging-time trimming check run the OpenVINO engine itself, as OpenVINO runs it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shipway.errors import BuildFailed

EXTRA_HINT = "install Shipway's openvino extra: pip install 'shipway[openvino]'"
PRECISION_KEY = "INFERENCE_PRECISION_HINT"
DEVICE = "CPU"
IR_XML, IR_BIN = "model.xml", "model.bin"
# ``get_property(INFERENCE_PRECISION_HINT)`` answers an element type; its names as the
# trimming check's ``EPSILON`` knows them.
_NUMPY_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BuildFailed(
            f"the openvino-cpu target needs the {name!r} package, which is not installed "
            f"({exc}); {EXTRA_HINT}"
        ) from None


def require() -> ModuleType:
    """The ``openvino`` module, or ``BuildFailed`` naming the extra to install."""
    return _module("openvino")


def capabilities() -> list[str]:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` on this machine (e.g. FP32, BF16)."""
    ov = require()
    return [str(c) for c in ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def precision_name(hint: Any) -> str:
    """``"f32"``/``"bf16"``/... from a precision property value (an element type)."""
    text = str(hint).lower()
    named = getattr(hint, "get_type_name", None)
    if callable(named):
        text = str(named()).lower()
    for short, long in (("bf16", "bfloat16"), ("f16", "float16"), ("f32", "float32")):
        if text in (short, long) or text.endswith(f"<{short}>"):
            return short
    return text


def numpy_precision(hint: str) -> str:
    """A hint's name for ``trim_check.Tolerance`` (``float32``, ``bfloat16``, ...)."""
    return _NUMPY_NAMES.get(hint, "float32")


def read_onnx(model: Path) -> Any:
    """The ONNX file as an ``openvino.Model``; ``BuildFailed`` when OpenVINO cannot read
    or convert it (an operator it does not support, a malformed file)."""
    ov = require()
    try:
        return ov.Core().read_model(str(model))
    except Exception as exc:
        message = " ".join(str(exc).split())
        raise BuildFailed(f"OpenVINO cannot read {model.name}: {message}") from None


def quantize(model: Any, calibration: Iterable[Mapping[str, np.ndarray]], size: int) -> Any:
    """NNCF post-training quantization (model type transformer: attention's softmax
    and the like stay in float) from ``size`` calibration feeds (one per row, so every
    row counts whatever its length). Raises ``BuildFailed`` with NNCF's words."""
    nncf = _module("nncf")
    try:
        return nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=max(1, size),
        )
    except Exception as exc:
        message = " ".join(str(exc).split())
        raise BuildFailed(f"NNCF could not quantize the model: {message}") from None


def save(model: Any, xml: Path) -> Path:
    """Write ``model`` as IR (``xml`` and its ``.bin``), weights as they are (no fp16
    compression: ``save_model``'s default would halve them). The precision is not in
    the IR: OpenVINO 2026.4's ``compile_model`` ignores an IR's runtime options for
    ``INFERENCE_PRECISION_HINT`` (measured), so whoever compiles it sets the hint."""
    ov = require()
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def int8_layers(model: Any) -> int:
    """FakeQuantize (or FakeConvert) nodes NNCF inserted: 0 means nothing was quantized."""
    return sum(1 for op in model.get_ops() if op.get_type_name() in ("FakeQuantize", "FakeConvert"))


@dataclass(frozen=True)
class _Port:
    name: str
    shape: list[int | str | None]


class Session:
    """A compiled OpenVINO model with ONNX Runtime's session surface (module docstring).

    ``precision``: the ``INFERENCE_PRECISION_HINT`` to compile with (always given:
    OpenVINO's default is bf16 where the CPU has it). ``threads``: 0 for OpenVINO's
    own choice. ``output_names``: the ONNX model's output names, in its order (an
    OpenVINO output port may carry several tensor names, and ``get_any_name`` need not
    be the ONNX one); default each port's ``get_any_name``. One inference request, so
    one run at a time, as a Triton instance runs.
    """

    def __init__(
        self,
        xml: Path,
        precision: str,
        threads: int = 0,
        output_names: Sequence[str] | None = None,
    ) -> None:
        ov = require()
        config: dict[str, Any] = {PRECISION_KEY: precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            self.compiled = core.compile_model(str(xml), DEVICE, config)
        except Exception as exc:
            message = " ".join(str(exc).split())
            raise BuildFailed(f"OpenVINO cannot compile {xml.name}: {message}") from None
        self.path = xml
        self.request = self.compiled.create_infer_request()
        self._inputs = [_Port(p.get_any_name(), _shape(p)) for p in self.compiled.inputs]
        self._ports = {name: port for port in self.compiled.outputs for name in port.get_names()}
        if output_names is None:
            self._outputs = [_Port(p.get_any_name(), _shape(p)) for p in self.compiled.outputs]
        else:
            missing = [n for n in output_names if n not in self._ports]
            if missing:
                raise BuildFailed(f"OpenVINO's model has no output named {missing}")
            self._outputs = [_Port(n, _shape(self._ports[n])) for n in output_names]

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def run(self, names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs ``names`` (all when None) for ``feeds``, copied out of the
        request's buffers (the next run reuses them)."""
        results = self.request.infer({k: np.asarray(v) for k, v in feeds.items()})
        wanted = names or [p.name for p in self._outputs]
        return [np.array(results[self._ports[name]], copy=True) for name in wanted]

    def used(self) -> dict[str, Any]:
        """What OpenVINO actually compiled: the inference precision read back from the
        compiled model, its execution devices, and the CPU's capabilities."""
        out: dict[str, Any] = {
            "inference_precision": precision_name(self.compiled.get_property(PRECISION_KEY))
        }
        with contextlib.suppress(Exception):  # older releases lack the property
            out["execution_devices"] = [
                str(d) for d in self.compiled.get_property("EXECUTION_DEVICES")
            ]
        return out


def _shape(port: Any) -> list[int | str | None]:
    shape = port.get_partial_shape()
    return [int(d.get_length()) if d.is_static else None for d in shape]


def version() -> str:
    return str(require().get_version())
