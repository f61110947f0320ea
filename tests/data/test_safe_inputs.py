"""Paths from data files stay inside the dataset, image folders are walked safely, images are sized
before they are decoded, and checkpoint pickles may only name allow-listed globals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cl_bench.data.image_decode import MAX_IMAGE_PIXELS, open_image
from cl_bench.data.safe_paths import list_files, relpath_problem
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.unpickle_policy import refusal
from tests.hostile.formats import bomb_png, png


@pytest.mark.parametrize(("rel", "problem"), [
    ("a/b.jpg", None), ("Orientation", None), ("a..b/c", None), ("./a", None),
    ("../x", "climbs out"), ("a/../../x", "climbs out"), ("a\\..\\..\\x", "climbs out"),
    ("/etc/passwd", "absolute"), ("C:\\x", "absolute"), ("C:x", "absolute"), ("\\\\srv\\share\\x", "absolute"),
    ("", "empty"), ("a\0b", "NUL"),
])
def test_relpath_problems(rel: str, problem: str | None) -> None:
    found = relpath_problem(rel)
    assert (found is None) if problem is None else (problem in found), found


def test_list_files_walks_like_os_walk_and_refuses_loops(tmp_path: Path) -> None:
    for rel in ("b.png", "a/z.png", "a/c.png", "a/sub/x.png", "c/y.PNG"):
        png(tmp_path / "t" / rel, (4, 4))
    (tmp_path / "t" / "c" / "notes.txt").write_text("not an image")
    expected = []  # the reference: os.walk top-down with sorted names, as the loader always listed
    for dirpath, dirnames, filenames in os.walk(tmp_path / "t", followlinks=True):
        dirnames.sort()
        expected += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(".png")]
    assert list_files(tmp_path / "t", (".png",)) == expected
    (tmp_path / "t" / "a" / "back").symlink_to(tmp_path / "t")
    with pytest.raises(ClBenchError, match=r"a symlink loop or a duplicate link"):
        list_files(tmp_path / "t", (".png",))
    (tmp_path / "t" / "a" / "back").unlink()
    (tmp_path / "t" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ClBenchError, match="gone.png is a dangling symlink"):
        list_files(tmp_path / "t", (".png",))


def test_images_are_sized_before_decoding(tmp_path: Path) -> None:
    with open_image(png(tmp_path / "ok.png", (5, 3))) as im:
        assert im.size == (5, 3) and im.convert("RGB").getpixel((0, 0)) == (128, 128, 128)
    side = 10_000  # 10^8 pixels: past our cap, below PIL's own (2 x 89 M) alarm
    assert side * side > MAX_IMAGE_PIXELS
    b, c = bomb_png(tmp_path / "b.png", side), bomb_png(tmp_path / "c.png", 60_000)
    with pytest.raises(ClBenchError, match=r"declares 10000 x 10000 pixels .*refused before decoding"), open_image(b):
        pass
    with pytest.raises(ClBenchError, match=r"declares 3600000000 pixels"), open_image(c):
        pass
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClBenchError, match=r"cannot decode image .*cut.png"), open_image(tmp_path / "cut.png") as im:
        im.load()
    with pytest.raises(ClBenchError, match=r"cannot decode image <image bytes> \(UnidentifiedImageError"), \
            open_image(b"not an image"):
        pass


@pytest.mark.parametrize(("name", "refused"), [
    ("argparse.Namespace", False), ("omegaconf.dictconfig.DictConfig", False), ("builtins.set", False),
    ("__builtin__.set", False), ("copy_reg._reconstructor", False), ("collections.OrderedDict", False),
    ("pathlib.PosixPath", False), ("typing.Any", False), ("my_training_script.Config", False),
    ("builtins.eval", True), ("__builtin__.eval", True), ("__builtin__.getattr", True),
    ("commands.getoutput", True), ("popen2.popen3", True), ("exceptions.Exception", True),
    ("os.system", True), ("posix.system", True), ("nt.system", True), ("subprocess.Popen", True),
    ("shutil.rmtree", True), ("io.open", True), ("_io.FileIO", True), ("webbrowser.open", True),
    ("importlib.import_module", True), ("dill._dill._create_function", True), ("cloudpickle.cloudpickle.x", True),
])
def test_unpickling_allow_list(name: str, refused: bool) -> None:
    assert (refusal(name) is not None) == refused, refusal(name)
