"""A succeeded build's Triton model repository as the ``.tar.gz`` Triton pods fetch.

On Kubernetes the operator's init container (``shipway_operator.fetch``) downloads an
http(s) archive, checks its SHA-256 and unpacks it as the model repository. The API
makes that archive from the build's MLflow artifact (``builds/<id>/triton``): the
repository itself at the archive's root (``<model>/config.pbtxt``, ``<model>/1/...``).

The archive is reproducible — entries sorted, times, owners and modes fixed, gzip
without a timestamp — so every API replica makes the same bytes and the SHA-256 put in
``spec.build.sha256`` at deploy time holds for whichever replica a pod reaches. Builds
never change, so each archive is made once per process home (``<home>/archives``).

URLs carry an HMAC-SHA256 ``signature`` of the build id under ``SHIPWAY_ARCHIVE_KEY``:
pods fetch without a token, and nobody fetches a build without its URL.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shipway.container import Container
from shipway.errors import Conflict, NotFound
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str  # hex digest of the file's bytes


def signature(settings: Settings, build_id: str) -> str:
    """Hex HMAC-SHA256 of the build id under the archive key."""
    return hmac.new(settings.archive_key.encode(), build_id.encode(), hashlib.sha256).hexdigest()


def signed(settings: Settings, build_id: str, candidate: str | None) -> bool:
    """True when ``candidate`` is the build's signature (any text is compared as bytes:
    ``compare_digest`` refuses non-ASCII strings)."""
    return candidate is not None and hmac.compare_digest(
        signature(settings, build_id).encode(), candidate.encode()
    )


def archive_url(settings: Settings, build_id: str) -> str:
    """Where pods fetch the build's archive: the public API URL, signed."""
    return (
        f"{settings.resolved_public_api_url}/api/v1/builds/{build_id}/model-repository.tar.gz"
        f"?signature={signature(settings, build_id)}"
    )


def write_archive(repository: Path, out: Path) -> str:
    """Write ``repository``'s files (not the folder itself) as a reproducible .tar.gz to
    ``out``; returns its hex SHA-256. Symbolic links and special files are refused."""

    def normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    paths = sorted(repository.rglob("*"), key=lambda p: p.relative_to(repository).as_posix())
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in paths:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise Conflict(f"the build's repository holds a link or special file: {path}")
            name = path.relative_to(repository).as_posix()
            tar.add(path, arcname=name, recursive=False, filter=normalized)
    return file_sha256(out)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_archive(container: Container, build_id: str) -> Archive:
    """The build's archive, made from MLflow on first use. ``NotFound`` for an unknown
    build (or artifacts MLflow no longer has), ``Conflict`` for one not succeeded."""
    with container.db.session() as session:
        build = session.get(Build, build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        if build.status != BuildStatus.SUCCEEDED or not build.artifact_path:
            raise Conflict(
                f"build {build_id} is {build.status}; only a succeeded build has a model repository"
            )
        run_id, artifact_path = build.model_version.mlflow_run_id, build.artifact_path
    folder = container.settings.home / "archives"
    path, digest_file = folder / f"{build_id}.tar.gz", folder / f"{build_id}.sha256"
    if path.is_file() and digest_file.is_file():
        return Archive(path, digest_file.read_text().strip())
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".make-") as scratch:
        repository = container.registry.download(run_id, artifact_path, Path(scratch) / "files")
        partial = Path(scratch) / "archive.tar.gz"
        digest = write_archive(repository, partial)
        # the digest first: whoever sees the archive also finds its digest
        (Path(scratch) / "sha256").write_text(digest)
        os.replace(Path(scratch) / "sha256", digest_file)
        os.replace(partial, path)
    return Archive(path, digest)
