"""Run work in a child process that can be stopped: how build time limits are enforced.

Celery enforces ``soft_time_limit`` and ``time_limit`` only in its prefork pool,
where a supervising process signals the pool process; the Shipway worker runs the
solo pool (one build at a time, in the worker's own thread), which ignores both. A
build blocked in native code (an ONNX Runtime session that never returns) would hold
the worker forever with its build ``running``. So the worker runs each build's work
in a child process and watches the clock itself:

- at the **soft limit** it sends SIGUSR1: the child raises ``TimeLimitExceeded``
  where it is — if it is running Python code — and the work can end cleanly (the
  build pipeline records the build ``failed`` with the reason and the stage);
- at the **hard limit**, or when the child has not stopped by then (in native code
  Python signal handlers cannot run), it kills the child (SIGKILL) and the caller
  records the failure;
- a child that dies otherwise (a crash, the OOM killer) is reported the same way.

The parent survives all three and takes the next build; the child's temporary files
go with it (``workdir``). Children are started with ``spawn`` (a fresh interpreter:
no inherited database connections, broker sockets or locks) and die with their
parent (Linux ``PR_SET_PDEATHSIG``), so no build outlives the worker that ran it.
The kernel sends that signal when the *thread* that started the child ends, so
``run_limited`` must be called from a thread that outlives the child: the worker's
solo pool runs tasks on its main thread (``shipway.runtime.processes`` starts
replicas from one long-lived thread for the same reason).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from shipway.errors import ShipwayError

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
PR_SET_PDEATHSIG = 1
SOFT_SIGNAL = signal.SIGUSR1


class TimeLimitExceeded(BaseException):
    """Raised inside the child at the soft time limit. A ``BaseException``, like
    ``KeyboardInterrupt``, so that library code catching ``Exception`` cannot swallow
    it on its way out."""


@dataclass(frozen=True)
class Limits:
    soft_seconds: float
    hard_seconds: float

    def __post_init__(self) -> None:
        if not 0 < self.soft_seconds <= self.hard_seconds:
            raise ValueError(
                f"time limits need 0 < soft <= hard, got soft {self.soft_seconds} "
                f"and hard {self.hard_seconds}"
            )


@dataclass(frozen=True)
class Outcome:
    """How the child ended.

    ``status``: ``finished`` (the work returned), ``error`` (it raised; ``error`` and
    ``retriable`` say what), ``soft-limit`` (it raised ``TimeLimitExceeded`` without
    handling it), ``hard-limit`` (killed at the hard limit), ``died`` (exited or was
    killed by something else; ``exit_code`` says how).
    """

    status: str
    seconds: float
    exit_code: int | None = None
    error: str | None = None
    retriable: bool = False

    def reason(self, limits: Limits) -> str:
        """The failure in words, for a build's error (empty when it finished)."""
        if self.status == "hard-limit":
            return (
                f"hard time limit of {limits.hard_seconds:g} s exceeded; "
                "the build process was killed"
            )
        if self.status == "soft-limit":
            return self.error or f"soft time limit of {limits.soft_seconds:g} s exceeded"
        if self.status == "error":
            return self.error or "the build process failed"
        if self.status == "died":
            code = self.exit_code
            how = (
                f"killed by {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exit status {code}"
            )
            return f"the build process died ({how})"
        return ""


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's atexit still stops us
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    """Send whole messages only: the soft-limit signal waits until one is written."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {SOFT_SIGNAL})
    try:
        conn.send(message)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _child(
    conn: Connection,
    work: Callable[..., None],
    args: tuple[Any, ...],
    soft_seconds: float,
    workdir: str,
    parent: int,
) -> None:
    _die_with_parent(parent)
    tempfile.tempdir = workdir  # every temporary file of the work lands here
    os.environ["TMPDIR"] = workdir

    def soft_limit(signum: int, frame: object) -> None:
        signal.signal(SOFT_SIGNAL, signal.SIG_IGN)  # once
        raise TimeLimitExceeded(f"soft time limit of {soft_seconds:g} s exceeded")

    signal.signal(SOFT_SIGNAL, soft_limit)
    code = 0
    try:
        work(lambda stage, fraction: _send(conn, ("progress", stage, fraction)), *args)
        signal.signal(SOFT_SIGNAL, signal.SIG_IGN)  # done: a late signal changes nothing
        _send(conn, ("finished",))
    except TimeLimitExceeded as exc:
        _send(conn, ("soft-limit", str(exc)))
        code = 3
    except ShipwayError as exc:
        _send(conn, ("error", str(exc), exc.retriable))
        code = 1
    except BaseException as exc:
        log.exception("the work in the child process failed")
        _send(conn, ("error", f"{type(exc).__name__}: {exc}", False))
        code = 1
    finally:
        conn.close()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    os._exit(code)  # no atexit handlers of libraries the work imported


def run_limited(
    work: Callable[..., None],
    args: tuple[Any, ...],
    limits: Limits,
    workdir: Path,
    on_progress: Progress | None = None,
) -> Outcome:
    """Run ``work(progress, *args)`` in a child process under ``limits``.

    ``work`` must be a module-level function and ``args`` picklable (``spawn``);
    ``progress(stage, fraction)`` calls in the child reach ``on_progress`` here.
    ``workdir`` is emptied, given to the child as its temporary directory, and
    removed afterwards, whatever happened.
    """
    shutil.rmtree(workdir, ignore_errors=True)  # what a killed worker left behind
    workdir.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(sender, work, args, limits.soft_seconds, str(workdir), os.getpid()),
        name="shipway-build",
        daemon=True,
    )
    started = time.monotonic()
    status, error, retriable = "died", None, False
    try:
        process.start()
        sender.close()
        soft_sent = False
        open_pipe = True
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= limits.hard_seconds:
                log.warning("killing %s at the hard time limit", process.pid)
                process.kill()
                process.join()
                status = "hard-limit"
                break
            if elapsed >= limits.soft_seconds and not soft_sent:
                log.warning("soft time limit: signalling %s", process.pid)
                os.kill(process.pid, SOFT_SIGNAL)
                soft_sent = True
            deadline = limits.hard_seconds if soft_sent else limits.soft_seconds
            handles: list[Any] = [process.sentinel, *([receiver] if open_pipe else [])]
            ready = wait(handles, timeout=max(0.0, deadline - elapsed))
            if receiver in ready:
                try:
                    message = receiver.recv()
                except (EOFError, OSError):
                    open_pipe = False  # the child closed its end (or died writing)
                    continue
                kind = message[0]
                if kind == "progress" and on_progress is not None:
                    try:
                        on_progress(message[1], message[2])
                    except Exception:  # reporting progress must not stop the build
                        log.exception("progress report failed")
                elif kind in ("finished", "soft-limit"):
                    status, error = kind, message[1] if len(message) > 1 else None
                elif kind == "error":
                    status, error, retriable = "error", message[1], message[2]
                continue
            if process.sentinel in ready:
                process.join()
                break
    finally:
        if process.is_alive():  # the parent itself was interrupted
            process.kill()
            process.join()
        receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)
    code = process.exitcode
    if status == "finished" and code != 0:
        status = "died"
    return Outcome(status, round(time.monotonic() - started, 2), code, error, retriable)
