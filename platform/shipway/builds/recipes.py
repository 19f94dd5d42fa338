"""Build recipes (numeric precision), targets (where the engine runs), and options."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from shipway.engines.calibration import CalibrationMethod, parse_method
from shipway.errors import BuildFailed, InvalidInput


class Recipe(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static: calibrated Q/DQ
    INT8_DYNAMIC = "int8-dynamic"  # weights offline, activations at run time
    BF16 = "bf16"  # OpenVINO's bfloat16 inference precision, where the CPU has it


class Target(StrEnum):
    ONNXRUNTIME_CPU = "onnxruntime-cpu"
    TENSORRT = "tensorrt"
    OPENVINO_CPU = "openvino-cpu"


# Pairs with a build path. The others are refused up front, with the reason, rather
# than queued to fail later.
AVAILABLE: frozenset[tuple[Recipe, Target]] = frozenset(
    {
        (Recipe.FP32, Target.ONNXRUNTIME_CPU),
        (Recipe.INT8, Target.ONNXRUNTIME_CPU),
        (Recipe.INT8_DYNAMIC, Target.ONNXRUNTIME_CPU),
        (Recipe.FP16, Target.TENSORRT),
        (Recipe.INT8, Target.TENSORRT),
        (Recipe.FP32, Target.OPENVINO_CPU),
        (Recipe.INT8, Target.OPENVINO_CPU),
        (Recipe.BF16, Target.OPENVINO_CPU),
    }
)
WHY_NOT = {
    (Recipe.FP16, Target.ONNXRUNTIME_CPU): "ONNX Runtime has no fast float16 kernels on CPU; "
    "use int8 or int8-dynamic there, or fp16 on tensorrt",
    (Recipe.INT8_DYNAMIC, Target.TENSORRT): "TensorRT quantizes explicitly from Q/DQ scales "
    "only; use int8 (calibrated) on tensorrt",
    (Recipe.FP32, Target.TENSORRT): "a float32 TensorRT engine gains little over "
    "onnxruntime-cpu's fp32 build here; use fp16 or int8 on tensorrt",
    (Recipe.INT8_DYNAMIC, Target.OPENVINO_CPU): "OpenVINO quantizes from calibrated "
    "ranges (NNCF post-training quantization); use int8 on openvino-cpu",
    (Recipe.FP16, Target.OPENVINO_CPU): "OpenVINO's CPU plugin computes in f32 or bf16, "
    "not float16; use bf16 on openvino-cpu",
    (Recipe.BF16, Target.ONNXRUNTIME_CPU): "bf16 is OpenVINO's inference precision hint; "
    "use bf16 on openvino-cpu",
    (Recipe.BF16, Target.TENSORRT): "bf16 is OpenVINO's inference precision hint; use fp16 "
    "on tensorrt, or bf16 on openvino-cpu",
}

# OpenVINO's CPU inference precisions (``INFERENCE_PRECISION_HINT`` values).
F32, BF16_PRECISION = "f32", "bf16"


def openvino_precision(recipe: Recipe, capabilities: Iterable[str]) -> str:
    """The ``INFERENCE_PRECISION_HINT`` an openvino-cpu build compiles with, from the
    CPU's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``["FP32", "BF16", "INT8"]``).

    Always explicit: left unset, OpenVINO compiles in bf16 wherever the CPU has it, so
    an "fp32" build would silently be bf16. ``fp32``: f32. ``bf16``: bf16, refused
    (``BuildFailed``, with the reason) on a CPU without BF16 (OpenVINO would quietly
    run it in f32 instead). ``int8``: the layers NNCF left in float run in bf16 where
    the CPU has it (OpenVINO's default; what the gate judges), else f32. Pure."""
    has_bf16 = "BF16" in {str(c).upper() for c in capabilities}
    if recipe is Recipe.FP32:
        return F32
    if recipe is Recipe.BF16:
        if not has_bf16:
            found = ", ".join(capabilities) or "none"
            raise BuildFailed(
                "recipe bf16 needs a CPU with bfloat16 support (OpenVINO's CPU "
                f"OPTIMIZATION_CAPABILITIES has no BF16; it has: {found}); "
                "build fp32 or int8 on openvino-cpu here"
            )
        return BF16_PRECISION
    if recipe is Recipe.INT8:
        return BF16_PRECISION if has_bf16 else F32
    raise InvalidInput(f"recipe {recipe.value} has no openvino-cpu build")


@dataclass(frozen=True)
class BuildOptions:
    """What a user may tune per build; every field has a default that suits MiniLM."""

    calibration: CalibrationMethod = CalibrationMethod.PERCENTILE
    min_cosine: float = 0.99  # the accuracy gate: mean cosine per output, held-out rows
    max_fp32_layers: int = 4  # layers the selective search may keep in FP32
    min_top1: float = 0.99  # the gate on class scores: share of rows with the same top-1
    # every row's cosine, in the gate and in shadow; None: 1 - 2 * (1 - min_cosine)
    min_row_cosine: float | None = None
    # int8-dynamic: store the embedding tables (Gather) INT8 too; size, not speed
    quantize_embeddings: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.min_cosine <= 1.0:
            raise InvalidInput(f"min_cosine must be within (0, 1], got {self.min_cosine}")
        if self.min_row_cosine is not None and not 0.0 < self.min_row_cosine <= 1.0:
            raise InvalidInput(f"min_row_cosine must be within (0, 1], got {self.min_row_cosine}")
        if not 0.0 <= self.min_top1 <= 1.0:
            raise InvalidInput(f"min_top1 must be within [0, 1], got {self.min_top1}")
        if not 0 <= self.max_fp32_layers <= 64:
            raise InvalidInput(f"max_fp32_layers must be within 0..64, got {self.max_fp32_layers}")
        if not isinstance(self.quantize_embeddings, bool):
            raise InvalidInput(
                f"quantize_embeddings must be true or false, got {self.quantize_embeddings!r}"
            )

    def check(self, recipe: Recipe, target: Target | None = None) -> None:
        """Options that only some recipes or targets use, refused for the others
        (InvalidInput). On openvino-cpu, NNCF calibrates and quantizes by its own rules:
        a calibration method or an FP32-layer budget other than the default would be
        silently ignored there, so it is refused."""
        if self.quantize_embeddings and recipe is not Recipe.INT8_DYNAMIC:
            raise InvalidInput(
                f"quantize_embeddings applies to the int8-dynamic recipe only, not {recipe.value}"
            )
        if target is Target.OPENVINO_CPU:
            defaults = BuildOptions()
            for name in ("calibration", "max_fp32_layers"):
                if getattr(self, name) != getattr(defaults, name):
                    raise InvalidInput(
                        f"{name} applies to ONNX Runtime and TensorRT builds; openvino-cpu "
                        "quantizes with NNCF's post-training quantization (its own ranges, "
                        "no FP32-layer search)"
                    )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calibration": self.calibration.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BuildOptions:
        data = dict(data or {})
        if "calibration" in data:
            data["calibration"] = parse_method(str(data["calibration"]))
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"unknown build options: {sorted(unknown)}")
        return cls(**data)


def parse(recipe: str, target: str) -> tuple[Recipe, Target]:
    """Validate a recipe/target pair from user input, naming the choices on error."""
    try:
        parsed_recipe = Recipe(recipe)
    except ValueError:
        raise InvalidInput(
            f"unknown recipe {recipe!r}; choose one of {', '.join(r.value for r in Recipe)}"
        ) from None
    try:
        parsed_target = Target(target)
    except ValueError:
        raise InvalidInput(
            f"unknown target {target!r}; choose one of {', '.join(t.value for t in Target)}"
        ) from None
    if (parsed_recipe, parsed_target) not in AVAILABLE:
        choices = ", ".join(f"{r.value}/{t.value}" for r, t in sorted(AVAILABLE))
        reason = WHY_NOT.get((parsed_recipe, parsed_target), "not available")
        raise InvalidInput(
            f"recipe {recipe!r} for target {target!r}: {reason}; available: {choices}"
        )
    return parsed_recipe, parsed_target
