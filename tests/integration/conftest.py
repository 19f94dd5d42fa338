from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.examples import minilm
from shipway.registry.signature import Signature, load_model, read_signature
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess


@dataclass
class RunningTriton:
    process: TritonProcess
    model_name: str
    signature: Signature


@pytest.fixture(scope="session")
def minilm_triton(
    triton_dist: TritonDistribution, minilm_onnx: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTriton]:
    """A real tritonserver serving the MiniLM repository exactly as a build packages it."""
    root = tmp_path_factory.mktemp("triton")
    signature = read_signature(load_model(minilm_onnx.read_bytes()))
    # with a reference sample, as every registered version has: the warm-up, and the
    # probe that tells trimming MiniLM's pooled width does not follow the length
    sample = minilm.make_inputs(2, seq_len=16, seed=0)
    package_repository(
        root / "repo", "minilm-test", minilm_onnx, signature, Target.ONNXRUNTIME_CPU,
        sample=sample,
    )  # fmt: skip
    process = TritonProcess(triton_dist, root / "repo", root / "triton.log")
    process.start()
    try:
        process.wait_ready(120)
        yield RunningTriton(process, "minilm-test", signature)
    finally:
        process.stop()
