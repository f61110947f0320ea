"""Paths that come from data files, and folders of images, kept inside the dataset.

- :func:`safe_relpath` / :data:`SafeRelPath`: a path *written inside* a data file (a COCO
  ``file_name``, an MMEB ``qry_img_path``, an MMVP ``type``, a VOC image id) must be relative and
  stay below the folder it is joined to: no absolute path, no ``..`` component, no NUL byte.
  (Checked on the text, so a dataset folder may itself be a symlink to another disk.)
- :func:`list_files`: the files below an image folder, following symlinked folders once each —
  a symlink loop (or a folder reached twice) is an error, not an endless walk — with a dangling
  symlink or a FIFO / device among the images an error naming it (a FIFO would block the
  decoder forever).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

from pydantic import AfterValidator

from cl_bench.bounded_io import describe_kind
from cl_bench.errors import ClBenchError


def relpath_problem(rel: str) -> str | None:
    """What makes ``rel`` unsafe to join below a folder, or None."""
    if not isinstance(rel, str) or not rel.strip():
        return "is empty"
    if "\0" in rel:
        return "contains a NUL byte"
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        return "is an absolute path"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return "climbs out of its folder with '..'"
    return None


def safe_relpath(rel: str, where: str) -> str:
    """``rel`` if it is a relative path that stays inside its folder; ClBenchError naming ``where``."""
    problem = relpath_problem(rel)
    if problem:
        raise ClBenchError(f"{where}: path {rel!r} {problem}; paths in a dataset's files must stay inside "
                           "the dataset folder")
    return rel


def _check(rel: str) -> str:
    problem = relpath_problem(rel)
    if problem:
        raise ValueError(f"path {rel!r} {problem} (paths in a dataset's files must stay inside its folder)")
    return rel


def _check_or_empty(rel: str) -> str:
    return rel if rel == "" else _check(rel)


SafeRelPath = Annotated[str, AfterValidator(_check)]
OptionalRelPath = Annotated[str, AfterValidator(_check_or_empty)]  # "" = no file


def check_data_file(path: Path, what: str = "file") -> os.stat_result:
    """``path``'s stat if it is (or links to) a regular file; a dangling symlink, a loop or a
    FIFO/device is one ClBenchError line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        kind = "a dangling symlink" if os.path.islink(path) else "missing"
        raise ClBenchError(f"{what} {path} is {kind}; fix or remove it") from None
    except OSError as e:
        raise ClBenchError(f"{what} {path} cannot be read ({e.strerror}); fix or remove it") from None
    if not stat.S_ISREG(st.st_mode):
        raise ClBenchError(f"{what} {path} is {describe_kind(st.st_mode)}, not a regular file; remove it")
    return st


def list_files(folder: Path, suffixes: tuple[str, ...], what: str = "image") -> list[Path]:
    """Files under ``folder`` whose lower-cased name ends in one of ``suffixes``, in ``os.walk``'s
    top-down order with names sorted (a folder's files, then each sub-folder in turn); symlinked
    folders are followed, each real folder once."""
    found: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}
    stack = [Path(folder)]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
        except OSError as e:
            raise ClBenchError(f"folder {current} cannot be read ({e.strerror}); a symlink loop or a dangling "
                               "link? fix or remove it") from None
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise ClBenchError(f"folder {current} is {seen[key]} again (a symlink loop or a duplicate link); "
                               "each image folder may be reached once")
        seen[key] = current
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as e:
            raise ClBenchError(f"folder {current} cannot be listed ({e.strerror})") from None
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(path)
            elif entry.name.lower().endswith(suffixes):
                check_data_file(path, what)
                found.append(path)
        stack.extend(reversed(subdirs))
    return found
