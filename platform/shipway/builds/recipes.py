"""Build recipes (numeric precision) and targets (where the engine runs)."""

from __future__ import annotations

from enum import StrEnum

from shipway.errors import InvalidInput


class Recipe(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_DYNAMIC = "int8-dynamic"


class Target(StrEnum):
    ONNXRUNTIME_CPU = "onnxruntime-cpu"
    TENSORRT = "tensorrt"


# Pairs that have a build path today. The others are planned (see the README's
# roadmap) and are refused up front rather than queued to fail later.
AVAILABLE: frozenset[tuple[Recipe, Target]] = frozenset({(Recipe.FP32, Target.ONNXRUNTIME_CPU)})


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
        raise InvalidInput(
            f"recipe {recipe!r} for target {target!r} is not available in this version; "
            f"available: {choices}"
        )
    return parsed_recipe, parsed_target
