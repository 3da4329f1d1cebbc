"""Tiny image files for the import tests: the odd-but-valid kinds (normalised on import)
and the broken kinds (flagged corrupt with a reason). All are a few hundred bytes."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def jpeg(color=(200, 30, 30), size=(16, 12)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=90)


def png(color=(30, 200, 30), size=(16, 12)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), "JPEG")


def palette_png() -> bytes:
    return encode(Image.new("RGB", (16, 12), (10, 20, 200)).convert("P"), "PNG")


def sixteen_bit_png() -> bytes:
    img = Image.new("I;16", (16, 12))
    img.putdata([i * 300 for i in range(16 * 12)])
    return encode(img, "PNG")


def rgba_png() -> bytes:
    return encode(Image.new("RGBA", (16, 12), (255, 0, 0, 128)), "PNG")


def exif_rotated_jpeg() -> bytes:
    """Stored 16 wide x 8 high with orientation 6 (rotate 90): upright it is 8 x 16."""
    img = Image.new("RGB", (16, 8), (120, 120, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes())


GOOD = {  # name -> (bytes, upright size)
    "plain.jpg": (jpeg(), (16, 12)),
    "cmyk.jpg": (cmyk_jpeg(), (16, 12)),
    "palette.png": (palette_png(), (16, 12)),
    "sixteen.png": (sixteen_bit_png(), (16, 12)),
    "rgba.png": (rgba_png(), (16, 12)),
    "rotated.jpg": (exif_rotated_jpeg(), (8, 16)),
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header that declares 10 gigapixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG", quality=95)
    return data[: len(data) // 2]


BROKEN = {  # name -> (bytes, a word the reason must contain)
    "empty.jpg": (b"", "empty"),
    "truncated.jpg": (truncated_jpeg(), "truncated"),
    "text.jpg": (b"this is not a picture, just text\n" * 3, "not an image"),
    "bomb.png": (bomb_png(), "decompression bomb"),
}
