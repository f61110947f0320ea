"""Read a pickle that may only hold plain data: dicts, lists, tuples, numbers, bytes and numpy arrays.

Datasets such as CIFAR's "python version" ship as pickles. ``pickle.load`` would import and
call whatever the file names, so this unpickler resolves exactly the names a pickled numpy
array uses (``_reconstruct``, ``ndarray``, ``dtype``) and the ``_codecs.encode`` that Python 3
writes for ``bytes`` under protocol 2 (latin-1 only, plus ``bytes()`` for an empty array) — and none of them to the real numpy
object. ``_reconstruct`` and ``dtype`` return inert *sketches* that only record the shape,
dtype code, byte order and raw bytes the pickle's BUILD hands them; each is validated (a plain
numeric or bytes dtype, a non-negative shape, exactly ``prod(shape) × itemsize`` bytes) and the
array is then built here with ``np.frombuffer``. The pickle never holds a numpy object whose
state it could set. Any other global — a class, ``os.system``, ``builtins.eval`` — is refused
before anything runs, with a ClBenchError naming it; so are object arrays, structured dtypes
and sketches the pickle never completed.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
# Plain dtype codes a dataset array may have: bool, (u)int, float, complex, fixed-size bytes / str.
_DTYPE_CODE = re.compile(r"^[<>|=]?(b1|\?|[iu][1248]|f[248]|c(8|16)|[SUV]\d{1,6})$")
_MAX_DIMS = 32
_MAX_DEPTH = 64
MAX_PICKLE_BYTES = 2**31  # CIFAR-100's train pickle is ~155 MB


class _NdarrayType:
    """Stands for the name ``numpy.ndarray`` inside the pickle (only ``_reconstruct`` accepts it)."""

    __slots__ = ()  # a BUILD on it fails: the pickle cannot set state on the sentinel


_NDARRAY = _NdarrayType()


class DtypeSketch:
    """A dtype the pickle asked for: its code and the byte order its BUILD state names."""

    def __init__(self, code: str) -> None:
        if not _DTYPE_CODE.match(code):
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain numeric or bytes dtype")
        self.code, self.byteorder = code, None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or state[0] not in (3, 4):
            raise pickle.UnpicklingError("numpy dtype state is not a version 3/4 tuple")
        byteorder, subarray, names, fields = state[1:5]
        if isinstance(byteorder, bytes):
            byteorder = byteorder.decode("latin1")
        if byteorder not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"numpy dtype byte order {byteorder!r} is not one of < > | =")
        if subarray is not None or names is not None or fields is not None:
            raise pickle.UnpicklingError("structured or sub-array numpy dtypes are not allowed")
        self.byteorder = byteorder

    def build(self) -> np.dtype:
        dt = np.dtype(self.code)
        if self.byteorder in ("<", ">"):
            dt = dt.newbyteorder(self.byteorder)
        return dt


class ArraySketch:
    """An array the pickle asked for: shape, dtype and raw bytes, checked, built by us."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise pickle.UnpicklingError("numpy array state is not (1, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, raw = state
        if not isinstance(shape, tuple) or len(shape) > _MAX_DIMS or not all(
                type(s) is int and s >= 0 for s in shape):
            raise pickle.UnpicklingError(f"numpy array shape {shape!r} is not a tuple of non-negative ints")
        if not isinstance(dtype, DtypeSketch):
            raise pickle.UnpicklingError("numpy array dtype was not built by numpy.dtype")
        if isinstance(raw, str):  # a Python 2 str unpickled with encoding="latin1"
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"numpy array data is a {type(raw).__name__}, not bytes "
                                         "(object arrays are not allowed)")
        dt = dtype.build()
        expected = math.prod(shape) * dt.itemsize
        if len(raw) != expected:
            raise pickle.UnpicklingError(f"numpy array of shape {shape} and dtype {dt.str} needs {expected} "
                                         f"bytes, the pickle holds {len(raw)}")
        self.array = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if fortran else "C").copy()


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` limited to what protocol-2 pickles of ``bytes`` use."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` with no argument (anything else is refused: bytes(n) would allocate n bytes)."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes is allowed only as bytes() (empty)")
    return b""


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> ArraySketch:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"only numpy.ndarray may be rebuilt, not {subtype!r}")
    return ArraySketch()


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> DtypeSketch:
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype spec must be a string, got {type(spec).__name__}")
    return DtypeSketch(spec)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` knows only the sketches above and latin-1 bytes."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _empty_bytes  # how protocol 2 writes an empty array's data
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _materialize(obj: Any, depth: int = 0) -> Any:
    """The loaded structure with every sketch replaced by its array (and anything else inert refused)."""
    if depth > _MAX_DEPTH:
        raise pickle.UnpicklingError(f"structure nested deeper than {_MAX_DEPTH} levels")
    if isinstance(obj, ArraySketch):
        if obj.array is None:
            raise pickle.UnpicklingError("a numpy array was started but never given its data")
        return obj.array
    if isinstance(obj, (DtypeSketch, _NdarrayType)):
        raise pickle.UnpicklingError("a bare numpy dtype/type is not data")
    if isinstance(obj, dict):
        return {_materialize(k, depth + 1): _materialize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray)):
        return obj
    raise pickle.UnpicklingError(f"a {type(obj).__name__} is not plain data")


def loads_restricted(data: bytes, source: str, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` allowing only plain data and numpy arrays; errors name ``source``.

    ``encoding='bytes'`` keeps Python 2 ``str`` objects as ``bytes`` (how CIFAR's files read).
    """
    try:
        return _materialize(RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load())
    except pickle.UnpicklingError as e:
        raise ClBenchError(
            f"{source}: refused to unpickle: {e} (only dicts, lists, numbers, bytes and numpy arrays "
            "are read); use the dataset's binary version or a fresh download"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError,
            RecursionError, MemoryError, OverflowError) as e:
        raise ClBenchError(
            f"{source}: not a readable pickle ({type(e).__name__}: {e}); re-download it"
        ) from None


def load_restricted(path: Path, encoding: str = "bytes") -> Any:
    """``loads_restricted`` of a file's bytes (a regular file, at most ``MAX_PICKLE_BYTES``)."""
    from cl_bench.bounded_io import read_bytes

    return loads_restricted(read_bytes(Path(path), MAX_PICKLE_BYTES, "pickle"), str(path), encoding=encoding)
