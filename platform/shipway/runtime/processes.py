"""Child processes that die with the process that started them, and the ledger a
runtime keeps of its replicas so that a restarted one can reap what was left behind.

Two guarantees, because one is not enough:

- **Parent-death signal.** ``spawn`` arms Linux's ``PR_SET_PDEATHSIG`` in the child
  before it execs (prctl(2)): when the starter dies, even by SIGKILL, the kernel
  sends the child SIGKILL. The signal fires when the *thread* that forked the child
  ends, not the process, so every child is forked from one spawner thread that lives
  as long as the process; a replica started from a reconcile thread that is later
  stopped must not die with that thread.
- **The ledger.** A runtime records each replica's process (pid and start time) and
  its own; a runtime started on the same directory later stops every recorded process
  group whose starter is gone (a platform without ``PR_SET_PDEATHSIG``, a stray
  grandchild), checking the start time so that a reused pid is never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

PARENT_DEATH_SIGNAL = int(signal.SIGKILL)  # a child whose starter is gone has no one to stop it
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Runs in the child between fork and the real exec (instead of a ``preexec_fn``, which
# is unsafe in a threaded parent): arms the parent-death signal, gives up if the
# starter died before that (the signal would never come), restores the signals Python
# ignores at start-up (an ignored disposition survives exec), then execs the command.
_ARM_AND_EXEC = f"""\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = {PR_SET_PDEATHSIG}
starter, sig, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != starter:
    sys.exit(1)
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execvp(argv[0], argv)
"""


class _Spawner:
    """The one thread that forks children, for as long as the process lives (a daemon
    thread ends only with the process)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="shipway-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)

    def run(self, job: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return job()
        future: Future[Any] = Future()
        self._jobs.put((job, future))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _the_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():  # a forked child needs its own
            _spawner = _Spawner()
        return _spawner


def parent_death_supported() -> bool:
    return sys.platform == "linux"


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``args`` as ``subprocess.Popen(args, **popen)`` would, except that the
    child is killed (SIGKILL) when this process dies, however it dies.

    Raises ``FileNotFoundError`` in the caller, as ``Popen`` does, when the command is
    not found. Elsewhere than on Linux the child is started plainly: the ledger is
    then what catches a leftover.
    """
    argv = [str(a) for a in args]
    if not parent_death_supported():
        return _the_spawner().run(lambda: subprocess.Popen(argv, **popen))
    env = popen.get("env")
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(argv[0], path=path) is None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    wrapped = [sys.executable, "-I", "-S", "-c", _ARM_AND_EXEC]
    wrapped += [str(os.getpid()), str(PARENT_DEATH_SIGNAL), *argv]
    return _the_spawner().run(lambda: subprocess.Popen(wrapped, **popen))


# ---- the ledger ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A process as the kernel knows it: a pid alone may be reused, a pid with its
    start time (seconds since the epoch, from ``/proc/<pid>/stat``) may not."""

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    @classmethod
    def current(cls) -> ProcessId:
        return cls(os.getpid(), psutil.Process().create_time())

    def process(self) -> psutil.Process | None:
        """The live process, or ``None`` when it is gone, a zombie, or its pid reused."""
        try:
            proc = psutil.Process(self.pid)
            if proc.create_time() != self.started or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


@dataclass(frozen=True)
class Record:
    """One process group a runtime started (its leader was started in a new session,
    so the group id is the leader's pid) and the runtime that started it."""

    leader: ProcessId
    owner: ProcessId
    command: str


def group_members(record: Record) -> list[psutil.Process]:
    """The live processes of the record's group.

    While any process still belongs to a group, the kernel does not hand out its id as
    a new pid, so the members found are this group's unless the id is the pid of a
    process started after the leader (the group ended and the pid was reused).
    """
    leader = record.leader
    with contextlib.suppress(psutil.Error):
        if psutil.Process(leader.pid).create_time() != leader.started:
            return []  # reused pid: the recorded group has ended
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == leader.pid and proc.create_time() >= leader.started:
                members.append(proc)
    return members


class Ledger:
    """The process groups a runtime started, one JSON file each under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(
        self, leader: ProcessId, command: Sequence[str], owner: ProcessId | None = None
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = Record(leader, owner or ProcessId.current(), " ".join(command))
        staging = self.directory / f".{leader.pid}.json.partial"
        staging.write_text(json.dumps(asdict(record)))
        staging.replace(self._path(leader.pid))  # never a half-written record

    def remove(self, pid: int) -> None:
        self._path(pid).unlink(missing_ok=True)

    def records(self) -> list[Record]:
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                found.append(
                    Record(ProcessId(**raw["leader"]), ProcessId(**raw["owner"]), raw["command"])
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable process record %s: %s", path, exc)
                path.unlink(missing_ok=True)
        return found

    def reap(self, grace: float = 10.0) -> list[Record]:
        """Stop the recorded groups whose starter is gone; return the ones that still
        had live processes.

        SIGTERM first (a tritonserver then unloads its models and its Python-backend
        stubs free their shared memory), SIGKILL after ``grace`` seconds. Records of a
        live starter are kept: their processes are that runtime's, not leftovers.
        """
        reaped: list[Record] = []
        victims: list[psutil.Process] = []
        for record in self.records():
            if record.owner.alive():
                continue
            members = group_members(record)
            if members:
                log.warning(
                    "stopping %d process(es) left behind by runtime pid %d: %s",
                    len(members),
                    record.owner.pid,
                    record.command,
                )
                reaped.append(record)
                victims += members
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(victims, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        for record in self.records():
            if not record.owner.alive() and not group_members(record):
                self.remove(record.leader.pid)
        return reaped

    def _path(self, pid: int) -> Path:
        return self.directory / f"{pid}.json"
