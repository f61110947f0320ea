"""The schema of a COCO instances JSON, checked before pycocotools sees the file.

Strict types (a string where a number belongs is an error, not converted), finite numbers
(``Infinity`` in a box once segfaulted RoIAlign), non-negative box sizes and image sizes, box
coordinates within :data:`MAX_COORD`, ``file_name`` a relative path inside the image folder.
Fields this harness does not read (``license``, ``coco_url`` ...) may be present. A violation is
one ClBenchError naming the file and the field (``annotations.12.bbox.2``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, ValidationError, field_validator

from cl_bench.data.safe_paths import SafeRelPath
from cl_bench.errors import ClBenchError
from cl_bench.specs import describe_validation_error

MAX_SIDE = 100_000  # pixels: an image side, and (x2) a box coordinate
MAX_COORD = 2 * MAX_SIDE
Id = Annotated[int, Field(strict=True)] | Annotated[str, Field(strict=True, min_length=1)]
Coord = Annotated[FiniteFloat, Field(ge=-MAX_COORD, le=MAX_COORD)]


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class CocoImage(_Record):
    id: Id
    file_name: SafeRelPath
    height: int = Field(ge=1, le=MAX_SIDE)
    width: int = Field(ge=1, le=MAX_SIDE)


class CocoRLE(_Record):
    counts: list[Annotated[int, Field(ge=0)]] | str
    size: Annotated[list[Annotated[int, Field(ge=1, le=MAX_SIDE)]], Field(min_length=2, max_length=2)]


class CocoAnnotation(_Record):
    id: Id | None = None
    image_id: Id
    category_id: int
    bbox: Annotated[list[Coord], Field(min_length=4, max_length=4)]  # [x, y, w, h]
    area: Annotated[FiniteFloat, Field(ge=0)] | None = None
    iscrowd: Literal[0, 1] = 0
    segmentation: list[list[Coord]] | CocoRLE | None = None

    @field_validator("bbox")
    @classmethod
    def _size_not_negative(cls, v: list[float]) -> list[float]:
        if v[2] < 0 or v[3] < 0:
            raise ValueError(f"box [x, y, w, h] = {list(v)} has a negative width or height")
        return v


class CocoCategory(_Record):
    id: int
    name: str = Field(min_length=1)


class CocoFile(_Record):
    images: list[CocoImage]
    annotations: list[CocoAnnotation] = Field(default_factory=list)
    categories: list[CocoCategory]


_ADAPTER = TypeAdapter(CocoFile)


def validate_coco(data: Any, where: str) -> None:
    """ClBenchError naming ``where`` and the first bad field unless ``data`` is a valid instances file."""
    if not isinstance(data, dict):
        raise ClBenchError(f"{where}: expected a JSON object with images, annotations and categories")
    try:
        _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ClBenchError(describe_validation_error(where, e)) from None
