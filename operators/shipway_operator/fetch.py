"""``python -m shipway_operator.fetch URI DEST [--sha256 HEX]``: the init container that
puts a build's Triton model repository in place before Triton starts.

Downloads an http(s) ``.tar.gz`` (streamed to a temporary file, retried on connection
errors and 5xx), checks its SHA-256 when given, and unpacks it into DEST with tarfile's
``data`` filter (no absolute paths, no ``..``, no links out, no device files). The
archive holds the repository itself (``<model>/config.pbtxt``, ``<model>/<version>/``),
optionally under one top-level folder. Exit codes: 0 done, 1 failed (one line on stderr
saying why; the pod's init container then restarts with back-off).

The digest is of the bytes as served (``iter_raw``: a server that labels the archive
``Content-Encoding: gzip`` does not get it decompressed first). ``--max-bytes`` (default
20 GiB, the operator sets it to the ``models`` volume's ``sizeLimit``) caps the archive and
its unpacked tree together, the peak use of the volume: a larger one fails before the
volume fills up. A redirect from https to http is refused (no downgrade).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ATTEMPTS = 5
CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 20 * 2**30  # 20 GiB: archive + unpacked repository


class FetchError(Exception):
    """A repository that cannot be put in place, with the reason."""


def _no_downgrade(origin: str) -> Callable[[httpx.Request], None]:
    """A request hook refusing a redirect from https to http."""

    def check(request: httpx.Request) -> None:
        if origin.startswith("https://") and request.url.scheme != "https":
            raise FetchError(f"GET {origin}: refused a redirect from https to {request.url}")

    return check


def download(
    uri: str,
    into: Path,
    attempts: int = ATTEMPTS,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Stream ``uri`` into the file ``into`` as served (no Content-Encoding decoding);
    returns its hex SHA-256. More than ``max_bytes`` fails. Connection errors and 5xx are
    retried with back-off (1, 2, 4... s); 4xx, too many redirects and an https->http
    redirect fail at once."""
    if not uri.startswith(("http://", "https://")):
        raise FetchError(f"only http(s) archives are fetched, got {uri!r}")
    hooks = {"request": [_no_downgrade(uri)]}
    for attempt in range(attempts):
        digest = hashlib.sha256()
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=timeout, event_hooks=hooks) as http,
                http.stream("GET", uri) as response,
            ):
                if response.status_code >= 400:
                    if response.status_code < 500 or attempt == attempts - 1:
                        raise FetchError(f"GET {uri}: HTTP {response.status_code}")
                else:
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise _too_large(uri, declared, max_bytes)
                    size = 0
                    with into.open("wb") as out:
                        for chunk in response.iter_raw(CHUNK):
                            size += len(chunk)
                            if size > max_bytes:
                                raise _too_large(uri, size, max_bytes)
                            digest.update(chunk)
                            out.write(chunk)
                    return digest.hexdigest()
        except httpx.TransportError as exc:
            if attempt == attempts - 1:
                raise FetchError(f"GET {uri}: {exc}") from None
        except httpx.HTTPError as exc:  # too many redirects, a bad URL...: not retried
            raise FetchError(f"GET {uri}: {exc}") from None
        time.sleep(2**attempt)
    raise FetchError(f"GET {uri}: no attempt left")


def _too_large(uri: str, size: int, max_bytes: int) -> FetchError:
    return FetchError(f"GET {uri}: more than {max_bytes} bytes ({size}); raise --max-bytes")


def unpack(archive: Path, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Unpack into ``dest`` (a repository under one top-level folder is lifted to
    ``dest``); returns the model names found (folders with a ``config.pbtxt``). Files
    adding up to more than ``max_bytes`` fail before anything is written."""
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".unpack-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                unpacked = sum(m.size for m in tar.getmembers() if m.isfile())
                if unpacked > max_bytes:
                    raise FetchError(
                        f"the archive unpacks to {unpacked} bytes, more than {max_bytes} "
                        "left of --max-bytes"
                    )
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise FetchError(f"not a readable tar archive: {exc}") from None
        except OSError as exc:
            if exc.errno is None:  # a bad gzip stream, not the file system
                raise FetchError(f"not a readable tar archive: {exc}") from None
            raise
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


def fetch(
    uri: str, dest: Path, sha256: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[str]:
    """Download, verify and unpack; returns the models now in ``dest``. Scratch files
    live in hidden folders inside ``dest`` (the one writable volume) and are removed.
    ``max_bytes`` caps the archive and its unpacked tree together. A file system error
    (no space left, not a directory...) is a ``FetchError`` too."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
            archive = Path(scratch) / "repository.tar.gz"
            digest = download(uri, archive, max_bytes=max_bytes)
            if sha256 and digest != sha256.lower():
                raise FetchError(f"SHA-256 of {uri} is {digest}, expected {sha256.lower()}")
            return unpack(archive, dest, max_bytes - archive.stat().st_size)
    except OSError as exc:
        raise FetchError(f"{dest}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipway_operator.fetch")
    parser.add_argument("uri", help="http(s) URL of the repository's .tar.gz")
    parser.add_argument("dest", type=Path, help="directory Triton serves from")
    parser.add_argument("--sha256", help="expected hex SHA-256 of the archive")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="most bytes the archive and its unpacked tree take together (default 20 GiB)",
    )
    args = parser.parse_args(argv)
    try:
        models = fetch(args.uri, args.dest, args.sha256, args.max_bytes)
    except FetchError as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {', '.join(models)} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
