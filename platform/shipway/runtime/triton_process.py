"""One supervised ``tritonserver`` process on free loopback ports.

The server runs in its own session (a Ctrl-C to Shipway reaches Shipway, which stops
it, not Triton first) and dies with the process that started it (``spawn``: SIGKILL
on the starter's death). Its Python-backend stubs live in its process group; when the
server dies they notice on their own ("Non-graceful termination detected"), free
their shared memory and exit within a couple of seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from shipway.errors import Unavailable
from shipway.runtime.processes import Ledger, ProcessId, spawn
from shipway.runtime.triton_distribution import TritonDistribution

# What the Python-backend model (builds/triton_models/served_model.py) writes
# before a failure it reports in the server's log.
MODEL_ERROR_MARK = "shipway model error:"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TritonProcess:
    def __init__(
        self,
        dist: TritonDistribution,
        model_repository: Path,
        log_path: Path,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self.dist = dist
        self.model_repository = model_repository
        self.log_path = log_path
        self.host = host
        self.extra_args = extra_args
        self.http_port = 0
        self.metrics_port = 0
        self.ledger = ledger  # where the running server is recorded, if anywhere
        self._proc: subprocess.Popen[bytes] | None = None
        self._terminating = False
        self.extra_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self, reuse_ports: bool = False, extra_env: dict[str, str] | None = None) -> None:
        """Start the server; a restart may keep its ports so that its address stays."""
        if extra_env is not None:
            self.extra_env = extra_env
        self.dist.check()
        if not (reuse_ports and self.http_port):
            self.http_port, self.metrics_port = free_port(self.host), free_port(self.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = self.command()
        with self.log_path.open("ab") as log:
            self._proc = spawn(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # a Ctrl-C to Shipway reaches us, not Triton first
            )
        self._terminating = False
        if self.ledger is not None:
            leader = ProcessId.of(self._proc.pid)
            if leader is not None:  # None: it died already, and its group with it
                self.ledger.add(leader, args)

    def command(self) -> list[str]:
        """The server's command line for the current ports."""
        return [
            str(self.dist.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.dist.backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            "--allow-grpc=false",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        return {**self.dist.environment(), **self.extra_env}

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ready(self, timeout: float = 2.0) -> bool:
        if not self.alive():
            return False
        try:
            url = f"{self.url}/v2/health/ready"
            return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def model_ready(self, model: str, timeout: float = 1.0) -> bool:
        if not self.alive():
            return False
        try:
            url = f"{self.url}/v2/models/{model}/ready"
            return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if not self.alive():
                code = self._proc.returncode if self._proc else "?"
                raise Unavailable(
                    f"tritonserver exited with code {code} while loading: "
                    f"{self.load_errors() or self.tail()} (log: {self.log_path})"
                )
            time.sleep(0.25)
        self.stop()
        raise Unavailable(f"tritonserver not ready after {timeout:.0f}s; log:\n{self.tail()}")

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM to its group) and return at once.

        Triton then refuses new requests, finishes the ones in flight and unloads its
        models (within its --exit-timeout-secs); ``stop`` waits for that. Sent once per
        start.
        """
        if self._proc is not None:
            self._terminate(self._proc)

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None and not self._terminating:
            self._terminating = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server and everything in its process group, within ``grace`` + 5 s.

        The group goes too when the server itself already died (killed, crashed):
        its Python-backend stubs would otherwise live on as orphans.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._terminate(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, grace))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if self.ledger is not None:
            self.ledger.remove(proc.pid)

    def load_errors(self) -> str:
        """Triton's own words on why a model did not load, without the banner around them;
        else the served model's own report of a failure before its first answer (Triton
        2.51 may die after a failed Python-backend warm-up before saying why)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        triton = [line[-600:] for line in lines if "failed to load" in line]
        model = [
            line[line.index(MODEL_ERROR_MARK) :][:600] for line in lines if MODEL_ERROR_MARK in line
        ]
        return "; ".join(triton or model)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(processes: Iterable[TritonProcess], grace: float = 10.0) -> None:
    """Stop many servers at once: all are asked together, so that the whole takes at
    most ``grace`` seconds (plus 5 s per straggler to reap), not ``grace`` per server."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.stop(deadline - time.monotonic())
