"""Feature-cache entries streamed to disk in fixed-size chunks, readable without loading them.

One entry is a folder ``features/<key[:2]>/<key>/``::

    meta.json   {"format", "rows", "dim", "dtype", "chunk_rows", "ordered"}   (written first)
    order.npy   processing position -> row, only when rows are not extracted in row order
    data.bin    rows × dim values, row-major, no header, in ``dtype`` (float32, or float16 for fp16
                runs): ``np.memmap`` can map it (:meth:`StoredFeatures.memmap`)
    journal     one line "<chunk> <crc32>" per finished chunk, appended in order

Extraction hands its batches over in processing order; a chunk is ``chunk_rows`` consecutive
processing positions (a multiple of the batch size, so a chunk always ends on a batch
boundary). Rows go to ``data.bin`` with ``pwrite`` (page cache, never the process's memory), so
the peak RAM of extraction is one batch plus one chunk's checksum state, whatever the number of
rows. When a chunk is complete its bytes are flushed (``fdatasync``) and only then journaled.

A killed extraction leaves a journal of complete chunks: the next run re-reads those chunks,
checks their CRC-32 (a mismatch drops that chunk and every later one), and resumes at the first
missing chunk, so at most one chunk of work is lost and the features are the same bytes an
uninterrupted run writes. A complete entry is verified chunk by chunk (CRC-32) the first time a
process opens it; a corrupt entry is removed and extracted again.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cl_bench.atomic import write_atomic

FORMAT = "cl_bench.features.v2"
CHUNK_ROWS = 8192  # processing positions per chunk (rounded up to a multiple of the batch size)
READ_BLOCK_BYTES = 64 << 20  # what a streamed read holds at once
_VERIFIED: set[tuple[str, int]] = set()  # entries (path, data mtime) already checked in this process


class CorruptEntry(Exception):
    """An entry whose files disagree with its journal: remove it and extract again."""


def chunk_rows_for(batch_rows: int, target: int = CHUNK_ROWS) -> int:
    """``target`` rounded up to a multiple of ``batch_rows`` (a chunk ends on a batch boundary)."""
    b = max(1, int(batch_rows))
    return max(b, -(-int(target) // b) * b)


def _read_journal(path: Path) -> list[int]:
    """CRC of each journaled chunk, in order; a line without its newline (a kill mid-write) and
    everything after it are ignored."""
    if not path.exists():
        return []
    crcs: list[int] = []
    for i, line in enumerate(path.read_text().split("\n")[:-1]):  # the last piece has no newline
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(i) or not parts[1].isdigit():
            break
        crcs.append(int(parts[1]))
    return crcs


class _RowReader:
    """The reading surface shared by stored and in-memory features: [rows, dim] float32 rows."""

    rows: int
    dim: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.dim)

    def __len__(self) -> int:
        return self.rows

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 array :meth:`load` returns."""
        return self.rows * self.dim * 4

    def block(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def block_rows(self, budget_bytes: int = READ_BLOCK_BYTES) -> int:
        """Rows of one block of at most ``budget_bytes`` float32 bytes."""
        return max(1, budget_bytes // max(1, self.dim * 4))

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(start, float32 rows start:start+rows) over all rows."""
        step = rows or self.block_rows()
        for start in range(0, self.rows, step):
            yield start, self.block(start, start + step)

    def load(self) -> np.ndarray:
        """Every row in memory as float32 [rows, dim]."""
        return self.block(0, self.rows)


class StoredFeatures(_RowReader):
    """A complete entry: [rows, dim] features read in blocks, never more than asked for."""

    def __init__(self, folder: Path, meta: dict, order: np.ndarray | None) -> None:
        self.folder = folder
        self.rows, self.dim = int(meta["rows"]), int(meta["dim"])
        self.dtype = np.dtype(meta["dtype"])
        self.chunk_rows = int(meta["chunk_rows"])
        self.order = order
        self.path = folder / "data.bin"

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32 (a fresh array; nothing stays mapped)."""
        start, stop = max(0, start), min(self.rows, stop)
        n = max(0, stop - start)
        raw = np.empty((n, self.dim), dtype=self.dtype)
        if n:
            with open(self.path, "rb") as f:
                f.seek(start * self.dim * self.dtype.itemsize)
                if f.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                    raise CorruptEntry(f"{self.path} is shorter than its {self.rows} rows")
        return raw if raw.dtype == np.float32 else raw.astype(np.float32)

    def memmap(self) -> np.memmap:
        """The entry as a read-only ``np.memmap`` [rows, dim] in its stored dtype (for random access;
        pages it touches count in the process's RSS, which :meth:`block` reads never do)."""
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows, self.dim))

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order) as float32, read block by block."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.dim), dtype=np.float32)
        step = self.block_rows()
        for start in range(0, self.rows, step):
            hit = np.flatnonzero((index >= start) & (index < start + step))
            if len(hit):
                out[hit] = self.block(start, start + step)[index[hit] - start]
        return out

    def _chunk_bytes(self, c: int) -> bytes:
        """The bytes of chunk ``c`` in processing order, as they were checksummed when written."""
        lo, hi = c * self.chunk_rows, min(self.rows, (c + 1) * self.chunk_rows)
        row_bytes = self.dim * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.order is None:
                out = os.pread(fd, (hi - lo) * row_bytes, lo * row_bytes)
            else:
                out = b"".join(os.pread(fd, row_bytes, int(r) * row_bytes) for r in self.order[lo:hi])
        finally:
            os.close(fd)
        if len(out) != (hi - lo) * row_bytes:
            raise CorruptEntry(f"{self.path} is shorter than its {self.rows} rows")
        return out

    def verify(self, crcs: list[int]) -> None:
        """Raise :class:`CorruptEntry` unless every chunk's bytes have their journaled CRC-32."""
        for c, want in enumerate(crcs):
            if zlib.crc32(self._chunk_bytes(c)) != want:
                raise CorruptEntry(f"chunk {c} of {self.folder} does not match its checksum")


class ArrayFeatures(_RowReader):
    """In-memory features with the reading surface of :class:`StoredFeatures` (uncached models)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.asarray(array, dtype=np.float32)
        self.rows, self.dim = self.array.shape

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.array[max(0, start) : stop]

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.array[np.asarray(index, dtype=np.int64)]

    def load(self) -> np.ndarray:
        return self.array


Features = StoredFeatures | ArrayFeatures


class EntryWriter:
    """Writes (or resumes) one entry; see the module docstring for the protocol."""

    def __init__(self, folder: Path, rows: int, chunk_rows: int, order: np.ndarray | None,
                 dtype: np.dtype | str = np.float32) -> None:
        self.folder, self.rows, self.chunk_rows = folder, int(rows), int(chunk_rows)
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.n_chunks = -(-self.rows // self.chunk_rows)
        self.dim: int | None = None
        self.crcs: list[int] = []
        self._fd: int | None = None
        self._crc = 0
        self._filled = 0  # positions written into the current chunk
        self._resume()

    # --- state on disk ------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"format": FORMAT, "rows": self.rows, "dim": self.dim, "dtype": self.dtype.name,
                "chunk_rows": self.chunk_rows, "ordered": self.order is not None}

    def _resume(self) -> None:
        """Keep the journaled chunks that still check out; anything else starts afresh."""
        meta_path = self.folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            same = (meta.get("format") == FORMAT and meta["rows"] == self.rows
                    and meta["chunk_rows"] == self.chunk_rows and meta["dtype"] == self.dtype.name
                    and meta.get("ordered") == (self.order is not None))
            if same and self.order is not None:
                same = np.array_equal(np.load(self.folder / "order.npy", allow_pickle=False), self.order)
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        self.dim = int(meta["dim"])
        crcs = _read_journal(self.folder / "journal")[: self.n_chunks]
        view = StoredFeatures(self.folder, self._meta(), self.order)
        for c, want in enumerate(crcs):
            try:
                ok = zlib.crc32(view._chunk_bytes(c)) == want
            except CorruptEntry:
                ok = False
            if not ok:
                crcs = crcs[:c]
                break
        self.crcs = crcs
        self._write_journal()  # drop a torn or unverified tail

    def _write_journal(self) -> None:
        if self.dim is not None:
            write_atomic(self.folder / "journal", "".join(f"{i} {c}\n" for i, c in enumerate(self.crcs)).encode())

    @property
    def start(self) -> int:
        """The first processing position still to extract (a chunk boundary)."""
        return len(self.crcs) * self.chunk_rows

    @property
    def complete(self) -> bool:
        return self.dim is not None and len(self.crcs) == self.n_chunks

    def _open(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.order is not None:
                tmp = self.folder / "order.tmp.npy"
                np.save(tmp, self.order, allow_pickle=False)
                os.replace(tmp, self.folder / "order.npy")
            write_atomic(self.folder / "meta.json", json.dumps(self._meta()).encode())
        elif dim != self.dim:
            raise ValueError(f"batch of width {dim} for an entry of width {self.dim}")
        if self._fd is None:
            self._fd = os.open(self.folder / "data.bin", os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(self._fd, self.rows * dim * self.dtype.itemsize)

    # --- writing --------------------------------------------------------------------------------
    def write(self, batch: np.ndarray) -> None:
        """The next rows in processing order ([n, dim]); must not cross the end of the entry."""
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if batch.ndim != 2:
            raise ValueError(f"features must be [n, dim], got shape {batch.shape}")
        self._open(batch.shape[1])
        pos = self.start + self._filled
        while len(batch):
            take = min(len(batch), self.chunk_rows - self._filled, self.rows - pos)
            if take <= 0:
                raise ValueError(f"more than {self.rows} rows handed to a feature entry")
            part, batch = batch[:take], batch[take:]
            self._put(pos, part)
            self._crc = zlib.crc32(part.tobytes(), self._crc)
            self._filled += take
            pos += take
            if self._filled == self.chunk_rows or pos == self.rows:
                self._seal()

    def _put(self, pos: int, part: np.ndarray) -> None:
        row_bytes = part.shape[1] * self.dtype.itemsize
        if self.order is None:
            os.pwrite(self._fd, part.tobytes(), pos * row_bytes)  # type: ignore[arg-type]
            return
        for k, row in enumerate(self.order[pos : pos + len(part)]):
            os.pwrite(self._fd, part[k].tobytes(), int(row) * row_bytes)  # type: ignore[arg-type]

    def _seal(self) -> None:
        os.fdatasync(self._fd)  # type: ignore[arg-type]
        self.crcs.append(self._crc)
        with open(self.folder / "journal", "a") as j:
            j.write(f"{len(self.crcs) - 1} {self._crc}\n")
            j.flush()
            os.fsync(j.fileno())
        self._crc, self._filled = 0, 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self) -> StoredFeatures:
        """The complete entry (every chunk written and journaled)."""
        self.close()
        if not self.complete:
            done = self.start + self._filled
            raise ValueError(f"extraction stopped after {done} of {self.rows} rows")
        return StoredFeatures(self.folder, self._meta(), self.order)


def open_entry(folder: Path) -> StoredFeatures | None:
    """The complete, verified entry in ``folder``; None if absent or unfinished.

    Raises :class:`CorruptEntry` when the files disagree with the journal.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        if meta.get("format") != FORMAT:
            raise CorruptEntry(f"{folder} has format {meta.get('format')!r}, not {FORMAT}")
        rows, chunk = int(meta["rows"]), int(meta["chunk_rows"])
        crcs = _read_journal(folder / "journal")
        if len(crcs) < -(-rows // chunk):
            return None
        order = np.load(folder / "order.npy", allow_pickle=False) if meta.get("ordered") else None
        entry = StoredFeatures(folder, meta, order)
        size = entry.path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptEntry(f"{folder}: {e}") from None
    if size != rows * entry.dim * entry.dtype.itemsize:
        raise CorruptEntry(f"{entry.path} holds {size} bytes, not {rows} rows of {entry.dim}")
    stamp = (str(folder), entry.path.stat().st_mtime_ns)
    if stamp not in _VERIFIED:
        entry.verify(crcs)
        _VERIFIED.add(stamp)
    return entry
