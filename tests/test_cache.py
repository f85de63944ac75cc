"""The cache helpers: whole files and whole folders or nothing, and content hashes."""

from __future__ import annotations

import hashlib

import pytest

from ropekit.cache import atomic_folder, atomic_write, cache_dir, file_sha256


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_atomic_write_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    atomic_write(path, "a,b\r\n1,é\n")
    assert path.read_bytes() == "a,b\r\n1,é\n".encode()  # UTF-8, newlines untouched
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError):
        atomic_write(path, 3)  # type: ignore[arg-type]
    assert path.read_bytes() == b"\x00\x01" and [p.name for p in path.parent.iterdir()] == ["results.csv"]


def test_atomic_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "cache" / "abc"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(target.parent.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["model.safetensors"]
    with pytest.raises(OSError), atomic_folder(target) as tmp:  # another process was first: kept, not mixed
        (tmp / "other").write_bytes(b"y")
    assert [p.name for p in target.parent.iterdir()] == ["abc"] and [p.name for p in target.iterdir()] == [
        "model.safetensors"
    ]


def test_file_sha256(tmp_path):
    path = tmp_path / "w.gguf"
    path.write_bytes(b"weights")
    assert file_sha256(path) == hashlib.sha256(b"weights").hexdigest()
    path.write_bytes(b"other weights")  # another size: not the memoised hash
    assert file_sha256(path) == hashlib.sha256(b"other weights").hexdigest()
