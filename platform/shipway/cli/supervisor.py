"""``shipway up``: API, build worker, runtime manager and gateway as child processes.

Children are plain ``shipway serve <role>`` processes with logs under
``$SHIPWAY_HOME/logs``. If one dies, the supervisor stops the rest and says which;
on Ctrl-C or SIGTERM it stops them all, each given time to drain. Should the
supervisor itself be killed, its children die with it (``processes.spawn``), and the
runtime manager's replicas with the runtime manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shipway.container import Container
from shipway.runtime.processes import spawn
from shipway.settings import Settings
from shipway.store.db import migrate

ROLES = ("api", "worker", "runtime", "gateway")


class SupervisorError(Exception):
    pass


@dataclass
class Supervisor:
    settings: Settings
    roles: tuple[str, ...] = ROLES
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "logs"

    def start(self, timeout: float = 120.0) -> None:
        self.settings.ensure_home()
        # Schema work happens once, here, before the children would race to do it.
        migrate(self.settings.resolved_database_url)
        container = Container(self.settings, run_migrations=False)
        container.registry.initialize()
        container.close()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Children read the same settings: hand over the resolved home explicitly.
        env["SHIPWAY_HOME"] = str(self.settings.home)
        for role in self.roles:
            log = (self.log_dir / f"{role}.log").open("ab")
            self.children[role] = spawn(
                [sys.executable, "-m", "shipway.cli.main", "serve", role, "--no-migrate"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            log.close()
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        checks = {
            "api": f"{self.settings.resolved_api_url}/healthz",
            "gateway": f"{self.settings.gateway_url}/v2/health/ready",
        }
        deadline = time.monotonic() + timeout
        pending = {role: url for role, url in checks.items() if role in self.children}
        while pending:
            self.check_children()
            for role, url in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                        del pending[role]
            if time.monotonic() > deadline:
                raise SupervisorError(f"{', '.join(pending)} not healthy after {timeout:.0f}s")
            time.sleep(0.2)

    def check_children(self) -> None:
        for role, proc in self.children.items():
            if proc.poll() is not None:
                raise SupervisorError(
                    f"{role} exited with code {proc.returncode}; "
                    f"see {self.log_dir / (role + '.log')}:\n" + self.tail(role)
                )

    def tail(self, role: str, lines: int = 15) -> str:
        path = self.log_dir / f"{role}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 20.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.children.clear()

    def wait(self) -> None:
        """Block until a signal arrives or a child dies; then stop everything."""
        stopping = {"signal": False}

        def on_signal(signum: int, _frame: object) -> None:
            stopping["signal"] = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stopping["signal"]:
                self.check_children()
                time.sleep(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
