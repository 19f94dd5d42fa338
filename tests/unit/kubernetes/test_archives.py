"""Build archives: reproducible bytes (one digest whichever API replica makes it), the
repository's files at the root, the operator's fetch unpacks them; signed URLs."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from shipway.errors import Conflict
from shipway.kubernetes import archives
from shipway.settings import Settings
from shipway_operator.fetch import unpack

FILES = {
    "doubler-b1/config.pbtxt": b'name: "doubler-b1"\n',
    "doubler-b1/1/model.onnx": bytes(range(256)) * 4,
    "doubler-b1/1/model.py": b"print('hi')\n",
}


def repository(root: Path) -> Path:
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_archive_holds_the_repository_files_and_is_reproducible(tmp_path: Path) -> None:
    first = repository(tmp_path / "a")
    second = repository(tmp_path / "b")
    for path in second.rglob("*"):  # other times and modes: the same archive
        os.utime(path, (1_000_000, 1_000_000))
        path.chmod(0o700)
    one, two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
    digest = archives.write_archive(first, one)
    assert archives.write_archive(second, two) == digest == archives.file_sha256(one)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = {n: tar.extractfile(m).read() for n, m in members.items() if m.isfile()}  # type: ignore[union-attr]
    assert files == FILES
    assert {n for n, m in members.items() if m.isdir()} == {"doubler-b1", "doubler-b1/1"}
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members.values())


def test_the_operators_fetch_unpacks_it(tmp_path: Path) -> None:
    archive = tmp_path / "repo.tar.gz"
    archives.write_archive(repository(tmp_path / "src"), archive)
    dest = tmp_path / "models"
    dest.mkdir()
    assert unpack(archive, dest) == ["doubler-b1"]
    assert {
        p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()
    } == FILES


def test_links_are_refused(tmp_path: Path) -> None:
    src = repository(tmp_path / "src")
    (src / "doubler-b1" / "link").symlink_to("/etc/passwd")
    with pytest.raises(Conflict, match="link or special file"):
        archives.write_archive(src, tmp_path / "out.tar.gz")


def test_urls_are_signed_per_build_and_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, public_api_url="https://shipway.test/", _env_file=None)
    url = archives.archive_url(settings, "b1")
    signature = archives.signature(settings, "b1")
    assert url == (
        f"https://shipway.test/api/v1/builds/b1/model-repository.tar.gz?signature={signature}"
    )
    assert archives.signed(settings, "b1", signature)
    assert not archives.signed(settings, "b2", signature)
    assert not archives.signed(settings, "b1", None)
    assert not archives.signed(settings, "b1", "àÝÚ*æ\x82")  # not ASCII: no, not an error
    other = Settings(home=tmp_path, archive_key="another-key-of-16+", _env_file=None)
    assert not archives.signed(other, "b1", signature)
