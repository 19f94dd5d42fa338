"""The suite fails when a process it started outlives it (tests/conftest.py).

Each case is a pytest run in a subprocess with the suite's conftest as its plugin: a
test that leaves a process running must fail the run, naming the process, which is
then stopped; processes stopped in time (by a test, or by a session fixture's teardown), or ending
a moment after the last test, must not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipway.runtime.processes import ProcessId
from tests.support.processes import wait_gone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]

LEAVES_ONE = """
import subprocess, sys

def test_starts_a_server_and_forgets_it(tmp_path):
    # in its own session, as a daemon would be: it outlives this test run
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open("{pid_file}", "w") as out:
        out.write(str(proc.pid))
"""

CLEAN = """
import subprocess
import pytest

@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen(["sleep", "600"])  # stopped only when the session ends
    yield proc
    proc.terminate()
    proc.wait(10)

def test_uses_a_session_server(server):
    assert server.poll() is None

def test_stops_what_it_starts():
    proc = subprocess.Popen(["sleep", "600"])
    proc.terminate()
    proc.wait(10)

def test_starts_a_process_that_ends_a_moment_later():
    subprocess.Popen(["sleep", "2"], start_new_session=True)
"""


def run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(source)
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest"),
            *("-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_process_left_running_fails_the_run_and_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = run_pytest(tmp_path, LEAVES_ONE.format(pid_file=pid_file))
    output = result.stdout + result.stderr
    pid = int(pid_file.read_text())
    assert "1 passed, 1 left running" in output  # the test itself passed; the run did not
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "processes that outlived the test session" in output
    assert f"pid {pid} " in output and "sleep 600" in output
    left = ProcessId.of(pid)
    if left is not None:  # stopped by the check: gone, or a zombie about to be reaped
        wait_gone([left], 15, "the process the inner run left behind")


def test_processes_stopped_in_time_or_ending_just_after_do_not_fail_the_run(
    tmp_path: Path,
) -> None:
    result = run_pytest(tmp_path, CLEAN)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output
    assert "3 passed in" in output and "outlived" not in output
