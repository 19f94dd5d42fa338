from __future__ import annotations

from pathlib import Path

import shipway.builds
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import MODEL_ERROR_MARK, TritonProcess

BANNER = """W1130 03:58:24.799661 31231 pinned_memory_manager.cc:273] "Unable to allocate pinned"
E1130 03:58:24.799807 31231 server.cc:241] "CudaDriverHelper has not been initialized."
I1130 03:58:24.813744 31231 model_lifecycle.cc:472] "loading: bias:1"
"""
MODEL_LINE = "shipway model error: bias: [ONNXRuntimeError] : 1 : FAIL : broadcast 3 by 4\n"
TRITON_LINE = (
    "E1130 03:58:28.238696 31231 model_lifecycle.cc:642] \"failed to load 'bias' version 1: "
    "Invalid argument: failed to run warmup sample 'reference-row': broadcast 3 by 4\"\n"
)


def errors(tmp_path: Path, log: str) -> str:
    path = tmp_path / "triton.log"
    path.write_text(log)
    return TritonProcess(TritonDistribution(tmp_path), tmp_path, path).load_errors()


def test_load_errors_are_tritons_words_when_it_said_them(tmp_path: Path) -> None:
    found = errors(tmp_path, BANNER + MODEL_LINE + TRITON_LINE)
    assert found.startswith("E1130") and "failed to run warmup sample 'reference-row'" in found
    assert MODEL_ERROR_MARK not in found


def test_load_errors_fall_back_to_the_models_line_when_triton_died_first(
    tmp_path: Path,
) -> None:
    # Triton 2.51 after a failed Python-backend warm-up: SIGSEGV, nothing more logged.
    found = errors(
        tmp_path, BANNER + "\x1b[1;31m" + MODEL_LINE + "I1130 pb_stub.cc] Non-graceful\n"
    )
    assert found == MODEL_LINE.strip()
    assert errors(tmp_path, BANNER) == ""


def test_the_served_model_writes_the_mark_the_process_reads() -> None:
    # The model runs in Triton's environment and cannot import Shipway: one literal each.
    served = Path(shipway.builds.__file__).parent / "triton_models" / "served_model.py"
    source = served.read_text()
    assert f'ERROR_MARK = "{MODEL_ERROR_MARK}"' in source
