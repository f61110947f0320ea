"""Write generated scenes in the real on-disk formats: a VOC tree, COCO instances JSON, a Cityscapes tree.

Each writer also keeps the scene descriptions beside the images (``scenes.json`` /
``scenes_<split>.json``: one :meth:`~cl_bench.data.scenes.world.Scene.to_json` per image, keyed by
the image's id or file stem), which the caption generators read.

Annotation rules (the same world, three formats):

- VOC: one ``<object>`` per scene object, box = visible extent in 1-based inclusive pixels;
  ``truncated`` = the shape crosses the border; ``difficult`` = a crowd, or fewer than
  ``difficult_area`` visible pixels, or more than half occluded.
- COCO: box ``[x, y, w, h]`` of the visible extent, ``area`` = visible pixels; segmentation =
  the exact polygon for a whole, unoccluded object, compressed RLE of the visible mask for an
  occluded or truncated one, and uncompressed RLE with ``iscrowd=1`` for a crowd (as COCO does).
  Category ids are deliberately non-contiguous.
- Cityscapes: ``*_leftImg8bit.png`` + ``*_gtFine_labelIds.png`` (raw labelIds, incl. ids that
  map to trainId 255 such as ego vehicle, static, parking, guard rail, caravan, unlabeled).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from cl_bench.data.scenes.world import SHAPES, Scene, render, render_label_ids

SCENE_COCO_CATEGORY_IDS: dict[str, int] = {
    "circle": 1, "square": 2, "triangle": 4, "star": 7, "cross": 9, "diamond": 13,
}
VOC_YEAR = "2007"
CITIES = {"train": ("alphaville", "betatown"), "val": ("gammaberg",)}


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=95, subsampling=0)


def voc_difficult(scene_obj: object, difficult_area: int) -> bool:
    o = scene_obj
    return bool(o.crowd or o.area < difficult_area or o.occlusion > 0.5)  # type: ignore[attr-defined]


def voc_xml(scene: Scene, image_id: str, difficult_area: int = 40) -> str:
    """The VOC annotation XML of ``scene`` (boxes 1-based inclusive)."""
    lines = [
        "<annotation>", f"\t<folder>VOC{VOC_YEAR}</folder>", f"\t<filename>{image_id}.jpg</filename>",
        "\t<source><database>cl_bench embedded scenes</database></source>",
        f"\t<size><width>{scene.width}</width><height>{scene.height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        lines += [
            "\t<object>", f"\t\t<name>{escape(o.shape)}</name>", "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o.truncated)}</truncated>",
            f"\t\t<difficult>{int(voc_difficult(o, difficult_area))}</difficult>",
            f"\t\t<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_voc(splits: dict[str, list[Scene]], root: Path, difficult_area: int = 40) -> Path:
    """Write ``root/VOCdevkit/VOC2007``; ``splits`` maps an image-set name (trainval, test) to scenes."""
    voc = root / "VOCdevkit" / f"VOC{VOC_YEAR}"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    descriptions: dict[str, dict] = {}
    counter = 0
    for split, scenes in splits.items():
        ids = []
        for scene in scenes:
            counter += 1
            image_id = f"{counter:06d}"
            rgb, _ = render(scene)
            _save_jpeg(rgb, voc / "JPEGImages" / f"{image_id}.jpg")
            (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(scene, image_id, difficult_area))
            descriptions[image_id] = scene.to_json()
            ids.append(image_id)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "scenes.json").write_text(json.dumps(descriptions))
    return voc


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool [H, W] mask: column-major run lengths, starting with zeros."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"counts": [int(r) for r in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(v) for v in rle["size"]]}


def coco_instances(scenes: list[Scene], file_names: list[str], first_image_id: int = 1) -> tuple[dict, list]:
    """(instances JSON dict, rendered images) for ``scenes``."""
    images, annotations, rgbs = [], [], []
    ann_id = 0
    for k, (scene, fname) in enumerate(zip(scenes, file_names)):
        image_id = first_image_id + k
        rgb, visible = render(scene)
        rgbs.append(rgb)
        images.append({"id": image_id, "file_name": fname, "height": scene.height, "width": scene.width})
        for o, m in zip(scene.objects, visible):
            ann_id += 1
            x0, y0, x1, y1 = o.bbox
            if o.crowd:
                seg: list | dict = uncompressed_rle(m)
            elif o.occlusion == 0 and not o.truncated:
                seg = [[c for p in poly for c in p] for poly in o.polygons()]
            else:
                seg = compressed_rle(m)
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": SCENE_COCO_CATEGORY_IDS[o.shape],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(m.sum()), "iscrowd": int(o.crowd),
                "segmentation": seg,
            })
    categories = [{"id": SCENE_COCO_CATEGORY_IDS[s], "name": s, "supercategory": "shape"} for s in SHAPES]
    info = {"description": "cl_bench embedded scenes (COCO instances format)", "version": "1.0"}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": categories}, rgbs


def write_coco(splits: dict[str, list[Scene]], root: Path) -> Path:
    """Write ``root/annotations/instances_<split>2017.json`` and ``root/<split>2017/*.jpg``."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    first = 1
    for split, scenes in splits.items():
        names = [f"{first + k:012d}.jpg" for k in range(len(scenes))]
        doc, rgbs = coco_instances(scenes, names, first_image_id=first)
        for name, rgb in zip(names, rgbs):
            _save_jpeg(rgb, root / f"{split}2017" / name)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
        (root / "annotations" / f"scenes_{split}2017.json").write_text(
            json.dumps({n: s.to_json() for n, s in zip(names, scenes)}))
        first += len(scenes)
    return root


def cityscapes_stem(split: str, index: int) -> str:
    cities = CITIES.get(split, (split,))
    return f"{cities[index % len(cities)]}_{index // len(cities):06d}_{19:06d}"


def write_cityscapes(splits: dict[str, list[Scene]], root: Path) -> Path:
    """Write ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and ``gtFine/.../*_gtFine_labelIds.png``."""
    for split, scenes in splits.items():
        descriptions = {}
        for k, scene in enumerate(scenes):
            stem = cityscapes_stem(split, k)
            city = stem.split("_")[0]
            img_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            lab_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            lab_path.parent.mkdir(parents=True, exist_ok=True)
            rgb, _ = render(scene)
            Image.fromarray(rgb).save(img_path, format="PNG")
            Image.fromarray(render_label_ids(scene)).save(lab_path, format="PNG")
            descriptions[stem] = scene.to_json()
        (root / "leftImg8bit" / f"scenes_{split}.json").write_text(json.dumps(descriptions))
    return root
