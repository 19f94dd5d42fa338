"""The spec at the configured branch's tip, read from the configured Git repository.

An adapter around the ``git`` binary (argument lists, a timeout on every command, no
terminal prompts (``GIT_TERMINAL_PROMPT=0``), no hooks run). Only the configured branch
is fetched (``+refs/heads/<branch>:refs/heads/<branch>``), from
``SHIPWAY_GITOPS_REPOSITORY_URL`` only, never from a URL in the push, into a bare mirror
under the settings' home (one per URL); a file lock keeps two fetches into one mirror
apart, across threads and processes. A push names a commit, but what is applied is the
branch's tip: a delivery's commit is only checked against it (``position``), so a
replayed or late delivery of an older commit, or a commit from elsewhere (another
branch, a merge request's ref), is never applied. Files are then read with
``git cat-file blob <commit>:<path>``: from the commit's tree, never the disk; a Git LFS
pointer is refused (the mirror holds Git objects only, not LFS storage).

Errors: a branch the repository does not have, a missing spec or file, an LFS pointer, a
path leaving the repository -> ``InvalidInput``/``NotFound`` (permanent, the delivery
fails with the message); git unreachable or timing out -> ``Unavailable`` (the task
retries).
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipway.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from shipway.services.gitops import SpecSource

COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# The user information of every URL in a text (``https://<token>@host/...``), wherever
# the URL sits in it (git quotes URLs inside its messages).
USERINFO = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")
# The first line of a Git LFS pointer file (git-lfs docs, "spec.md")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def redact(text: str) -> str:
    """``text`` with the user information of every URL in it replaced by ``***``."""
    return USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class Position:
    """Where a pushed commit stands on the branch: ``tip`` is the branch's tip now;
    ``on_branch`` whether the commit is the tip or one of its ancestors."""

    tip: str
    on_branch: bool


class GitRepository:
    """A bare mirror of ``url`` in ``cache_dir``, filled on demand, one commit at a time."""

    def __init__(self, url: str, cache_dir: Path, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.mirror = cache_dir / f"{key}.git"
        self._lock_path = cache_dir / f"{key}.lock"

    def fetch_tip(self, branch: str) -> str:
        """Fetch ``branch`` (only it) into the mirror; its tip's commit id."""
        ref = f"refs/heads/{branch}"
        if self._run("check-ref-format", ref).returncode != 0 or branch.startswith("-"):
            raise InvalidInput(f"SHIPWAY_GITOPS_BRANCH: {branch!r} is not a valid branch name")
        with self._locked():
            if not (self.mirror / "HEAD").exists():
                self._git("init", "--bare", "--quiet", str(self.mirror))
            fetched = self._run("fetch", "--quiet", "--no-tags", "--", self.url, f"+{ref}:{ref}")
            if fetched.returncode != 0:
                message = _last_line(fetched.stderr)
                if "couldn't find remote ref" in message:
                    raise NotFound(
                        f"branch {branch!r} (SHIPWAY_GITOPS_BRANCH) is not in the repository "
                        f"{redact(self.url)} (SHIPWAY_GITOPS_REPOSITORY_URL)"
                    )
                raise Unavailable(f"git fetch from {redact(self.url)} failed: {message}")
            tip = self._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
            if tip.returncode != 0:
                raise Unavailable(f"git fetch from {redact(self.url)} left no {ref}")
            return tip.stdout.decode().strip()

    def position(self, commit: str, branch: str) -> Position:
        """Fetch ``branch`` and say where ``commit`` stands on it. Nothing else is ever
        fetched: a commit that is not in the branch's history is not on it, whatever
        else the repository holds."""
        if not COMMIT.match(commit):
            raise InvalidInput(f"{commit!r} is not a commit id")
        tip = self.fetch_tip(branch)
        if commit == tip:
            return Position(tip, True)
        if not self._has(commit):
            return Position(tip, False)
        ancestor = self._run("merge-base", "--is-ancestor", commit, tip)
        if ancestor.returncode not in (0, 1):
            raise Unavailable(f"git merge-base failed: {_last_line(ancestor.stderr)}")
        return Position(tip, ancestor.returncode == 0)

    def read(self, commit: str, path: str) -> bytes:
        """A file's bytes at ``commit`` (``path`` relative to the repository's root)."""
        result = self._run("cat-file", "blob", f"{commit}:{path}")
        if result.returncode != 0:
            raise NotFound(f"{path} is not in commit {commit[:12]}")
        return result.stdout

    def spec_source(self, commit: str, spec_path: str) -> SpecSource:
        """The spec at ``commit`` (already in the mirror: a tip ``fetch_tip`` returned)
        and a reader of the files it names (paths relative to the spec's directory,
        refused when they leave the repository or are Git LFS pointers)."""
        from shipway.services.gitops import SpecSource

        if not COMMIT.match(commit) or not self._has(commit):
            raise NotFound(f"commit {commit!r} is not in the mirror; fetch its branch first")
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
                data = self.read(commit, resolved)
            except NotFound:
                raise InvalidInput(
                    f"{path}: no such file in commit {commit[:12]} (named by {spec_path})"
                ) from None
            if data.startswith(LFS_POINTER):
                raise InvalidInput(
                    f"{path} is a Git LFS pointer in commit {commit[:12]}; pushes read files "
                    "from Git objects only, not from LFS storage: commit the file itself "
                    "(not tracked by LFS), or apply from a checkout that has it "
                    "(git lfs pull, then shipway apply -f)"
                )
            return data

        return SpecSource(text=text, read=read, origin=f"git:{commit}", name=spec_path)

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
