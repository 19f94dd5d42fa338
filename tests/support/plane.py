"""Shipway's control plane as separate processes (API with its rollout controller,
runtime manager, gateway), so a test can kill one and start it again.

Each role dies with the test process (``processes.spawn``) and the runtime manager's
replicas with the runtime manager, so no process outlives the plane.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from shipway.cli.client import ApiClient
from shipway.container import Container
from shipway.runtime.processes import spawn
from shipway.settings import Settings
from shipway.store.db import migrate
from tests.support.processes import settings_env, shipway_cmd
from tests.support.services import free_port, wait_until

ROLES = ("api", "runtime", "gateway")
# Long enough for the runtime manager's SIGTERM shutdown on a loaded machine: the
# reconcile pass under way, then all replicas stopped together, 10 s grace each.
STOP_GRACE = 60.0


@dataclass
class Plane:
    settings: Settings
    logs: Path
    container: Container
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, role: str) -> None:
        with (self.logs / f"{role}.log").open("ab") as log:
            self.procs[role] = spawn(
                shipway_cmd("serve", role, "--no-migrate"),
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = {
            "api": f"{self.settings.resolved_api_url}/healthz",
            "gateway": f"{self.settings.gateway_url}/v2/health/ready",
        }.get(role)
        if url:
            wait_until(lambda: self._healthy(role, url), 60, f"{role} to serve")

    def _healthy(self, role: str, url: str) -> bool:
        if self.procs[role].poll() is not None:
            raise AssertionError(f"{role} exited:\n" + self.log(role)[-3000:])
        try:
            return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, role: str, kill: bool = False) -> None:
        proc = self.procs.pop(role)
        _stop({role: proc}, signal.SIGKILL if kill else signal.SIGTERM)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to every role at once, SIGKILL to any still running after
        ``STOP_GRACE``; the exit codes (-9: killed)."""
        procs, self.procs = dict(self.procs), {}
        return _stop(procs, signal.SIGTERM)

    def log(self, role: str) -> str:
        return (self.logs / f"{role}.log").read_text(errors="replace")

    def client(self) -> ApiClient:
        return ApiClient(self.settings.resolved_api_url, self.settings.token)

    def deploy(self, name: str, build_id: str) -> dict[str, Any]:
        with self.client() as client:
            client.deploy(name, build_id)
            return client.wait_deployment(name, build_id, timeout=120)


def _stop(procs: dict[str, subprocess.Popen[bytes]], sig: signal.Signals) -> dict[str, int]:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # its replicas die with it (PR_SET_PDEATHSIG)
            proc.wait(5)
    return {role: proc.returncode for role, proc in procs.items()}


def stamp(iso: str) -> float:
    """An API timestamp (ISO 8601) as seconds since the epoch."""
    return datetime.fromisoformat(iso).timestamp()


@contextmanager
def local_plane(home: Path, triton_home: Path, **overrides: Any) -> Iterator[Plane]:
    values: dict[str, Any] = {
        "api_port": free_port(),
        "gateway_port": free_port(),
        "drift_check_seconds": 0,
        "sample_rate": 0.0,
        "rollout_tick_seconds": 0.2,
    }
    settings = Settings(home=home, triton_home=triton_home, **{**values, **overrides})
    settings.ensure_home()
    migrate(settings.resolved_database_url)
    container = Container(settings, run_migrations=False)
    container.registry.initialize()
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    plane = Plane(settings, logs, container)
    with ExitStack() as stack:
        stack.callback(container.close)
        stack.callback(plane.stop_all)
        for role in ROLES:
            plane.start(role)
        yield plane
