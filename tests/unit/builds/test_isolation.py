"""The time limits' mechanism on real child processes: work that finishes, work that
stops at the soft limit, work that cannot be stopped and is killed at the hard limit,
work that crashes; and a child never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from shipway.builds.isolation import Limits, Outcome, TimeLimitExceeded, run_limited
from shipway.errors import Unavailable
from tests.support.services import wait_until

ROOT = Path(__file__).resolve().parents[3]


def alive(pid: int) -> bool:
    """Running or sleeping, not gone and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# The work, at module level so that a spawned child can import it.


def finish(progress, marker: str) -> None:  # type: ignore[no-untyped-def]
    progress("first", 0.5)
    with tempfile.NamedTemporaryFile(delete=False) as f:  # lands in the workdir
        Path(marker).write_text(f.name)
    progress("second", 1.0)


def sleep_in_python(progress, pid_file: str) -> None:  # type: ignore[no-untyped-def]
    Path(pid_file).write_text(str(os.getpid()))
    progress("sleeping", 0.1)
    while True:
        time.sleep(0.05)


def cleanup_on_soft_limit(progress, marker: str) -> None:  # type: ignore[no-untyped-def]
    try:
        while True:
            time.sleep(0.05)
    except TimeLimitExceeded as exc:
        Path(marker).write_text(str(exc))  # the work gets to end cleanly


def cannot_be_interrupted(progress, pid_file: str) -> None:  # type: ignore[no-untyped-def]
    # As if blocked in native code: the soft limit's signal never reaches Python.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    Path(pid_file).write_text(str(os.getpid()))
    progress("blocked", 0.2)
    time.sleep(3600)


def crash(progress) -> None:  # type: ignore[no-untyped-def]
    progress("crashing", 0.3)
    os.abort()


def dependency_down(progress) -> None:  # type: ignore[no-untyped-def]
    raise Unavailable("the model registry is not reachable")


def test_work_that_finishes_reports_progress_and_leaves_no_files(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    marker = tmp_path / "marker"
    outcome = run_limited(
        finish,
        (str(marker),),
        Limits(60, 90),
        tmp_path / "work",
        lambda stage, fraction: seen.append((stage, fraction)),
    )
    assert outcome.status == "finished" and outcome.exit_code == 0, outcome
    assert seen == [("first", 0.5), ("second", 1.0)]
    temporary = Path(marker.read_text())
    assert temporary.parent == tmp_path / "work"  # the child's temporary directory
    assert not (tmp_path / "work").exists()  # removed with everything in it
    assert outcome.reason(Limits(60, 90)) == ""


def test_the_soft_limit_stops_python_work_where_it_is(tmp_path: Path) -> None:
    limits = Limits(2, 120)
    outcome = run_limited(
        sleep_in_python, (str(tmp_path / "pid"),), limits, tmp_path / "work", None
    )
    assert outcome.status == "soft-limit", outcome
    assert outcome.seconds < 60  # well before the hard limit
    assert outcome.reason(limits) == "soft time limit of 2 s exceeded"
    assert not alive(int((tmp_path / "pid").read_text()))

    marker = tmp_path / "cleaned"
    outcome = run_limited(cleanup_on_soft_limit, (str(marker),), limits, tmp_path / "w2", None)
    assert outcome.status == "finished"  # it handled the limit and returned
    assert marker.read_text() == "soft time limit of 2 s exceeded"


def test_work_that_ignores_the_soft_limit_is_killed_at_the_hard_limit(tmp_path: Path) -> None:
    limits = Limits(1, 4)
    stages: list[str] = []
    outcome = run_limited(
        cannot_be_interrupted,
        (str(tmp_path / "pid"),),
        limits,
        tmp_path / "work",
        lambda stage, _: stages.append(stage),
    )
    assert outcome.status == "hard-limit", outcome
    assert outcome.exit_code == -signal.SIGKILL
    assert 4 <= outcome.seconds < 60
    assert stages == ["blocked"]
    assert outcome.reason(limits) == (
        "hard time limit of 4 s exceeded; the build process was killed"
    )
    assert not alive(int((tmp_path / "pid").read_text()))
    assert not (tmp_path / "work").exists()


def test_a_crash_and_an_error_are_reported_as_such(tmp_path: Path) -> None:
    limits = Limits(60, 90)
    crashed = run_limited(crash, (), limits, tmp_path / "work", None)
    assert crashed.status == "died" and crashed.exit_code == -signal.SIGABRT
    assert crashed.reason(limits) == "the build process died (killed by SIGABRT)"

    failed = run_limited(dependency_down, (), limits, tmp_path / "work", None)
    assert failed == Outcome(
        "error", failed.seconds, 1, "the model registry is not reachable", retriable=True
    )


def test_limits_must_be_in_order() -> None:
    with pytest.raises(ValueError, match="0 < soft <= hard"):
        Limits(10, 5)


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A worker killed with SIGKILL takes its build's process with it: nothing keeps
    building a build that Redis will hand to the next worker."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from shipway.builds.isolation import Limits, run_limited
        from tests.unit.builds.test_isolation import sleep_in_python
        run_limited(sleep_in_python, ({str(pid_file)!r},), Limits(600, 900),
                    Path({str(tmp_path / "work")!r}), None)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 60, "the child")
        child = int(pid_file.read_text())
        assert alive(child)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not alive(child), 10, "the child gone")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
