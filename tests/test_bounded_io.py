"""Bounded reading: regular files only, size caps before reading, gzip / zip refused before inflating."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import pytest

from cl_bench.atomic import ensure_writable_dir
from cl_bench.bounded_io import gunzip, read_bytes, read_json, read_text, read_zip_member
from cl_bench.errors import ClBenchError


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    good = tmp_path / "a.txt"
    good.write_text("héllo")
    assert read_text(good, 100) == "héllo"
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(ClBenchError, match=r"is a FIFO \(named pipe\), not a regular file"):
        read_bytes(fifo, 100)  # no hang: checked before opening, opened non-blocking
    dev = tmp_path / "zero"
    dev.symlink_to("/dev/zero")
    with pytest.raises(ClBenchError, match="is a character device"):
        read_bytes(dev, 100)
    dangling = tmp_path / "d"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ClBenchError, match="is a dangling symlink"):
        read_bytes(dangling, 100)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ClBenchError, match="Too many levels of symbolic links"):
        read_bytes(loop, 100)
    with pytest.raises(ClBenchError, match="is a directory"):
        read_bytes(tmp_path, 100)


def test_size_cap_encoding_and_json_depth(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_bytes(b"[1, 2]")
    assert read_json(f, 6) == [1, 2]
    with pytest.raises(ClBenchError, match="is 6 bytes, more than the 5-byte limit"):
        read_bytes(f, 5)
    f.write_bytes(b'"\xc3\x28"')
    with pytest.raises(ClBenchError, match=r"not valid UTF-8 \(byte 1\)"):
        read_text(f, 100)
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ClBenchError, match="nested too deeply"):
        read_json(f, 10**6)
    f.write_text('{"a": }')
    with pytest.raises(ClBenchError, match=r"not valid JSON \(line 1 column 7"):
        read_json(f, 100)


def test_gunzip_equals_the_stdlib_below_the_cap_and_stops_above(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    g = tmp_path / "x.gz"
    g.write_bytes(gzip.compress(payload) + gzip.compress(b"tail"))  # two members, as gzip allows
    assert gunzip(g, 10**6) == gzip.decompress(g.read_bytes())
    with pytest.raises(ClBenchError, match="decompresses to more than 1000 bytes"):
        gunzip(g, 1000)
    g.write_bytes(b"not gzip")
    with pytest.raises(ClBenchError, match="not a valid gzip stream"):
        gunzip(g, 100)


def test_zip_members_are_checked_before_inflating(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.bin", b"abc" * 100)
        zf.writestr("bomb.bin", b"\0" * (10 * 2**20))  # ~10 KB compressed, ratio ~1000:1
    with zipfile.ZipFile(z) as zf:
        ok, bomb = zf.getinfo("ok.bin"), zf.getinfo("bomb.bin")
        assert read_zip_member(zf, ok, "a.zip") == zf.read("ok.bin")
        with pytest.raises(ClBenchError, match="declares 10485760 bytes, more than the 1048576-byte limit"):
            read_zip_member(zf, bomb, "a.zip", limit=2**20)
        ratio = bomb.file_size / bomb.compress_size
        assert ratio > 500  # zeros deflate about 1000:1
        bomb.compress_size = bomb.file_size // 2000  # a header claiming more than DEFLATE can do
        with pytest.raises(ClBenchError, match=r"inflates 5242 bytes to 10485760 \(more than 1000:1\)"):
            read_zip_member(zf, bomb, "a.zip")


def test_writable_dir_probe_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert ensure_writable_dir(target, "results directory") == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []  # nothing made, nothing left
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClBenchError, match="is not a directory"):
        ensure_writable_dir(tmp_path / "file", "results directory")
    with pytest.raises(ClBenchError, match=r"is not a directory \(its parent .*file is a file\)"):
        ensure_writable_dir(tmp_path / "file" / "sub", "results directory")
    with pytest.raises(ClBenchError, match="is not writable"):
        ensure_writable_dir(Path("/proc/clbench-probe"), "cache directory")
