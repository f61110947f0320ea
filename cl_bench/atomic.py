"""Atomic file writes: a reader sees the old file or the whole new one, never a half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Prove, before any work is done, that files can be created at ``path`` (a directory, made
    later when the first file is written): ``path`` if it exists, else its nearest existing
    ancestor, must be a directory in which a probe can be created (and is removed at once, so
    nothing is left behind). A file in the way, a read-only folder or filesystem, or an
    unwritable parent is one ClBenchError line."""
    from cl_bench.errors import ClBenchError

    path = Path(path).expanduser()
    probe_in = path
    while not probe_in.exists() and probe_in != probe_in.parent:
        if probe_in.is_symlink():
            raise ClBenchError(f"the {what} {path} goes through the dangling symlink {probe_in}; fix or remove it")
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        where = "" if probe_in == path else f" (its parent {probe_in} is a file)"
        raise ClBenchError(f"the {what} {path} is not a directory{where}; pass a directory")
    try:
        probe = tempfile.mkdtemp(dir=probe_in, prefix=".clbench-write-probe.")
        os.rmdir(probe)
    except OSError as e:
        raise ClBenchError(f"the {what} {path} is not writable ({e.strerror} in {probe_in}); "
                           "pass a writable directory") from None
    return path
