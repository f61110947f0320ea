"""A deterministic procedural world of street-like scenes with shaped, coloured objects.

Public API (also used by the multimodal captions/MMVP-style generators):

- :func:`generate_scenes(n, seed, size, ...) -> list[Scene]`: scene ``i`` depends only on
  ``(seed, i)`` and the generator options, never on ``n``.
- :func:`render(scene) -> (image uint8 [H, W, 3], visible instance masks bool [K, H, W])`.
- :func:`render_label_ids(scene) -> uint8 [H, W]`: the Cityscapes labelIds of every pixel.
- :meth:`Scene.to_json` / :func:`scene_from_json`: the description kept beside each image
  (objects with shape, colour, size, position, box, occlusion, truncation; relations).

A scene is a background layout (sky, building, vegetation, sidewalk, road, the ego-vehicle
strip: real Cityscapes labelIds), background clutter (poles, static objects, guard rails,
parking patches, caravans: some evaluated classes, some that map to 255) and 1..max objects
drawn back to front, so later objects occlude earlier ones. An object is one of
:data:`SHAPES` (the detection classes) in one of :data:`COLOURS`; a "crowd" is a cluster of
tiny same-shape objects annotated as one region (COCO ``iscrowd=1``, VOC ``difficult=1``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "green": (30, 190, 60), "blue": (35, 75, 230), "yellow": (240, 215, 30),
    "magenta": (210, 40, 210), "cyan": (30, 205, 215), "orange": (245, 135, 25), "white": (250, 250, 250),
}
SIZE_RANGES: dict[str, tuple[float, float]] = {  # object radius as a fraction of min(H, W)
    "small": (0.06, 0.10), "medium": (0.10, 0.16), "large": (0.16, 0.24),
}
UPRIGHT_JITTER = 15.0  # degrees an upright object may lean (generate_scene's ``upright``)
# Cityscapes labelIds (cityscapesScripts labels.py) that the objects are painted with.
SHAPE_LABEL_IDS: dict[str, int] = {
    "circle": 26, "square": 27, "triangle": 20, "star": 24, "cross": 33, "diamond": 19,
}  # car, truck, traffic sign, person, bicycle, traffic light
# Background regions: (name, labelId, base colour)
REGIONS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "sky": (23, (120, 160, 200)), "building": (11, (110, 100, 95)), "vegetation": (21, (70, 105, 60)),
    "terrain": (22, (140, 130, 90)), "wall": (12, (125, 120, 115)), "sidewalk": (8, (150, 140, 150)),
    "road": (7, (85, 85, 90)), "ego vehicle": (1, (30, 30, 35)), "ground": (6, (105, 95, 85)),
}
# Clutter kinds: (labelId, colour); pole (17) is evaluated, the others map to trainId 255.
CLUTTER: dict[str, tuple[int, tuple[int, int, int]]] = {
    "pole": (17, (150, 150, 140)), "static": (4, (95, 80, 120)), "guard rail": (14, (170, 170, 175)),
    "parking": (9, (160, 120, 130)), "caravan": (29, (100, 130, 120)),
}


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    center: tuple[float, float]  # (x, y) pixels
    radius: float
    rotation: float  # degrees
    crowd: bool = False
    parts: list[tuple[float, float, float]] = field(default_factory=list)  # crowd members (x, y, r)
    # filled in by generate_scenes from the rendered masks:
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # visible extent, xyxy 0-based, x1/y1 exclusive
    area: int = 0  # visible pixels
    occlusion: float = 0.0  # fraction of the in-image pixels hidden by later objects
    truncated: bool = False  # the shape extends past the image border

    def polygons(self) -> list[list[tuple[float, float]]]:
        if self.crowd:
            return [shape_polygon(self.shape, x, y, r, self.rotation) for x, y, r in self.parts]
        return [shape_polygon(self.shape, self.center[0], self.center[1], self.radius, self.rotation)]


@dataclass
class Scene:
    scene_id: str
    height: int
    width: int
    noise_seed: int
    regions: list[tuple[str, list[tuple[float, float]]]]  # background polygons, drawn in order
    clutter: list[tuple[str, list[tuple[float, float]]]]
    objects: list[SceneObject]
    relations: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for o in d["objects"]:
            o["label_id"] = SHAPE_LABEL_IDS[o["shape"]]
        return d


def scene_from_json(d: dict[str, Any]) -> Scene:
    objs = []
    for o in d["objects"]:
        o = {k: v for k, v in o.items() if k != "label_id"}
        o["center"] = tuple(o["center"])
        o["bbox"] = tuple(o["bbox"])
        o["parts"] = [tuple(p) for p in o["parts"]]
        objs.append(SceneObject(**o))
    return Scene(
        scene_id=d["scene_id"], height=d["height"], width=d["width"], noise_seed=d["noise_seed"],
        regions=[(n, [tuple(p) for p in poly]) for n, poly in d["regions"]],
        clutter=[(n, [tuple(p) for p in poly]) for n, poly in d["clutter"]],
        objects=objs, relations=list(d["relations"]),
    )


def shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` centred at (cx, cy) with circumradius ``r``, rotated by ``rotation`` degrees."""
    if shape == "circle":
        pts = [(r, 2 * math.pi * k / 32) for k in range(32)]
    elif shape == "square":
        pts = [(r, math.pi / 4 + math.pi / 2 * k) for k in range(4)]
    elif shape == "triangle":
        pts = [(r, -math.pi / 2 + 2 * math.pi * k / 3) for k in range(3)]
    elif shape == "star":
        pts = [(r if k % 2 == 0 else 0.45 * r, -math.pi / 2 + math.pi * k / 5) for k in range(10)]
    elif shape == "diamond":
        xy = [(0.0, -r), (0.6 * r, 0.0), (0.0, r), (-0.6 * r, 0.0)]
        pts = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    elif shape == "cross":
        a, b = 0.33 * r, 0.94 * r
        xy = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a),
              (-a, -a)]
        pts = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    t = math.radians(rotation)  # rounded: the COCO writer stores these exact vertices
    return [(round(cx + rho * math.cos(phi + t), 2), round(cy + rho * math.sin(phi + t), 2)) for rho, phi in pts]


def _fill(polys: list[list[tuple[float, float]]], height: int, width: int) -> np.ndarray:
    im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(im)
    for poly in polys:
        draw.polygon(poly, fill=1)
    return np.asarray(im, dtype=bool)


def _fill_objects(polys: list[list[tuple[float, float]]], height: int, width: int) -> np.ndarray:
    """Objects are rasterised by pycocotools, so a COCO polygon decodes to exactly these pixels."""
    from pycocotools import mask as mask_utils

    flat = [[c for p in poly for c in p] for poly in polys]
    with warnings.catch_warnings():  # pycocotools' own numpy-2 copy= DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, height, width))).astype(bool)


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _layout(rng: np.random.Generator, h: int, w: int) -> list[tuple[str, list[tuple[float, float]]]]:
    horizon = h * rng.uniform(0.3, 0.45)
    sky = h * rng.uniform(0.1, 0.25)
    curb = h * rng.uniform(0.55, 0.7)
    ego = h * rng.uniform(0.9, 0.97)
    regions: list[tuple[str, list[tuple[float, float]]]] = [
        ("sky", _rect(0, 0, w, sky + 1)),
        (str(rng.choice(["building", "wall"])), _rect(0, sky, w, horizon + 1)),
        (str(rng.choice(["sidewalk", "terrain", "ground"])), _rect(0, horizon, w, curb + 1)),
        ("road", [(0, curb), (w, curb - h * rng.uniform(-0.05, 0.05)), (w, h), (0, h)]),
    ]
    for _ in range(int(rng.integers(1, 3))):  # trees in front of the buildings
        x, rr = w * rng.uniform(0, 1), h * rng.uniform(0.06, 0.14)
        regions.append(("vegetation", shape_polygon("circle", x, horizon - rr * 0.5, rr, 0.0)))
    regions.append(("ego vehicle", _rect(0, ego, w, h)))
    return regions


def _clutter(rng: np.random.Generator, h: int, w: int, n: int) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for _ in range(n):
        kind = str(rng.choice(list(CLUTTER)))
        x, y = w * rng.uniform(0, 1), h * rng.uniform(0.25, 0.9)
        if kind == "pole":
            poly = _rect(x, y - h * 0.3, x + max(1.5, w * 0.02), y)
        elif kind == "guard rail":
            poly = _rect(x, y, x + w * rng.uniform(0.15, 0.4), y + max(2.0, h * 0.025))
        else:
            s = min(h, w) * rng.uniform(0.04, 0.09)
            poly = _rect(x - s, y - s * 0.7, x + s, y + s * 0.7)
        out.append((kind, poly))
    return out


def _upright(shape: str, u: float) -> float:
    """The rotation of an upright object from the same uniform draw ``u`` in [0, 360): a triangle
    points in one of the four directions, anything else stands as drawn; both within
    +-UPRIGHT_JITTER degrees."""
    jitter = ((u % 90.0) / 90.0 - 0.5) * 2.0 * UPRIGHT_JITTER
    return ((90.0 * (u // 90.0) if shape == "triangle" else 0.0) + jitter) % 360.0


def _new_object(rng: np.random.Generator, h: int, w: int, crowd: bool,
                sizes: tuple[str, ...] = tuple(SIZE_RANGES), upright: bool = False) -> SceneObject:
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    m = min(h, w)
    rotation = float(rng.uniform(0, 360)) if shape not in ("circle",) else 0.0
    if upright and shape != "circle":
        rotation = _upright(shape, rotation)
    if crowd:
        cx, cy = w * rng.uniform(0.15, 0.85), h * rng.uniform(0.2, 0.8)
        parts = []
        for _ in range(int(rng.integers(5, 9))):
            parts.append((float(cx + m * rng.normal(0, 0.06)), float(cy + m * rng.normal(0, 0.05)),
                          float(m * rng.uniform(0.025, 0.04))))
        return SceneObject(shape, colour, "small", (float(cx), float(cy)), float(m * 0.04), rotation, True, parts)
    size = str(rng.choice(list(sizes)))
    lo, hi = SIZE_RANGES[size]
    r = m * rng.uniform(lo, hi)
    cx, cy = w * rng.uniform(0.05, 0.95), h * rng.uniform(0.08, 0.92)
    return SceneObject(shape, colour, size, (float(cx), float(cy)), float(r), rotation)


def object_masks(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(full in-image masks, visible masks), both bool [K, H, W]; later objects occlude earlier ones."""
    h, w = scene.height, scene.width
    full = np.stack([_fill_objects(o.polygons(), h, w) for o in scene.objects]) if scene.objects else np.zeros(
        (0, h, w), bool)
    visible = full.copy()
    covered = np.zeros((h, w), bool)
    for k in range(len(full) - 1, -1, -1):
        visible[k] &= ~covered
        covered |= full[k]
    return full, visible


def _relations(objs: list[SceneObject], full: np.ndarray) -> list[dict[str, Any]]:
    rels: list[dict[str, Any]] = []
    for i in range(len(objs)):
        for j in range(len(objs)):
            if i == j:
                continue
            (xi, yi), (xj, yj) = objs[i].center, objs[j].center
            margin = 0.5 * (objs[i].radius + objs[j].radius)
            if xi + margin < xj:
                rels.append({"subject": i, "relation": "left of", "object": j})
            if yi + margin < yj:
                rels.append({"subject": i, "relation": "above", "object": j})
            if j < i and (full[i] & full[j]).any():
                rels.append({"subject": i, "relation": "in front of", "object": j})
    return rels


def generate_scene(
    seed: int,
    index: int,
    size: int | tuple[int, int] = 96,
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    crowd_prob: float = 0.15,
    n_clutter: tuple[int, int] = (1, 4),
    max_occlusion: float = 0.7,
    min_visible: int = 12,
    sizes: tuple[str, ...] = tuple(SIZE_RANGES),
    upright: bool = False,
) -> Scene:
    """Scene number ``index`` of the world ``seed`` (rejection-samples objects until visible enough)."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([seed, index])
    regions = _layout(rng, h, w)
    clutter = _clutter(rng, h, w, int(rng.integers(n_clutter[0], n_clutter[1] + 1)))
    n_obj = int(rng.integers(min_objects, max_objects + 1))
    with_crowd = bool(rng.uniform() < crowd_prob)
    for _ in range(50):
        objs = [_new_object(rng, h, w, crowd=False, sizes=sizes, upright=upright) for _ in range(n_obj)]
        if with_crowd:
            objs.insert(int(rng.integers(0, len(objs) + 1)), _new_object(rng, h, w, crowd=True, upright=upright))
        scene = Scene(f"{seed:04d}_{index:06d}", h, w, int(rng.integers(0, 2**31)), regions, clutter, objs)
        full, visible = object_masks(scene)
        areas_full, areas_vis = full.sum((1, 2)), visible.sum((1, 2))
        if (areas_vis >= min_visible).all() and (areas_vis >= (1 - max_occlusion) * areas_full).all():
            break
    else:  # pragma: no cover - practically unreachable with the default options
        raise RuntimeError(f"could not place objects for scene {index} of seed {seed}")
    for k, o in enumerate(objs):
        ys, xs = np.nonzero(visible[k])
        o.bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        o.area = int(areas_vis[k])
        o.occlusion = round(float(1 - areas_vis[k] / areas_full[k]), 4)
        pts = np.asarray([p for poly in o.polygons() for p in poly])
        o.truncated = bool((pts[:, 0] < 0).any() or (pts[:, 1] < 0).any() or (pts[:, 0] > w).any()
                           or (pts[:, 1] > h).any())
    scene.relations = _relations(objs, full)
    return scene


def generate_scenes(n: int, seed: int = 0, size: int | tuple[int, int] = 96, **options: Any) -> list[Scene]:
    """``n`` scenes of the world ``seed``; ``options`` as :func:`generate_scene`."""
    return [generate_scene(seed, i, size, **options) for i in range(n)]


def _paint(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], noise: np.ndarray, amp: float) -> None:
    base = np.asarray(colour, dtype=np.float32)
    img[mask] = base + amp * noise[mask]


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image uint8 [H, W, 3], visible instance masks bool [K, H, W]) of ``scene``."""
    h, w = scene.height, scene.width
    rng = np.random.default_rng(scene.noise_seed)
    noise = rng.normal(0.0, 1.0, size=(h, w, 3)).astype(np.float32)
    shade = rng.uniform(0.85, 1.1)
    img = np.zeros((h, w, 3), np.float32)
    for name, poly in scene.regions:
        _paint(img, _fill([poly], h, w), tuple(int(c * shade) for c in REGIONS[name][1]), noise, 12.0)
    for kind, poly in scene.clutter:
        _paint(img, _fill([poly], h, w), CLUTTER[kind][1], noise, 10.0)
    _, visible = object_masks(scene)
    for o, m in zip(scene.objects, visible):
        _paint(img, m, COLOURS[o.colour], noise, 8.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), visible


def render_label_ids(scene: Scene) -> np.ndarray:
    """uint8 [H, W] Cityscapes labelIds: background regions, clutter, then visible objects."""
    h, w = scene.height, scene.width
    lab = np.zeros((h, w), np.uint8)  # 0 = unlabeled where nothing is painted
    for name, poly in scene.regions:
        lab[_fill([poly], h, w)] = REGIONS[name][0]
    for kind, poly in scene.clutter:
        lab[_fill([poly], h, w)] = CLUTTER[kind][0]
    _, visible = object_masks(scene)
    for o, m in zip(scene.objects, visible):
        lab[m] = SHAPE_LABEL_IDS[o.shape]
    return lab
