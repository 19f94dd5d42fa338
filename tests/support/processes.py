"""Run Shipway's own processes (``shipway serve <role>``, ``shipway up``) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shipway.settings import Settings


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
