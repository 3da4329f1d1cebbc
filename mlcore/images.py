"""Decoding images the same way everywhere: import, thumbnails, training, prediction.

A file that cannot become an RGB picture raises :class:`CorruptImage` with a
reason a person can read; everything that can be normalised (CMYK, palette,
16-bit, alpha, EXIF rotation) is normalised instead of rejected.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Pillow's decompression-bomb limit, set explicitly rather than inherited.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class CorruptImage(ValueError):
    """The bytes are not a usable image; ``reason`` says why, for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        return img.convert("RGB")
    raise CorruptImage(f"unsupported image mode {mode!r}")


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> an upright RGB :class:`PIL.Image.Image`, or :class:`CorruptImage`."""
    if not data:
        raise CorruptImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise CorruptImage(
                    f"decompression bomb: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except CorruptImage:
        raise
    except UnidentifiedImageError:
        raise CorruptImage("not an image: the file's format is not recognised") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CorruptImage(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg:
            raise CorruptImage(f"truncated image data ({msg})") from None
        raise CorruptImage(f"damaged image data ({msg})") from None


def thumbnail_jpeg(img: Image.Image, size: int = 256, quality: int = 85) -> bytes:
    """A JPEG whose longer side is at most ``size`` pixels."""
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
