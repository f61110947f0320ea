"""Read a pickle that may only hold plain data: dicts, lists, tuples, numbers, bytes and numpy arrays.

Datasets such as CIFAR's "python version" ship as pickles. ``pickle.load`` would import and
call whatever the file names, so this unpickler resolves exactly the handful of globals that
rebuild a numpy array (``_reconstruct``, ``ndarray``, ``dtype``) and the ``_codecs.encode``
that Python 3 writes for ``bytes`` under protocol 2 (restricted to the latin-1 codec). Any
other global - a class, ``os.system``, ``builtins.eval`` - is refused before anything runs,
with a ClBenchError naming it. Object arrays (dtype ``O``) are refused too.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` limited to what protocol-2 pickles of ``bytes`` use."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"only numpy.ndarray may be rebuilt, not {subtype!r}")
    return _numpy_reconstruct(np.ndarray, shape, dtype)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("ascii")
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype spec must be a string, got {type(spec).__name__}")
    dt = np.dtype(spec, bool(align), True)  # a copy: BUILD then sets its state, never a shared dtype
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy object arrays (dtype {spec!r}) are not allowed")
    return dt


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` knows only numpy array reconstruction and latin-1 bytes."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _check_arrays(obj: Any, depth: int = 0) -> None:
    """Refuse arrays whose dtype holds Python objects anywhere in the loaded structure."""
    if depth > 32:
        raise pickle.UnpicklingError("structure nested deeper than 32 levels")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("numpy object arrays are not allowed")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_arrays(k, depth + 1)
            _check_arrays(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_arrays(v, depth + 1)


def loads_restricted(data: bytes, source: str, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` allowing only plain data and numpy arrays; errors name ``source``.

    ``encoding='bytes'`` keeps Python 2 ``str`` objects as ``bytes`` (how CIFAR's files read).
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
        _check_arrays(obj)
    except pickle.UnpicklingError as e:
        raise ClBenchError(
            f"{source}: refused to unpickle: {e} (only dicts, lists, numbers, bytes and numpy arrays "
            "are read); use the dataset's binary version or a fresh download"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise ClBenchError(
            f"{source}: not a readable pickle ({type(e).__name__}: {e}); re-download it"
        ) from None
    return obj


def load_restricted(path: Path, encoding: str = "bytes") -> Any:
    """``loads_restricted`` of a file's bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ClBenchError(f"{path}: cannot read ({e.strerror}); check the file") from None
    return loads_restricted(data, str(path), encoding=encoding)
