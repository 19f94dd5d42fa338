"""No process outlives the one that started it.

Issue 12: after a test run, tritonservers of the rollouts e2e tests were still running
with parent 1. Here: a child survives the thread that started it but not its process;
the ledger reaps only what a dead starter left, never a reused pid; a SIGKILLed runtime
manager takes its replicas and their Python-backend stubs along; a restarted one stops
an orphaned replica a predecessor recorded; stopping the plane leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from shipway.runtime.processes import Ledger, ProcessId
from shipway.runtime.triton_distribution import TritonDistribution
from tests.support.builds import publish_flaky_build, register_doubler
from tests.support.plane import Plane, local_plane
from tests.support.processes import process_tree, wait_gone
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

MODELS = Path(__file__).parents[1] / "support" / "models"

# Starts `sleep` from a worker thread that ends once the child has exec'd (its
# parent-death signal armed), waits until that thread is gone in the kernel too
# (PR_SET_PDEATHSIG fires on the forking thread's exit), prints the child's pid, then
# lives until killed.
FROM_A_THREAD = """
import os, sys, threading, time
from shipway.runtime.processes import spawn
started = {}
def start():
    started["thread"] = threading.get_native_id()
    child = started["child"] = spawn(["sleep", "300"], start_new_session=True)
    while not open(f"/proc/{child.pid}/cmdline").read().startswith("sleep"):
        time.sleep(0.01)
worker = threading.Thread(target=start)
worker.start()
worker.join()
while os.path.exists(f"/proc/self/task/{started['thread']}"):
    time.sleep(0.01)
print(started["child"].pid, flush=True)
sys.stdin.read()
"""

# Leaves two recorded process groups behind, started without a parent-death signal (as
# on a platform without one), then exits: "whole" keeps its leader, "headless" lost it
# (its background member lives on in the group).
LEAVE_GROUPS = """
import json, os, subprocess, sys, time
from pathlib import Path
import psutil
from shipway.runtime.processes import Ledger, ProcessId
ledger = Ledger(Path(sys.argv[1]))
def members(pgid):
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found
def group():
    command = ["sh", "-c", "sleep 300 & exec sleep 301"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    ledger.add(ProcessId.of(proc.pid), command)
    while len(members(proc.pid)) < 2:
        time.sleep(0.01)
    return proc
whole, headless = group(), group()
headless.kill()
headless.wait()
me = ProcessId.current()
print(json.dumps({"whole": whole.pid, "headless": headless.pid, "owner": [me.pid, me.started]}))
"""

# Starts a tritonserver the way the runtime does but without a parent-death signal,
# records it in the runtime's ledger and exits: an orphaned replica, as in the issue.
ORPHAN_REPLICA = """
import json, subprocess, sys
from pathlib import Path
from shipway.runtime.processes import Ledger, ProcessId
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess, free_port
triton_home, repo, ledger_dir, log = (Path(a) for a in sys.argv[1:5])
replica = TritonProcess(TritonDistribution(triton_home), repo, log)
replica.http_port, replica.metrics_port = free_port(), free_port()
with log.open("ab") as out:
    proc = subprocess.Popen(
        replica.command(), env=replica.environment(), stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
Ledger(ledger_dir).add(ProcessId.of(proc.pid), replica.command())
print(json.dumps({"pid": proc.pid, "url": replica.url}))
"""


def python(script: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def sigkill_pending(pid: int) -> bool:
    """Whether SIGKILL was sent to the process but it has not died yet."""
    bit = 1 << (signal.SIGKILL - 1)
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                return True
    return False


def group_of(pgid: int) -> list[ProcessId]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(ProcessId(proc.pid, proc.create_time()))
        except (psutil.Error, OSError):
            pass
    return found


def commands(tree: list[ProcessId]) -> list[str]:
    names = []
    for ident in tree:
        if (proc := ident.process()) is not None:
            with contextlib.suppress(psutil.Error, IndexError):
                names.append(Path(proc.cmdline()[0]).name)
    return sorted(names)


def kill_all(processes: list[ProcessId]) -> None:
    for ident in processes:
        if (proc := ident.process()) is not None:
            proc.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_outlives_the_thread_that_started_it_and_dies_with_its_process() -> None:
    helper = python(FROM_A_THREAD, stdin=subprocess.PIPE)
    child: ProcessId | None = None
    try:
        assert helper.stdout is not None
        pid = int(helper.stdout.readline())
        child = ProcessId.of(pid)
        # The thread that forked it has ended: no SIGKILL came (none dead, none pending).
        assert child is not None and child.alive() and not sigkill_pending(pid)
        helper.kill()
        helper.wait(10)
        wait_gone([child], 15, "the child of a SIGKILLed process")
    finally:
        helper.kill()
        helper.wait(10)
        if child is not None:
            kill_all([child])


def test_the_ledger_reaps_only_groups_whose_starter_is_gone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "processes")
    helper = python(LEAVE_GROUPS, str(ledger.directory))
    out, _ = helper.communicate(timeout=60)
    assert helper.returncode == 0
    left = json.loads(out)
    dead_owner = ProcessId(*left["owner"])
    leftovers = group_of(left["whole"]) + group_of(left["headless"])
    # The sleeps of both groups are orphans now; the headless group's leader is gone.
    assert len(leftovers) == 3 and not any(p.pid == left["headless"] for p in leftovers)

    ours = subprocess.Popen(["sleep", "300"], start_new_session=True)
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    short = subprocess.Popen(["sleep", "0"], start_new_session=True)
    try:
        short_id = ProcessId.of(short.pid) or ProcessId(short.pid, 0.0)
        short.wait(10)
        unrelated_id = ProcessId.of(unrelated.pid)
        assert unrelated_id is not None
        # A live starter's group: not a leftover.
        ledger.add(ProcessId.of(ours.pid) or ProcessId(ours.pid, 0.0), ["sleep", "300"])
        # A pid reused by an unrelated process: the recorded one started earlier.
        reused = ProcessId(unrelated.pid, unrelated_id.started - 1000.0)
        ledger.add(reused, ["tritonserver"], owner=dead_owner)
        # A group that ended on its own.
        ledger.add(short_id, ["sleep", "0"], owner=dead_owner)

        reaped = ledger.reap(grace=5)

        assert sorted(r.leader.pid for r in reaped) == sorted([left["whole"], left["headless"]])
        wait_gone(leftovers, 15, "the reaped groups")
        assert ours.poll() is None and unrelated_id.alive()
        assert [r.leader.pid for r in ledger.records()] == [ours.pid]
    finally:
        kill_all(leftovers)
        for proc in (ours, unrelated):
            proc.kill()
            proc.wait(10)


# ---- the runtime manager as a process, with real tritonservers ------------------------


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, triton_dist: TritonDistribution
) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("processes") / "home"
    with local_plane(home, triton_dist.home) as plane:
        yield plane


def deploy(plane: Plane, name: str, replicas: int) -> None:
    build = publish_flaky_build(plane.container, register_doubler(plane.container, name))
    with plane.client() as client:
        client.deploy(name, build, replicas=replicas)
        client.wait_deployment(name, build, timeout=180)


def replicas_of(plane: Plane) -> list[ProcessId]:
    """The runtime manager's descendants: tritonservers and their stubs."""
    return process_tree(plane.procs["runtime"].pid)[1:]


def test_a_sigkilled_runtime_manager_takes_its_replicas_and_their_stubs_along(
    plane: Plane,
) -> None:
    deploy(plane, "killed", replicas=2)
    tree: list[ProcessId] = []

    def started() -> bool:  # each server's stub starts with its model
        tree[:] = replicas_of(plane)
        names = commands(tree)
        return names.count("tritonserver") == 2 and names.count("triton_python_backend_stub") == 2

    wait_until(started, 60, "two replicas with their stubs")
    try:
        plane.stop("runtime", kill=True)
        wait_gone(tree, 30, "the replicas of a SIGKILLed runtime manager")
    finally:
        kill_all(tree)
        plane.start("runtime")


def test_a_restarted_runtime_manager_stops_an_orphaned_replica_it_recorded(
    plane: Plane, triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(MODELS, repo)
    ledger = Ledger(plane.settings.runtime_dir / "processes")
    helper = python(
        ORPHAN_REPLICA,
        str(triton_dist.home),
        str(repo),
        str(ledger.directory),
        str(tmp_path / "t.log"),
    )
    out, _ = helper.communicate(timeout=60)
    assert helper.returncode == 0
    orphan = json.loads(out)
    group: list[ProcessId] = []
    try:

        def serving() -> bool:
            group[:] = group_of(orphan["pid"])
            try:
                ready = httpx.get(f"{orphan['url']}/v2/models/flaky/ready", timeout=1)
            except httpx.HTTPError:
                return False
            return ready.status_code == 200 and len(group) == 2

        wait_until(serving, 60, "the orphaned replica to serve")
        assert commands(group) == ["triton_python_backend_stub", "tritonserver"]
        assert psutil.Process(orphan["pid"]).ppid() != helper.pid  # its starter is gone

        plane.stop("runtime")
        plane.start("runtime")
        wait_gone(group, 60, "the orphaned replica after a runtime manager restart")
        wait_until(
            lambda: all(r.leader.pid != orphan["pid"] for r in ledger.records()),
            10,
            "its record to go",
        )
        assert "left behind" in plane.log("runtime")
    finally:
        kill_all(group)


def test_stopping_the_plane_leaves_no_process_behind(
    tmp_path: Path, triton_dist: TritonDistribution
) -> None:
    with local_plane(tmp_path / "home", triton_dist.home) as plane:
        deploy(plane, "first", replicas=2)
        deploy(plane, "second", replicas=1)
        trees = {role: process_tree(proc.pid) for role, proc in plane.procs.items()}
        assert commands(trees["runtime"]).count("tritonserver") == 3
        everything = [p for tree in trees.values() for p in tree]
        try:
            codes = plane.stop_all()
            # Each role shut down on its own on SIGTERM, none had to be SIGKILLed: the
            # runtime manager, having stopped its replicas, with 0 (uvicorn re-raises the
            # SIGTERM once it has shut down: -15).
            assert codes["runtime"] == 0 and -signal.SIGKILL not in codes.values(), codes
            wait_gone(everything, 30, "the plane's processes")
        finally:
            kill_all(everything)
