"""Unpacking a fetched repository archive (local files; the download itself is tested
against a real HTTP server in tests/integration/operator/)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from shipway_operator.fetch import FetchError, unpack


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


REPO = {"minilm/config.pbtxt": b'name: "minilm"', "minilm/1/model.onnx": b"onnx"}


def test_repository_at_the_top_is_unpacked(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    assert unpack(_archive(tmp_path / "a.tar.gz", REPO), dest) == ["minilm"]
    assert (dest / "minilm" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert sorted(p.name for p in dest.iterdir()) == ["minilm"]  # no scratch left


def test_repository_under_one_folder_is_lifted(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    nested = {f"repo/{k}": v for k, v in REPO.items()}
    assert unpack(_archive(tmp_path / "a.tar.gz", nested), dest) == ["minilm"]
    assert (dest / "minilm" / "config.pbtxt").is_file()


def test_archive_without_a_model_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(FetchError, match=r"no model \(no <model>/config.pbtxt\)"):
        unpack(_archive(tmp_path / "a.tar.gz", {"readme.txt": b"hi"}), dest)


def test_paths_out_of_the_repository_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(FetchError, match="not a readable tar archive"):
        unpack(_archive(tmp_path / "a.tar.gz", {"../escape/config.pbtxt": b"x"}), dest)
    assert not (tmp_path / "escape").exists()


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    junk = tmp_path / "a.tar.gz"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(FetchError, match="not a readable tar archive"):
        unpack(junk, dest)


def test_a_restarted_fetch_replaces_what_an_earlier_one_left(tmp_path: Path) -> None:
    """An init container that restarts finds its emptyDir as the last attempt left it."""
    dest = tmp_path / "models"
    dest.mkdir()
    unpack(_archive(tmp_path / "a.tar.gz", {"minilm/config.pbtxt": b"old"}), dest)
    assert unpack(_archive(tmp_path / "b.tar.gz", REPO), dest) == ["minilm"]
    assert (dest / "minilm" / "config.pbtxt").read_bytes() == b'name: "minilm"'
