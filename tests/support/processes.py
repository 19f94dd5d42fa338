"""Run Shipway's own processes (``shipway serve <role>``, ``shipway up``) for tests, and
find the processes a test session left behind.

Every process a session starts carries the session's id in ``SHIPWAY_TEST_SESSION``
(inherited down the tree, whoever the parent becomes), so the ones that outlive the
session can be found in ``/proc/<pid>/environ`` and named.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from pydantic import SecretStr

from shipway.runtime.processes import ProcessId, spawn
from shipway.settings import Settings
from tests.support.services import wait_until

SESSION_VARIABLE = "SHIPWAY_TEST_SESSION"


def mark_session() -> str:
    """A new session id, added to the environment every child inherits (space-separated:
    a pytest run inside a test keeps its parent's id too)."""
    session = uuid.uuid4().hex
    outer = os.environ.get(SESSION_VARIABLE, "").split()
    os.environ[SESSION_VARIABLE] = " ".join([*outer, session])
    return session


# multiprocessing's own helpers of this process (the build isolation starts children
# with the "spawn" context): each reads a pipe from this process and exits when it
# closes, i.e. with this process; they are not survivors
MULTIPROCESSING_HELPERS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


def marked(session: str) -> list[psutil.Process]:
    """Live processes started by the session (not this one, not zombies, not
    multiprocessing's helpers that end with this process)."""
    found = []
    for proc in psutil.process_iter(["pid", "status", "ppid"]):
        if proc.info["pid"] == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            if session not in proc.environ().get(SESSION_VARIABLE, "").split():
                continue
            command = " ".join(proc.cmdline())
            if proc.info["ppid"] == os.getpid() and any(
                helper in command for helper in MULTIPROCESSING_HELPERS
            ):
                continue
            found.append(proc)
    return found


def describe(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"pid {proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:400]}"
    return f"pid {proc.pid} (gone)"


def stop_survivors(session: str, patience: float = 10.0) -> list[str]:
    """The session's processes still alive after ``patience`` seconds (one shutting
    down as the session ends is given that long), described; then stopped."""
    deadline = time.monotonic() + patience
    while (left := marked(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = [describe(proc) for proc in left]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return described


def process_tree(pid: int) -> list[ProcessId]:
    """A process and all its descendants, each with its start time."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    return [ident for proc in procs if (ident := ProcessId.of(proc.pid)) is not None]


def wait_gone(processes: Iterable[ProcessId], timeout: float, what: str) -> None:
    """Wait until none of ``processes`` runs (a reused pid does not count as running)."""
    pending = list(processes)

    def gone() -> bool:
        pending[:] = [p for p in pending if p.alive()]
        return not pending

    try:
        wait_until(gone, timeout, what)
    except TimeoutError:
        alive = [describe(proc) for p in pending if (proc := p.process()) is not None]
        raise AssertionError(f"{what}: still running after {timeout:.0f}s: {alive}") from None


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SHIPWAY_") or k == SESSION_VARIABLE
    }
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        if isinstance(value, SecretStr):  # str() of one is its mask
            value = value.get_secret_value()
        if isinstance(value, dict):
            value = ",".join(f"{k}={getattr(v, 'value', v)}" for k, v in value.items())
        env[f"SHIPWAY_{name.upper()}"] = str(getattr(value, "value", value))
    env["SHIPWAY_HOME"] = str(settings.home)
    return env


def shipway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipway.cli.main", *args]


@contextmanager
def shipway_process(settings: Settings, *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = spawn(
            shipway_cmd(*args), env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def up_is_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{settings.resolved_api_url}/healthz", timeout=1).status_code == 200 and (
            httpx.get(f"{settings.gateway_url}/v2/health/ready", timeout=1).status_code == 200
        )
    except httpx.HTTPError:
        return False


@contextmanager
def shipway_up(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`shipway up` until healthy; on the way out Ctrl-C, and it must exit cleanly."""
    log = log_path.open("w")
    up = spawn(shipway_cmd("up"), env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: up_is_healthy(settings) or up.poll() is not None, 120, "shipway up")
        assert up.poll() is None, log_path.read_text()
        yield up
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    assert code == 0, log_path.read_text()[-3000:]
