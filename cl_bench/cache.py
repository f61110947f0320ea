"""Content-addressed cache for trained checkpoints and extracted features.

Layout under the cache root (``--cache-dir``, else ``$CLBENCH_CACHE``, else
``~/.cache/cl_bench``)::

    checkpoints/<key>/encoder.safetensors + card.json   key = hash(recipe, arch, data, seed)
    features/<key[:2]>/<key>.npy                         key = hash(model, split, extractor)

Entries are written atomically and guarded by a file lock, so concurrent runs that need
the same entry compute it once and never read a half-written file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from filelock import FileLock

from cl_bench.atomic import write_atomic


def default_cache_dir() -> Path:
    env = os.environ.get("CLBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cl_bench"


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def checkpoint_dir(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def features_path(self, key: str) -> Path:
        return self.root / "features" / key[:2] / f"{key}.npy"

    @contextmanager
    def lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            yield

    def features(self, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """Return (features, was_cached); compute and store them on a miss."""
        path = self.features_path(key)
        with self.lock(path):
            if path.exists():
                try:
                    return np.load(path, allow_pickle=False), True
                except (ValueError, OSError):
                    path.unlink()  # corrupt entry: recompute
            feats = np.ascontiguousarray(compute(), dtype=np.float32)
            buf = io.BytesIO()
            np.save(buf, feats, allow_pickle=False)
            write_atomic(path, buf.getvalue())
            return feats, False
