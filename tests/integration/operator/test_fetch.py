"""The init container's fetch (``python -m shipway_operator.fetch``) against a real
HTTP server: the repository lands where Triton reads it, or the fetch fails saying why."""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import os
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway_operator.fetch", *args],
        env={**os.environ, **(env or {})},
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


class _Handler(BaseHTTPRequestHandler):
    """Serves ``routes``: path -> (status, headers, body)."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # the stdlib handler's name
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving(
    routes: dict[str, tuple[int, dict[str, str], bytes]], tls: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """A real HTTP(S) server (a thread of this process) of ``routes``; yields its base URL."""
    handler = type("Routes", (_Handler,), {"routes": routes})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_digest_is_of_the_archive_as_served_even_labelled_gzip_encoded(tmp_path: Path) -> None:
    """A server that labels a .tar.gz ``Content-Encoding: gzip`` (as some do): the digest
    and the unpacked file are of the bytes served, not of the decompressed tar."""
    data = _archive(tmp_path / "b-1.tar.gz")
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/x-tar"}
    with _serving({"/b-1.tar.gz": (200, headers, data)}) as url:
        dest = tmp_path / "models"
        done = _fetch(f"{url}/b-1.tar.gz", str(dest), "--sha256", hashlib.sha256(data).hexdigest())
    assert done.returncode == 0, done.stderr
    assert (dest / "minilm" / "1" / "model.onnx").read_bytes() == b"onnx"


def test_archive_larger_than_the_cap_fails_saying_so(
    server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, data = server
    cap = len(data) - 1
    done = _fetch(f"{url}/b-1.tar.gz", str(tmp_path / "models"), "--max-bytes", str(cap))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"fetch failed: GET {url}/b-1.tar.gz: more than {cap} bytes ({len(data)}); "
        "raise --max-bytes"
    )
    assert list((tmp_path / "models").iterdir()) == []


def test_archive_unpacking_past_the_cap_fails_before_writing(tmp_path: Path) -> None:
    """A small archive of a large tree (zeros compress well): refused before unpacking."""
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in {"m/config.pbtxt": b'name: "m"', "m/1/zeros": bytes(4 << 20)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = archive.read_bytes()
    cap = 1 << 20
    assert len(data) < cap
    with _serving({"/bomb.tar.gz": (200, {}, data)}) as url:
        dest = tmp_path / "models"
        done = _fetch(f"{url}/bomb.tar.gz", str(dest), "--max-bytes", str(cap))
    assert done.returncode == 1
    unpacked = (4 << 20) + len(b'name: "m"')
    assert done.stderr.strip() == (
        f"fetch failed: the archive unpacks to {unpacked} bytes, "
        f"more than {cap - len(data)} left of --max-bytes"
    )
    assert list(dest.iterdir()) == []


def test_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    data = _archive(tmp_path / "b-1.tar.gz")
    cert, key = _certificate(tmp_path)
    with (
        _serving({"/b-1.tar.gz": (200, {}, data)}) as plain,
        _serving(
            {"/b-1.tar.gz": (302, {"Location": f"{plain}/b-1.tar.gz"}, b"")}, (cert, key)
        ) as secure,
    ):
        done = _fetch(
            f"{secure}/b-1.tar.gz", str(tmp_path / "models"), env={"SSL_CERT_FILE": str(cert)}
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"fetch failed: GET {secure}/b-1.tar.gz: refused a redirect from https to "
        f"{plain}/b-1.tar.gz"
    )


def test_https_archive_is_fetched(tmp_path: Path) -> None:
    data = _archive(tmp_path / "b-1.tar.gz")
    cert, key = _certificate(tmp_path)
    with _serving({"/b-1.tar.gz": (200, {}, data)}, (cert, key)) as secure:
        done = _fetch(
            f"{secure}/b-1.tar.gz", str(tmp_path / "models"), env={"SSL_CERT_FILE": str(cert)}
        )
    assert done.returncode == 0, done.stderr


def test_redirect_loop_fails_with_one_line(tmp_path: Path) -> None:
    # the loop points at the server that serves it: the route is added once the port is known
    holder: dict[str, tuple[int, dict[str, str], bytes]] = {}
    with _serving(holder) as url:
        holder["/loop.tar.gz"] = (302, {"Location": f"{url}/loop.tar.gz"}, b"")
        done = _fetch(f"{url}/loop.tar.gz", str(tmp_path / "models"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fetch failed: GET {url}/loop.tar.gz: "), (
        done.stderr
    )
    assert "redirect" in lines[0].lower()


def test_a_file_system_error_fails_with_one_line(server: tuple[str, bytes], tmp_path: Path) -> None:
    """DEST under a regular file (as a full or read-only volume): no traceback."""
    url, _ = server
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = _fetch(f"{url}/b-1.tar.gz", str(blocker / "models"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"fetch failed: {blocker / 'models'}: Not a directory"
