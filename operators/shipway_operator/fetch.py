"""``python -m shipway_operator.fetch URI DEST [--sha256 HEX]``: the init container that
puts a build's Triton model repository in place before Triton starts.

Downloads an http(s) ``.tar.gz`` (streamed to a temporary file, retried on connection
errors and 5xx), checks its SHA-256 when given, and unpacks it into DEST with tarfile's
``data`` filter (no absolute paths, no ``..``, no links out, no device files). The
archive holds the repository itself (``<model>/config.pbtxt``, ``<model>/<version>/``),
optionally under one top-level folder. Exit codes: 0 done, 1 failed (one line on stderr
saying why; the pod's init container then restarts with back-off).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

ATTEMPTS = 5
CHUNK = 1 << 20


class FetchError(Exception):
    """A repository that cannot be put in place, with the reason."""


def download(uri: str, into: Path, attempts: int = ATTEMPTS, timeout: float = 60.0) -> str:
    """Stream ``uri`` into the file ``into``; returns its hex SHA-256. Connection errors
    and 5xx are retried with back-off (1, 2, 4... s); 4xx fail at once."""
    if not uri.startswith(("http://", "https://")):
        raise FetchError(f"only http(s) archives are fetched, got {uri!r}")
    for attempt in range(attempts):
        digest = hashlib.sha256()
        try:
            with httpx.stream("GET", uri, follow_redirects=True, timeout=timeout) as response:
                if response.status_code >= 400:
                    if response.status_code < 500 or attempt == attempts - 1:
                        raise FetchError(f"GET {uri}: HTTP {response.status_code}")
                else:
                    with into.open("wb") as out:
                        for chunk in response.iter_bytes(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                    return digest.hexdigest()
        except httpx.TransportError as exc:
            if attempt == attempts - 1:
                raise FetchError(f"GET {uri}: {exc}") from None
        time.sleep(2**attempt)
    raise FetchError(f"GET {uri}: no attempt left")


def unpack(archive: Path, dest: Path) -> list[str]:
    """Unpack into ``dest`` (a repository under one top-level folder is lifted to
    ``dest``); returns the model names found (folders with a ``config.pbtxt``)."""
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".unpack-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError(f"not a readable tar archive: {exc}") from None
        root = staging
        entries = list(staging.iterdir())
        if not _models(root) and len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        models = _models(root)
        if not models:
            raise FetchError("the archive holds no model (no <model>/config.pbtxt)")
        for item in root.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(item), target)
        return models
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _models(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "config.pbtxt").is_file())


def fetch(uri: str, dest: Path, sha256: str | None = None) -> list[str]:
    """Download, verify and unpack; returns the models now in ``dest``. Scratch files
    live in hidden folders inside ``dest`` (the one writable volume) and are removed."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
        archive = Path(scratch) / "repository.tar.gz"
        digest = download(uri, archive)
        if sha256 and digest != sha256.lower():
            raise FetchError(f"SHA-256 of {uri} is {digest}, expected {sha256.lower()}")
        return unpack(archive, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipway_operator.fetch")
    parser.add_argument("uri", help="http(s) URL of the repository's .tar.gz")
    parser.add_argument("dest", type=Path, help="directory Triton serves from")
    parser.add_argument("--sha256", help="expected hex SHA-256 of the archive")
    args = parser.parse_args(argv)
    try:
        models = fetch(args.uri, args.dest, args.sha256)
    except FetchError as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {', '.join(models)} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
