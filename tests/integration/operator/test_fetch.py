"""The init container's fetch (``python -m shipway_operator.fetch``) against a real
HTTP server: the repository lands where Triton reads it, or the fetch fails saying why."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _archive(path: Path) -> bytes:
    files = {"repo/minilm/config.pbtxt": b'name: "minilm"', "repo/minilm/1/model.onnx": b"onnx"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """An HTTP server (a thread of this process) serving ``b-1.tar.gz``."""
    root = tmp_path / "www"
    root.mkdir()
    data = _archive(root / "b-1.tar.gz")
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", data
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway_operator.fetch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fetch_puts_the_repository_in_place(server: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = server
    dest = tmp_path / "models"
    digest = hashlib.sha256(data).hexdigest()
    done = _fetch(f"{url}/b-1.tar.gz", str(dest), "--sha256", digest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fetched minilm into {dest}"
    assert (dest / "minilm" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert [p.name for p in dest.iterdir()] == ["minilm"]  # no scratch left


def test_fetch_refuses_an_archive_with_another_digest(
    server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, data = server
    done = _fetch(f"{url}/b-1.tar.gz", str(tmp_path / "models"), "--sha256", "0" * 64)
    assert done.returncode == 1
    actual = hashlib.sha256(data).hexdigest()
    assert done.stderr.strip() == (
        f"fetch failed: SHA-256 of {url}/b-1.tar.gz is {actual}, expected {'0' * 64}"
    )
    assert not (tmp_path / "models" / "minilm").exists()


def test_fetch_of_a_missing_archive_fails_at_once(
    server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, _ = server
    done = _fetch(f"{url}/nope.tar.gz", str(tmp_path / "models"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"fetch failed: GET {url}/nope.tar.gz: HTTP 404"
