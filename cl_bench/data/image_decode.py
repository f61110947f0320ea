"""Opening dataset images with PIL without trusting them.

:func:`open_image` is the one way a reader opens an image file or in-memory blob: the file
must be a regular file (a FIFO would block, a dangling symlink is named), the header's size is
checked before any pixel is decoded (a decompression bomb — a small PNG declaring 50,000 ×
50,000 pixels — is refused without inflating it), and whatever PIL raises while decoding a
truncated or corrupt image becomes one ClBenchError line naming the image.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cl_bench.data.safe_paths import check_data_file
from cl_bench.errors import ClBenchError

MAX_IMAGE_PIXELS = 2**26  # 67 M pixels (8192 x 8192): far above any benchmark image, far below a bomb
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError,
                 ZeroDivisionError, UnidentifiedImageError, Image.DecompressionBombError)


@contextmanager
def open_image(source: Path | bytes, where: str | None = None) -> Iterator[Image.Image]:
    """A PIL image (header read, size checked) of a file or of bytes; decode inside the block."""
    name = where or str(source if isinstance(source, Path) else "<image bytes>")
    if isinstance(source, (str, Path)):
        check_data_file(Path(source), "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower cap decides
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                w, h = im.size
                if w <= 0 or h <= 0 or w * h > MAX_IMAGE_PIXELS:
                    raise ClBenchError(f"image {name} declares {w} x {h} pixels (at most {MAX_IMAGE_PIXELS} "
                                       "allowed); refused before decoding it (a decompression bomb?)")
                yield im
    except ClBenchError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own guard fired first (past 2 x its limit)
        size = re.search(r"\((\d+) pixels\)", str(e))
        raise ClBenchError(f"image {name} declares {size.group(1) if size else 'too many'} pixels (at most "
                           f"{MAX_IMAGE_PIXELS} allowed); refused before decoding it (a decompression bomb?)") from None
    except DECODE_ERRORS as e:
        raise ClBenchError(f"cannot decode image {name} ({type(e).__name__}: {str(e)[:120]}); "
                           "is the file present and intact? replace it") from None
