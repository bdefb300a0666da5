"""The shared file helpers: sha256 of a file, atomic writes that leave nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fmanetpp_cli._files import atomic_output, sha256_file, write_bytes_atomic


def test_write_bytes_atomic_replaces_whole_files_and_makes_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.json"
    write_bytes_atomic(target, b"first")
    write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"], "no temporary file is left"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "permissions as a plain open() gives"
    assert sha256_file(target) == "16367aacb67a4a017c8da8ab95682ccb390863780f7114dda0a0e0c55644c7c4"


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [target.name]
