"""Triton model repositories as the operator's init container fetches them: a ``.tar.gz``
served over http, checked against its SHA-256.

``repository_archive`` packages an ONNX model the way local mode does
(``shipway.builds.packaging.package_repository``: the Python backend running ONNX Runtime,
which is what the local Triton has), so a pod's Triton serves exactly what a local
replica would. ``ArchiveServer`` serves such archives from this process, on loopback:
the stand-in kubelet's init containers run on this machine and reach it there.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from shipway.builds.packaging import package_repository
from shipway.builds.recipes import Target
from shipway.builds.triton_config import ServingOptions
from shipway.registry.signature import load_model, read_signature


@dataclass(frozen=True)
class Archive:
    """A repository's ``.tar.gz`` bytes and their hex SHA-256 (``build.sha256``)."""

    data: bytes
    sha256: str


def archive_directory(repository: Path) -> Archive:
    """The repository's content (``<model>/config.pbtxt``, ``<model>/1/...``) as a
    ``.tar.gz`` with no top-level folder; entries sorted, times and owners zeroed, so
    that one repository always gives one digest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(repository.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(repository)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    return Archive(data, hashlib.sha256(data).hexdigest())


def repository_archive(
    onnx_model: bytes, triton_model_name: str, options: ServingOptions | None = None
) -> Archive:
    """An archive of a one-model repository serving ``onnx_model`` as
    ``triton_model_name`` (its signature read from the model; no warm-up: no sample).
    Raises ``shipway.errors.InvalidInput`` for a model Triton cannot serve."""
    signature = read_signature(load_model(onnx_model))
    with tempfile.TemporaryDirectory(prefix="repository-") as tmp:
        root = Path(tmp)
        engine = root / "model.onnx"
        engine.write_bytes(onnx_model)
        repository = root / "repository"
        package_repository(
            repository,
            triton_model_name,
            engine,
            signature,
            Target.ONNXRUNTIME_CPU,
            options or ServingOptions(warmup=False),
            onnx_backend="python",
        )
        return archive_directory(repository)


class ArchiveServer:
    """A threaded HTTP server on ``127.0.0.1`` (a free port) serving published bytes by
    path; anything else is a 404. ``with`` starts and stops it (its thread is joined)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []  # paths asked for, in order (what the fetches did)
        files, lock, requests = self._files, self._lock, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    data = files.get(self.path)
                    requests.append(self.path)
                if data is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test output is not the place

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="archive-server", daemon=True
        )

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def publish(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/<name>``; returns its URL (a name may be replaced)."""
        path = "/" + name.lstrip("/")
        with self._lock:
            self._files[path] = data
        return f"http://{self.host}:{self.port}{path}"
