"""The spec at a pushed commit, read from the configured Git repository.

An adapter around the ``git`` binary (argument lists, a timeout on every command, no
terminal prompts (``GIT_TERMINAL_PROMPT=0``), no hooks run). The pushed commit is fetched from
``SHIPWAY_GITOPS_REPOSITORY_URL`` only, never from a URL in the push, into a bare
mirror under the settings' home (one per URL); a file lock keeps two fetches into one
mirror apart, across threads and processes. Files are then read with
``git cat-file blob <commit>:<path>``: from the commit's tree, never the disk.

Errors: a commit the repository does not have, a missing spec or file, a path leaving
the repository -> ``InvalidInput``/``NotFound`` (permanent, the delivery fails with the
message); git unreachable or timing out -> ``Unavailable`` (the task retries).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shipway.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from shipway.services.gitops import SpecSource

COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# The user information of every URL in a text (``https://<token>@host/...``), wherever
# the URL sits in it (git quotes URLs inside its messages).
USERINFO = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the user information of every URL in it replaced by ``***``."""
    return USERINFO.sub(r"\1***@", text)


class GitRepository:
    """A bare mirror of ``url`` in ``cache_dir``, filled on demand, one commit at a time."""

    def __init__(self, url: str, cache_dir: Path, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.mirror = cache_dir / f"{key}.git"
        self._lock_path = cache_dir / f"{key}.lock"

    def fetch(self, commit: str) -> None:
        """Make ``commit`` present in the mirror: nothing to do when it is; else fetch
        it by id, and if the server refuses a fetch by id, fetch every branch."""
        if not COMMIT.match(commit):
            raise InvalidInput(f"{commit!r} is not a commit id")
        with self._locked():
            if not (self.mirror / "HEAD").exists():
                self._git("init", "--bare", "--quiet", str(self.mirror))
            if self._has(commit):
                return
            by_id = self._run("fetch", "--quiet", "--no-tags", "--", self.url, commit)
            if by_id.returncode != 0 or not self._has(commit):
                heads = self._run(
                    "fetch", "--quiet", "--no-tags", "--", self.url, "+refs/heads/*:refs/heads/*"
                )
                if heads.returncode != 0:
                    raise Unavailable(
                        f"git fetch from {redact(self.url)} failed: {_last_line(heads.stderr)}"
                    )
            if not self._has(commit):
                raise NotFound(
                    f"commit {commit} is not in the repository {redact(self.url)} "
                    "(SHIPWAY_GITOPS_REPOSITORY_URL)"
                )

    def read(self, commit: str, path: str) -> bytes:
        """A file's bytes at ``commit`` (``path`` relative to the repository's root)."""
        result = self._run("cat-file", "blob", f"{commit}:{path}")
        if result.returncode != 0:
            raise NotFound(f"{path} is not in commit {commit[:12]}")
        return result.stdout

    def spec_source(self, commit: str, spec_path: str) -> SpecSource:
        """The spec at ``commit`` and a reader of the files it names (paths relative to
        the spec's directory, refused when they leave the repository)."""
        from shipway.services.gitops import SpecSource

        self.fetch(commit)
        spec_path = inside_repository(spec_path, "", "SHIPWAY_GITOPS_SPEC_PATH")
        try:
            text = self.read(commit, spec_path).decode()
        except NotFound:
            raise NotFound(
                f"{spec_path} is not in commit {commit[:12]} (SHIPWAY_GITOPS_SPEC_PATH)"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInput(f"{spec_path} at commit {commit[:12]} is not UTF-8") from None
        base = posixpath.dirname(spec_path)

        def read(path: str) -> bytes:
            resolved = inside_repository(path, base, path)
            try:
                return self.read(commit, resolved)
            except NotFound:
                raise InvalidInput(
                    f"{path}: no such file in commit {commit[:12]} (named by {spec_path})"
                ) from None

        return SpecSource(text=text, read=read, origin=f"git:{commit}")

    def _has(self, commit: str) -> bool:
        return self._run("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _git(self, *args: str) -> None:
        result = self._run(*args)
        if result.returncode != 0:
            raise Unavailable(f"git {args[0]} failed: {_last_line(result.stderr)}")

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        # init makes the mirror; every other command works inside it
        where = [] if args[0] == "init" else ["--git-dir", str(self.mirror)]
        try:
            return subprocess.run(
                ["git", "-c", "core.hooksPath=/dev/null", *where, *args],
                capture_output=True,
                timeout=self.timeout,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(
                f"git {args[0]} took longer than {self.timeout:.0f} s (SHIPWAY_GITOPS_GIT_TIMEOUT)"
            ) from None
        except FileNotFoundError:
            raise Unavailable("the git binary is not installed (apt-get install git)") from None


def inside_repository(path: str, base: str, what: str) -> str:
    """``path`` (relative to ``base``) as a path from the repository's root, refused when
    it is absolute or leaves the repository."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidInput(f"{what}: must be a relative path inside the repository")
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise InvalidInput(f"{what}: {path!r} leaves the repository")
    return joined


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return redact(lines[-1].strip()) if lines else "no message"
