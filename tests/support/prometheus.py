"""A real Prometheus for tests: Debian's ``prometheus`` (``/usr/bin/prometheus``, or
``SHIPWAY_TEST_PROMETHEUS`` naming another binary), on a free loopback port, its TSDB in
a temporary directory, scraping the targets a test gives every second.

The ``prometheus`` fixture (registered in tests/conftest.py) starts one per call,
``server = prometheus([Target("shipway-gateway", "127.0.0.1:PORT")])``; a test then waits
for the scrape it needs (``server.wait_scraped(job)``), never sleeps. Each is started with
``shipway.runtime.processes.spawn`` (killed if the test process dies) and stopped, and
waited for, after the test. Missing binary: the test is skipped naming the package
(a failure under CI or ``SHIPWAY_REQUIRE_SERVICES=1``, as for the other services).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shipway.runtime.processes import spawn
from tests.support.services import free_port, unavailable

SCRAPE_INTERVAL = 1.0  # seconds
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    """One scrape job of one ``host:port`` (``/metrics``), with extra target labels."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def binary() -> str:
    """The prometheus binary, or the test is skipped (failed under CI)."""
    found = os.environ.get("SHIPWAY_TEST_PROMETHEUS") or shutil.which("prometheus")
    if not found or not Path(found).is_file():
        unavailable("Prometheus", "install it with `apt-get install prometheus`")
    return str(found)


def config(targets: Sequence[Target]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": t.job,
                "static_configs": [{"targets": [t.address], "labels": dict(t.labels)}],
            }
            for t in targets
        ],
    }


class PrometheusServer:
    """One running Prometheus; ``url`` is its base URL."""

    def __init__(self, workdir: Path, targets: Sequence[Target]) -> None:
        self.workdir = workdir
        self.config_file = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=5, trust_env=False)
        self._write(targets)
        with self.log.open("ab") as out:
            self.process = spawn(
                [
                    binary(),
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",  # POST /-/reload: new targets
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait(self._ready, STARTUP_TIMEOUT, "Prometheus ready (/-/ready)")
        except BaseException:
            self.stop()
            raise

    def _write(self, targets: Sequence[Target]) -> None:
        self.config_file.write_text(yaml.safe_dump(config(targets)))

    def _ready(self) -> bool:
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``check`` until truthy; fail at once, with its log, if Prometheus exited."""
        deadline = time.monotonic() + timeout
        while True:
            if (code := self.process.poll()) is not None:
                raise RuntimeError(
                    f"prometheus exited with code {code} while waiting for {what}; "
                    f"{self.log}:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            if result := check():
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            time.sleep(0.1)

    def scrape(self, targets: Sequence[Target]) -> None:
        """Scrape these targets from now on (config rewritten, ``POST /-/reload``)."""
        self._write(targets)
        response = self.client.post("/-/reload")
        assert response.status_code == 200, response.text

    def targets(self, job: str) -> list[dict[str, Any]]:
        """The active targets of ``job`` as ``/api/v1/targets`` reports them."""
        body = self.client.get("/api/v1/targets", params={"state": "active"}).json()
        return [t for t in body["data"]["activeTargets"] if t["labels"].get("job") == job]

    def last_scrape(self, job: str, health: str = "up") -> float | None:
        """When the last scrape of ``job`` started (seconds since the epoch), if every
        target of it is in ``health`` (``up``/``down``); else None."""
        found = self.targets(job)
        if not found or any(t["health"] != health for t in found):
            return None
        return min(_epoch(t["lastScrape"]) for t in found)

    def wait_scraped(
        self, job: str, after: float | None = None, timeout: float = 30.0, health: str = "up"
    ) -> float:
        """Wait until every target of ``job`` has been scraped, with ``health``, and its
        samples are queryable, all by a scrape that started at or after ``after`` (time.time();
        default: now). A target's ``lastScrape`` may be reported before that scrape's
        samples are committed, so this waits for the scrape after it (one target's scrapes
        never overlap): returns when the next one started."""
        since = time.time() if after is None else after
        return float(
            self._wait(
                lambda: (
                    (t := self.last_scrape(job, health)) is not None
                    and t >= since + SCRAPE_INTERVAL
                    and t
                ),
                timeout,
                f"a scrape of {job!r} ({health}) started after {since:.3f} + one interval",
            )
        )

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _epoch(rfc3339: str) -> float:
    """``lastScrape`` (RFC 3339, to the nanosecond) as seconds since the epoch."""
    if rfc3339.startswith("0001-"):  # Go's zero time: never scraped
        return 0.0
    micro = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)  # datetime keeps microseconds
    return datetime.fromisoformat(micro.replace("Z", "+00:00")).timestamp()


@contextmanager
def prometheus_server(workdir: Path, targets: Sequence[Target]) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, targets)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Sequence[Target]], PrometheusServer]]:
    """Start a Prometheus scraping the given targets (``prometheus([Target(...)])``);
    each one started is stopped after the test."""
    started: list[PrometheusServer] = []

    def start(targets: Sequence[Target]) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
