"""Which Python globals a checkpoint's pickle may name: an allow-list, Python-2 names included.

Released checkpoints are read with ``torch.load(weights_only=True)``; names outside torch's own
allow-list (and numpy's array/scalar names) are replaced by *inert placeholders* that never
import or call anything (:mod:`cl_bench.models.weights.released_formats`). A placeholder is only allowed
where a checkpoint plausibly stores data:

- classes of third-party packages (omegaconf configs, Lightning's ``AttributeDict``, mmengine's
  message hubs, a training script's own dataclasses ...): stood in for, never imported;
- from the standard library, only the data types on :data:`STDLIB_DATA` (``argparse.Namespace``,
  ``collections.defaultdict``, ``pathlib`` paths, ``datetime`` values, the plain builtins ...).

Every other standard-library global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``,
``shutil.rmtree``, ``io.open`` — exists to run code, so the file is refused outright. Python 2
names are first mapped to their Python 3 modules the way ``pickle`` itself maps them
(``__builtin__`` -> ``builtins``, ``commands`` -> ``subprocess``, ``copy_reg`` -> ``copyreg`` ...),
and Python-2-only modules (``exceptions``, ``popen2``, ``new`` ...) count as standard library,
so an old pickle cannot slip a code-running name past the list under its old spelling.
"""

from __future__ import annotations

import _compat_pickle
import sys

# Standard-library globals that are data (safe to stand in for): module -> names ("*": any).
STDLIB_DATA: dict[str, frozenset[str]] = {
    "argparse": frozenset({"Namespace"}),
    "types": frozenset({"SimpleNamespace"}),
    "typing": frozenset({"*"}),
    "functools": frozenset({"partial"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "Counter", "deque"}),
    "pathlib": frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"}),
    "pathlib._local": frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID"}),
    "enum": frozenset({"Enum", "IntEnum", "Flag", "IntFlag"}),
    "re": frozenset({"_compile", "Pattern"}),
    "copyreg": frozenset({"_reconstructor", "__newobj__", "__newobj_ex__"}),
    "builtins": frozenset({"object", "dict", "list", "tuple", "set", "frozenset", "slice", "complex", "bytearray",
                           "bytes", "str", "int", "float", "bool", "range", "NoneType", "Ellipsis"}),
}
# Python 2 modules with no Python 3 spelling in pickle's own mapping: standard library all the same.
PY2_STDLIB = frozenset({
    "exceptions", "popen2", "new", "sets", "md5", "sha", "posixfile", "user", "imputil", "rexec", "Bastion",
    "compiler", "dircache", "statvfs", "mimetools", "rfc822", "htmllib", "sgmllib", "mhlib", "mimify",
    "multifile", "sunaudio", "toaiff", "commands", "cPickle", "cStringIO", "copy_reg", "__builtin__",
    "thread", "dummy_thread", "urllib2", "httplib", "SocketServer", "Queue", "UserDict", "UserList", "UserString",
})
# Third-party modules that exist to serialise and run code: refused, never stood in for.
CODE_RUNNERS = frozenset({"dill", "cloudpickle", "joblib", "torch._dynamo", "IPython"})


def py3_name(module: str, name: str) -> tuple[str, str]:
    """``(module, name)`` as Python 3 pickle reads a protocol-2 reference to it."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_stdlib(module: str) -> bool:
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in PY2_STDLIB or module in _compat_pickle.IMPORT_MAPPING


def refusal(dotted: str) -> str | None:
    """Why the global ``dotted`` (``module.name``) may not even be stood in for; None when it may."""
    module, _, name = dotted.rpartition(".")
    if not module:
        return f"global {dotted!r} names no module"
    mod3, name3 = py3_name(module, name)
    if any(mod3 == r or mod3.startswith(r + ".") for r in CODE_RUNNERS):
        return f"global {dotted} (its package serialises code)"
    if not is_stdlib(module) and not is_stdlib(mod3):
        return None  # a third-party class: an inert placeholder
    allowed = STDLIB_DATA.get(mod3, frozenset())
    if "*" in allowed or name3 in allowed:
        return None
    spelled = f" (Python 3: {mod3}.{name3})" if (mod3, name3) != (module, name) else ""
    return f"global {dotted}{spelled}"
