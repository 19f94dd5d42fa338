"""The CLI refuses bad ``SHIPWAY_*`` settings in one message naming each variable, the
refused value's rule printed as written (no markup eaten), exit code 2."""

from __future__ import annotations

import subprocess
import sys


def test_a_bad_setting_names_its_variable_and_its_rule_as_written() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shipway.cli.main", "serve", "gateway"],
        env={"SHIPWAY_GATEWAY_NAMESPACE": "Bad_NS", "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith("error: invalid settings: SHIPWAY_GATEWAY_NAMESPACE:"), message
    assert "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" in message  # the brackets kept
    assert "Traceback" not in done.stderr


def test_an_error_is_one_line_in_a_ci_log() -> None:
    """Off a terminal rich would wrap at 80 columns: a long message stays one line."""
    done = subprocess.run(
        [sys.executable, "-m", "shipway.cli.main", "serve", "gateway"],
        env={
            "SHIPWAY_GATEWAY_NAMESPACE": "Bad_NS",
            "SHIPWAY_API_PORT": "nope",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120, done.stderr
    assert lines[0].startswith("error: invalid settings: SHIPWAY_API_PORT:")
    assert lines[0].endswith(
        "SHIPWAY_GATEWAY_NAMESPACE: String should match pattern '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"
    )
