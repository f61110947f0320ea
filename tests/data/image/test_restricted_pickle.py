"""The restricted unpickler builds arrays itself: same arrays as numpy's own unpickling of trusted
data, and a hostile state never reaches a numpy object."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cl_bench.data.image.restricted_pickle import ArraySketch, RestrictedUnpickler, loads_restricted
from cl_bench.errors import ClBenchError
from tests.hostile.formats import pickle_array_claiming


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.arange(12, dtype=">i4").reshape(3, 4),  # big-endian
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    np.array([b"ab", b"c"], dtype="S2"),
    np.array([True, False]),
    np.zeros((0, 5), np.float32),
], ids=["u1-3d", "big-endian-i4", "fortran-f8", "bytes-S2", "bool", "empty"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_same_arrays_as_numpy_unpickling(array: np.ndarray, protocol: int) -> None:
    blob = pickle.dumps({b"x": array, b"n": [1, 2]}, protocol=protocol)
    ref = pickle.loads(blob)  # trusted: written right here
    ours = loads_restricted(blob, "t")
    assert ours[b"n"] == [1, 2]
    np.testing.assert_array_equal(ours[b"x"], ref[b"x"])
    # numpy itself returns a byte-swapped array as native; we keep the file's byte order: same values
    assert ours[b"x"].dtype.newbyteorder("=") == ref[b"x"].dtype.newbyteorder("=")
    assert ours[b"x"].shape == ref[b"x"].shape
    assert ours[b"x"].flags.owndata and ours[b"x"].flags.writeable  # a fresh array, built by us


def test_the_pickle_never_gets_a_numpy_object() -> None:
    u = RestrictedUnpickler(__import__("io").BytesIO(b""))
    assert u.find_class("numpy", "ndarray") is not np.ndarray
    assert isinstance(u.find_class("numpy.core.multiarray", "_reconstruct")(
        u.find_class("numpy", "ndarray"), (0,), b"b"), ArraySketch)
    for module, name in (("numpy", "frombuffer"), ("numpy.core.multiarray", "scalar"), ("builtins", "getattr"),
                         ("__builtin__", "eval"), ("commands", "getoutput"), ("copy_reg", "_reconstructor")):
        with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
            u.find_class(module, name)


@pytest.mark.parametrize(("blob", "why"), [
    (pickle_array_claiming((2, 3), bytes(5)), r"needs 6 bytes, the pickle holds 5"),
    (pickle_array_claiming((2**31 - 1,) * 2, bytes(6)), r"needs 4611686014132420609 bytes"),
    (pickle_array_claiming((-1, 6), bytes(6)), r"is not a tuple of non-negative ints"),
    (pickle_array_claiming((2, 3), bytes(6), b"O"), r"dtype 'O' is not a plain numeric"),
    (pickle_array_claiming((2, 3), bytes(6), b"V8,i4"), r"is not a plain numeric"),
    (pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=2), r"dtype 'O8?' is not a plain numeric"),
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", r"allowed only as bytes\(\) \(empty\)"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R.",
     r"started but never given its data"),
    (b"\x80\x02cnumpy\ndtype\nU\x02u1\x89\x88\x87R.", r"a bare numpy dtype/type is not data"),
])
def test_hostile_array_states_are_refused(blob: bytes, why: str) -> None:
    with pytest.raises(ClBenchError, match=why):
        loads_restricted(blob, "t")
