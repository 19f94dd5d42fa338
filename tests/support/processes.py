"""Run Shipway's own processes (``shipway serve <role>``, ``shipway up``) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from shipway.settings import Settings
from tests.support.services import wait_until


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWAY_")}
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None:
            continue
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
        proc = subprocess.Popen(
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
    up = subprocess.Popen(
        shipway_cmd("up"), env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: up_is_healthy(settings) or up.poll() is not None, 120, "shipway up")
        assert up.poll() is None, log_path.read_text()
        yield up
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    assert code == 0, log_path.read_text()[-3000:]
