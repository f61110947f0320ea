"""Reading files a user hands us without trusting them: bounded in size, time and nesting.

Every reader of results, caches, registries and real datasets goes through these helpers,
so a hostile or broken file is one ``ClBenchError`` line naming it, never a hang, a
traceback or the whole machine's memory:

- only regular files are opened (a FIFO would block forever, ``/dev/zero`` never ends, a
  directory or socket is not data); symlinks are followed, then the target is checked;
- a size cap is checked on the open descriptor before anything is read, and the read
  itself stops one byte past the cap (a file that grows while read is caught too);
- text must be valid UTF-8 (the error names the byte offset);
- JSON nested deeper than the interpreter can recurse is an error, not a ``RecursionError``;
- gzip streams and zip members are decompressed in chunks and stopped at a cap, so a
  decompression bomb is refused before it is inflated.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from cl_bench.errors import ClBenchError

MiB = 2**20
GiB = 2**30
CHUNK = 1 * MiB
# Caps per kind of file (a legitimate file is orders of magnitude smaller than its cap).
MAX_RESULT_BYTES = 16 * MiB  # a result JSON (the committed ones are ~2-20 KiB)
MAX_SPEC_BYTES = 4 * MiB  # a task / method YAML (the committed ones are < 10 KiB)
MAX_CARD_BYTES = 16 * MiB  # a cache card
MAX_DATA_TEXT_BYTES = 2 * GiB  # an annotation / split / question file of a real dataset
MAX_MEMBER_BYTES = 256 * MiB  # one image or array inside a zip / gzip of a real dataset
MAX_COMPRESSION_RATIO = 1000  # DEFLATE tops out near 1032:1; anything beyond is not plain data


def describe_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: Path, what: str = "file") -> int:
    """The size of ``path`` if it is (or links to) a regular file; ClBenchError otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ClBenchError(f"{what} {path} is a dangling symlink; fix or remove it") from None
        raise ClBenchError(f"{what} {path} does not exist") from None
    except OSError as e:  # ELOOP (a symlink loop), EACCES, ENAMETOOLONG ...
        raise ClBenchError(f"cannot read {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ClBenchError(f"{what} {path} is {describe_kind(st.st_mode)}, not a regular file; "
                           "point at the file itself")
    return st.st_size


def _open_regular(path: Path, what: str) -> tuple[int, int]:
    """(fd, size): opened without blocking (a FIFO swapped in after the check cannot hang us)."""
    check_regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ClBenchError(f"cannot read {what} {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ClBenchError(f"{what} {path} is {describe_kind(st.st_mode)}, not a regular file")
    return fd, st.st_size


def _too_big(path: Path, what: str, size: int | str, limit: int) -> ClBenchError:
    return ClBenchError(f"{what} {path} is {size} bytes, more than the {limit}-byte limit for a {what}; "
                        "is it the right file?")


def read_bytes(path: Path, limit: int, what: str = "file") -> bytes:
    """The whole file, at most ``limit`` bytes (more is an error, checked before reading)."""
    fd, size = _open_regular(Path(path), what)
    if size > limit:
        os.close(fd)
        raise _too_big(path, what, size, limit)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(size + 1)  # what the file says it holds (never a buffer of ``limit`` bytes)
            if len(data) > size:  # it grew while we read: go on, a chunk at a time, up to the cap
                data += _read_chunks(f, limit + 1 - len(data))
    except OSError as e:
        raise ClBenchError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > limit:
        raise _too_big(path, what, f"over {limit}", limit)
    return data


def _read_chunks(f: IO[bytes], limit: int) -> bytes:
    """At most ``limit`` bytes from ``f``, read ``CHUNK`` at a time (memory grows with the data only)."""
    out = bytearray()
    while len(out) < limit:
        chunk = f.read(min(CHUNK, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClBenchError(f"{where} is not valid UTF-8 (byte {e.start}); save it as UTF-8") from None


def read_text(path: Path, limit: int, what: str = "file") -> str:
    """The file as UTF-8 text (a leading BOM dropped), at most ``limit`` bytes."""
    return decode_utf8(read_bytes(path, limit, what), f"{what} {path}").removeprefix("\ufeff")


def loads_json(text: str | bytes, where: str, **kwargs: Any) -> Any:
    """``json.loads`` whose every failure (syntax, NaN-free decoding aside, nesting) is one line."""
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as e:
        raise ClBenchError(f"{where} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ClBenchError(f"{where} is nested too deeply to be data; is it the right file?") from None
    except UnicodeDecodeError as e:
        raise ClBenchError(f"{where} is not valid UTF-8 (byte {e.start})") from None


def read_json(path: Path, limit: int, what: str = "file", **kwargs: Any) -> Any:
    return loads_json(read_text(path, limit, what), f"{what} {path}", **kwargs)


def open_regular_binary(path: Path, what: str = "file") -> IO[bytes]:
    """An open binary handle on a regular file (no size cap: for streaming readers)."""
    fd, _ = _open_regular(Path(path), what)
    return os.fdopen(fd, "rb")


def gunzip(path: Path, limit: int, what: str = "file") -> bytes:
    """The decompressed content of a gzip file, refused as soon as it passes ``limit`` bytes
    (``GzipFile.read(n)`` inflates at most ``n`` bytes, so a bomb never fills memory)."""
    fd, _ = _open_regular(Path(path), what)
    try:
        with os.fdopen(fd, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
            data = _read_chunks(f, limit + 1)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ClBenchError(f"{what} {path} is not a valid gzip stream ({e}); re-download it") from None
    if len(data) > limit:
        raise ClBenchError(f"{what} {path} decompresses to more than {limit} bytes; refused before "
                           "inflating the rest (a decompression bomb?)")
    return data


def read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """One member, refused before decoding when its declared size or ratio is absurd, and cut off
    when the stream inflates past what it declared."""
    if info.file_size > limit:
        raise ClBenchError(f"{where}: member {info.filename!r} declares {info.file_size} bytes, more than "
                           f"the {limit}-byte limit; refused before decompressing it")
    if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        raise ClBenchError(f"{where}: member {info.filename!r} inflates {info.compress_size} bytes to "
                           f"{info.file_size} (more than {MAX_COMPRESSION_RATIO}:1); refused as a zip bomb")
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise ClBenchError(f"{where}: member {info.filename!r} is corrupt ({type(e).__name__}: {e})") from None
    if len(data) != info.file_size:
        raise ClBenchError(f"{where}: member {info.filename!r} is {len(data)}+ bytes but declares "
                           f"{info.file_size}; the zip is corrupt")
    return data
