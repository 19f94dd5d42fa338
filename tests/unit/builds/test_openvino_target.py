"""The openvino-cpu target's pure decisions: which precision a recipe compiles with on a
CPU of given capabilities (bf16 refused without BF16), which recipe/target pairs exist
and why the others do not, which Triton backend serves it, and the config text for
Triton's OpenVINO backend (official image) and for the local Python backend. Plus the
packaging of a real IR (written by OpenVINO from a small ``onnx.helper`` model), and
the extra: OpenVINO is imported only by openvino builds, and its absence is named."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shipway.builds.packaging import backend_for, package_repository
from shipway.builds.recipes import (
    AVAILABLE,
    WHY_NOT,
    Recipe,
    Target,
    openvino_precision,
    parse,
)
from shipway.builds.triton_config import (
    OPENVINO_PARAMETER,
    ServingOptions,
    openvino_notes,
    openvino_parameters,
    render_config,
)
from shipway.errors import BuildFailed, InvalidInput
from shipway.registry.signature import Signature, TensorSpec, load_model, read_signature
from tests.support import graphs

ROOT = Path(__file__).resolve().parents[3]
SAPPHIRE_RAPIDS = ["BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]
NO_BF16 = ["WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]

ENCODER = Signature(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ),
    outputs=(
        TensorSpec("last_hidden_state", "float32", ("batch", "seq", 8)),
        TensorSpec("pooled", "float32", ("batch", 8)),
    ),
)


@pytest.mark.parametrize(
    ("recipe", "capabilities", "expected"),
    [
        (Recipe.FP32, SAPPHIRE_RAPIDS, "f32"),  # forced: OpenVINO would pick bf16 here
        (Recipe.FP32, NO_BF16, "f32"),
        (Recipe.BF16, SAPPHIRE_RAPIDS, "bf16"),
        (Recipe.BF16, ["fp32", "bf16"], "bf16"),  # the capability's case does not matter
        (Recipe.INT8, SAPPHIRE_RAPIDS, "bf16"),
        (Recipe.INT8, NO_BF16, "f32"),
    ],
)
def test_the_precision_follows_the_recipe_and_the_cpu(
    recipe: Recipe, capabilities: list[str], expected: str
) -> None:
    assert openvino_precision(recipe, capabilities) == expected


@pytest.mark.parametrize("capabilities", [NO_BF16, []])
def test_bf16_is_refused_where_the_cpu_has_no_bfloat16(capabilities: list[str]) -> None:
    with pytest.raises(BuildFailed, match="needs a CPU with bfloat16 support") as raised:
        openvino_precision(Recipe.BF16, capabilities)
    message = str(raised.value)
    assert "OPTIMIZATION_CAPABILITIES has no BF16" in message
    assert (", ".join(capabilities) or "none") in message  # what the CPU does have


@pytest.mark.parametrize("recipe", [Recipe.INT8_DYNAMIC, Recipe.FP16])
def test_recipes_without_an_openvino_build_have_no_precision(recipe: Recipe) -> None:
    with pytest.raises(InvalidInput, match="no openvino-cpu build"):
        openvino_precision(recipe, SAPPHIRE_RAPIDS)


def test_the_openvino_pairs_and_every_missing_pair_says_why() -> None:
    assert {r for r, t in AVAILABLE if t is Target.OPENVINO_CPU} == {
        Recipe.FP32,
        Recipe.INT8,
        Recipe.BF16,
    }
    assert {t for r, t in AVAILABLE if r is Recipe.BF16} == {Target.OPENVINO_CPU}
    missing = {(r, t) for r in Recipe for t in Target} - AVAILABLE
    assert missing == set(WHY_NOT), "every pair without a build path has its reason"


@pytest.mark.parametrize(
    ("recipe", "target", "reason"),
    [
        ("int8-dynamic", "openvino-cpu", "OpenVINO quantizes from calibrated ranges"),
        ("fp16", "openvino-cpu", "computes in f32 or bf16, not float16"),
        ("bf16", "onnxruntime-cpu", "bf16 is OpenVINO's inference precision hint"),
        ("bf16", "tensorrt", "use fp16 on tensorrt, or bf16 on openvino-cpu"),
    ],
)
def test_unavailable_pairs_are_refused_with_the_reason(
    recipe: str, target: str, reason: str
) -> None:
    with pytest.raises(InvalidInput, match=reason) as raised:
        parse(recipe, target)
    assert "bf16/openvino-cpu" in str(raised.value)  # the available pairs are listed


def test_parse_accepts_the_openvino_recipes() -> None:
    for recipe in ("fp32", "int8", "bf16"):
        assert parse(recipe, "openvino-cpu") == (Recipe(recipe), Target.OPENVINO_CPU)


def test_the_backend_is_python_locally_and_openvino_in_the_official_image() -> None:
    assert backend_for(Target.OPENVINO_CPU, "python") == "python"
    assert backend_for(Target.OPENVINO_CPU, "onnxruntime") == "openvino"
    assert backend_for(Target.ONNXRUNTIME_CPU, "onnxruntime") == "onnxruntime"


def test_python_backend_parameters_carry_the_precision_hint() -> None:
    for precision in ("f32", "bf16"):
        parameters = openvino_parameters("python", precision)
        assert set(parameters) == {OPENVINO_PARAMETER}
        properties = json.loads(parameters[OPENVINO_PARAMETER])
        assert properties["INFERENCE_PRECISION_HINT"] == precision
        assert openvino_notes("python", precision) == []


def test_official_backend_config_text() -> None:
    """Triton's OpenVINO backend: ``backend: "openvino"``, CPU instances, and only the
    parameter keys its README lists (an unknown key fails the load)."""
    options = ServingOptions(max_batch_size=8)
    bf16 = render_config(
        "m-1",
        ENCODER,
        "openvino",
        options,
        parameters=openvino_parameters("openvino", "bf16"),
        notes=openvino_notes("openvino", "bf16"),
    )
    assert 'backend: "openvino"' in bf16 and "max_batch_size: 8" in bf16
    assert "kind: KIND_CPU" in bf16 and "dynamic_batching" in bf16
    assert 'parameters { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }' in bf16
    assert 'parameters { key: "HINT_BF16" value: { string_value: "YES" } }' in bf16
    assert "#" not in bf16 and "shipway_trim" not in bf16
    f32 = render_config(
        "m-1",
        ENCODER,
        "openvino",
        options,
        parameters=openvino_parameters("openvino", "f32"),
        notes=openvino_notes("openvino", "f32"),
    )
    assert "HINT_BF16" not in f32 and "PERFORMANCE_HINT" in f32
    # the one thing that backend cannot be told is said, as comments, in the config
    assert f32.splitlines()[0].startswith("# Triton's OpenVINO backend has no parameter")
    with pytest.raises(ValueError, match="does not run OpenVINO"):
        openvino_parameters("onnxruntime", "f32")


@pytest.fixture(scope="module")
def encoder_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real IR of ``graphs.tiny_encoder``, written by OpenVINO."""
    from shipway.engines import openvino

    folder = tmp_path_factory.mktemp("ir")
    (folder / "encoder.onnx").write_bytes(graphs.tiny_encoder())
    model = openvino.read_onnx(folder / "encoder.onnx")
    return openvino.save(model, folder / "model.xml")


@pytest.mark.parametrize(
    ("runtime", "backend"), [("python", "python"), ("onnxruntime", "openvino")]
)
def test_the_repository_holds_the_ir_as_each_backend_expects(
    encoder_ir: Path, tmp_path: Path, runtime: str, backend: str
) -> None:
    signature = read_signature(load_model(graphs.tiny_encoder()))
    sample = graphs.token_rows([3, 5, 8, 2], 8)
    folder = package_repository(
        tmp_path,
        "enc-1",
        encoder_ir,
        signature,
        Target.OPENVINO_CPU,
        ServingOptions(trim_padding=False),
        onnx_backend=runtime,
        sample=sample,
        openvino_precision="bf16",
    )
    files = {p.name for p in (folder / "1").iterdir()}
    config = (folder / "config.pbtxt").read_text()
    assert f'backend: "{backend}"' in config
    assert (folder / "1" / "model.bin").read_bytes() == encoder_ir.with_suffix(".bin").read_bytes()
    if backend == "python":
        assert files == {"model.xml", "model.bin", "model.py", "shipway_served.py"}
        model_py = (folder / "1" / "model.py").read_text()
        assert "import openvino as ov" in model_py and "import onnxruntime" not in model_py
        assert OPENVINO_PARAMETER in config
    else:
        assert files == {"model.xml", "model.bin"}
        assert "HINT_BF16" in config and OPENVINO_PARAMETER not in config
    assert "model_warmup" in config  # the reference row, at load time


def test_an_openvino_repository_needs_its_precision(encoder_ir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inference precision"):
        package_repository(
            tmp_path,
            "enc-1",
            encoder_ir,
            ENCODER,
            Target.OPENVINO_CPU,
            ServingOptions(trim_padding=False),
        )
    assert not (tmp_path / "enc-1" / "1" / "model.xml").exists()


def test_openvino_is_imported_only_by_openvino_builds() -> None:
    code = (
        "import sys; import shipway.builds.pipeline, shipway.builds.compile, "
        "shipway.builds.packaging; "
        "print(sorted(m for m in ('openvino', 'nncf') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_without_the_extra_the_build_names_it() -> None:
    # ``sys.modules[name] = None`` makes ``import name`` raise ImportError: openvino absent
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from shipway.engines import openvino\n"
        "try:\n    openvino.require()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.startswith("BuildFailed the openvino-cpu target needs the 'openvino'")
    assert "pip install 'shipway[openvino]'" in found.stdout


def test_the_extra_pins_openvino_and_nncf_and_make_setup_installs_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["openvino"]
    assert "openvino>=2026.0,<2027" in extra and "nncf>=3.3,<4" in extra
    assert "openvino" in (ROOT / "Makefile").read_text().split('-e ".[')[1].split("]")[0]
    script = (ROOT / "scripts" / "install-triton.sh").read_text()
    # an existing (cached) Triton pyenv gets openvino added before the early exit
    assert script.index("ensure_openvino\n") < script.index("exit 0")


def test_the_cli_report_names_the_precision_openvino_used() -> None:
    from shipway.cli.main import report_lines

    report = {
        "openvino": {
            "version": "2026.4.1",
            "inference_precision_requested": "bf16",
            "inference_precision": "bf16",
        }
    }
    assert report_lines(report) == ["openvino 2026.4.1: inference precision bf16 (requested bf16)"]
    assert report_lines({}) == []


@pytest.mark.parametrize(
    ("options", "name"),
    [({"calibration": "minmax"}, "calibration"), ({"max_fp32_layers": 2}, "max_fp32_layers")],
)
def test_options_openvino_would_ignore_are_refused(options: dict[str, object], name: str) -> None:
    from shipway.builds.recipes import BuildOptions

    parsed = BuildOptions.from_dict(options)
    with pytest.raises(InvalidInput, match=f"{name} applies to ONNX Runtime and TensorRT"):
        parsed.check(Recipe.INT8, Target.OPENVINO_CPU)
    parsed.check(Recipe.INT8, Target.ONNXRUNTIME_CPU)  # where they mean something
    BuildOptions(min_cosine=0.995).check(Recipe.INT8, Target.OPENVINO_CPU)  # the gate's own


def test_the_official_openvino_backend_trims_bf16_builds_through_the_ensemble(
    encoder_ir: Path, tmp_path: Path
) -> None:
    """The check runs the IR in OpenVINO (``open_engine``, as the pipeline passes it);
    ONNX Runtime cannot read an IR, so without it nothing is trimmed, with the reason.
    An f32 build is not trimmed there: that backend cannot be told to compute f32, so
    on a bfloat16 CPU it serves in bf16, not at the precision the check ran at."""
    from functools import partial

    from shipway.builds.ensemble import ENGINE_SUFFIX
    from shipway.builds.packaging import trim_decision
    from shipway.engines import openvino

    signature = read_signature(load_model(graphs.tiny_encoder()))
    sample = graphs.token_rows([3, 5, 8, 2], 8)
    names = [o.name for o in signature.outputs]
    args = (encoder_ir, signature, "openvino", ServingOptions(), sample, "attention_mask")

    def decide(hint: str, precision: str, open_it: bool = True):  # type: ignore[no-untyped-def]
        opener = partial(openvino.Session, encoder_ir, hint, 1, names) if open_it else None
        return trim_decision(*args, precision=precision, open_engine=opener)

    blind = decide("bf16", "bfloat16", open_it=False)
    assert not blind.trim and "cannot load the engine to check trimming" in blind.reason
    f32 = decide("f32", "float32")
    assert not f32.trim and "takes no key forcing f32" in f32.reason
    decision = decide("bf16", "bfloat16")
    assert decision.trim, decision.reason
    folder = package_repository(
        tmp_path, "enc-1", encoder_ir, signature, Target.OPENVINO_CPU, ServingOptions(),
        onnx_backend="onnxruntime", sample=sample, decision=decision, openvino_precision="bf16",
    )  # fmt: skip
    assert 'platform: "ensemble"' in (folder / "config.pbtxt").read_text()
    engine = tmp_path / f"enc-1{ENGINE_SUFFIX}"
    assert 'backend: "openvino"' in (engine / "config.pbtxt").read_text()
    assert {p.name for p in (engine / "1").iterdir()} == {"model.xml", "model.bin"}


def test_a_scalar_input_fails_the_official_openvino_package_before_anything_is_written(
    encoder_ir: Path, tmp_path: Path
) -> None:
    """Triton's OpenVINO backend does not take rank-0 inputs (its README, Known Issues);
    the local Python backend does, so only the official image's package is refused."""
    signature = Signature(
        (TensorSpec("x", "float32", ("batch", 4)), TensorSpec("scale", "float32", ())),
        (TensorSpec("y", "float32", ("batch", 4)),),
    )
    options = ServingOptions(trim_padding=False, warmup=False)
    with pytest.raises(BuildFailed, match=r"does not take scalar \(rank-0\) inputs \(\['scale'\]"):
        package_repository(
            tmp_path, "m", encoder_ir, signature, Target.OPENVINO_CPU, options,
            onnx_backend="onnxruntime", openvino_precision="f32",
        )  # fmt: skip
    assert not any(tmp_path.iterdir())
    local = package_repository(
        tmp_path, "m", encoder_ir, signature, Target.OPENVINO_CPU, options,
        openvino_precision="f32",
    )  # fmt: skip
    assert 'backend: "python"' in (local / "config.pbtxt").read_text()
