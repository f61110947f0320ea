"""Content-addressed cache for trained checkpoints and extracted features.

Layout under the cache root (``--cache-dir``, else ``$CLBENCH_CACHE``, else
``~/.cache/cl_bench``)::

    checkpoints/<key>/encoder.safetensors + card.json   key = hash(recipe, arch, data, seed)
    features/<key[:2]>/<key>/                            key = hash(model, split, extractor, precision)

Feature entries are chunked, memory-light and resumable (:mod:`cl_bench.feature_store`).
Entries are written atomically (checkpoints) or journaled chunk by chunk (features) and guarded
by a file lock, so concurrent runs that need the same entry compute it once and never read a
half-written one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from filelock import FileLock

from cl_bench.feature_store import CorruptEntry, EntryWriter, StoredFeatures, chunk_rows_for, open_entry


_ROOT: ContextVar[Path | None] = ContextVar("clbench_cache_root", default=None)


def default_cache_dir() -> Path:
    """The cache root: the innermost :func:`cache_root` block's, else ``$CLBENCH_CACHE``, else
    ``~/.cache/cl_bench``. Everything cached lives under it: checkpoints, features, generated data,
    frozen text vectors."""
    override = _ROOT.get()
    if override is not None:
        return override
    env = os.environ.get("CLBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cl_bench"


@contextmanager
def cache_root(path: Path | None) -> Iterator[None]:
    """Within the block every cache path is under ``path`` (``--cache-dir``); None changes nothing.
    Scoped to the block (and the current context), so in-process callers keep their own root."""
    if path is None:
        yield
        return
    token = _ROOT.set(Path(path).expanduser().resolve())
    try:
        yield
    finally:
        _ROOT.reset(token)


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def checkpoint_dir(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def features_dir(self, key: str) -> Path:
        return self.root / "features" / key[:2] / key

    @contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            yield

    def stored_features(self, key: str, extract: Callable[[Path], StoredFeatures]) -> tuple[StoredFeatures, bool]:
        """(entry, was_cached): the complete entry of ``key``, else ``extract(folder)``'s, which
        resumes whatever a killed extraction left in ``folder``. A corrupt entry is removed first."""
        folder = self.features_dir(key)
        with self.lock(folder):
            try:
                entry = open_entry(folder)
            except CorruptEntry:
                shutil.rmtree(folder, ignore_errors=True)
                entry = None
            if entry is not None:
                return entry, True
            return extract(folder), False

    def features(self, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """Return (features, was_cached) as one float32 array; compute and store them on a miss."""
        def whole(folder: Path) -> StoredFeatures:
            feats = np.ascontiguousarray(compute(), dtype=np.float32)
            writer = EntryWriter(folder, len(feats), chunk_rows_for(max(1, len(feats))), None)
            writer.write(feats)
            return writer.finish()

        entry, hit = self.stored_features(key, whole)
        return entry.load(), hit
