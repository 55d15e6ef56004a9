"""Files of every kind ImageNet really contains, made from a real photo, with the expected outcome.

`odd_files(photo)` returns {file name: (bytes, expected)} where expected is "ok" or the
reject reason `preprocess.image` must give.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import simplejpeg
from PIL import Image


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_bytes(photo: np.ndarray, quality: int = 92) -> bytes:
    return _save(Image.fromarray(photo), "JPEG", quality=quality)


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims a huge size (what a decompression bomb looks like)."""
    data = _save(Image.new("L", (8, 8)), "PNG")
    ihdr_at = data.index(b"IHDR")
    body = bytearray(data[ihdr_at : ihdr_at + 4 + 13])
    body[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
    return data[:ihdr_at] + bytes(body) + crc + data[ihdr_at + 4 + 13 + 4 :]


def adobe_cmyk(rgb: np.ndarray) -> np.ndarray:
    """RGB -> CMYK as Photoshop stores it in JPEGs (Adobe APP14: values inverted)."""
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    return 255 - cmyk


def odd_files(photo: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """`photo`: an RGB uint8 photo at least 300 pixels on its shorter side."""
    rgb = Image.fromarray(photo)
    jpeg = _save(rgb, "JPEG", quality=92)
    g16 = (photo.mean(axis=2) * 257).astype(np.uint16)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full(photo.shape[:2], 200, np.uint8)))
    palette_t = rgb.convert("P", palette=Image.ADAPTIVE, colors=64)
    palette_t.info["transparency"] = 0
    return {
        "plain.JPEG": (jpeg, "ok"),
        "progressive.jpeg": (_save(rgb, "JPEG", quality=90, progressive=True), "ok"),
        "upper.JPG": (jpeg, "ok"),
        "no_extension": (jpeg, "ok"),
        "cmyk.JPEG": (_save(rgb.convert("CMYK"), "JPEG", quality=95), "ok"),
        "ycck.JPEG": (simplejpeg.encode_jpeg(adobe_cmyk(photo), 95, "CMYK"), "ok"),
        "gray.JPEG": (_save(rgb.convert("L"), "JPEG", quality=90), "ok"),
        "gray.png": (_save(rgb.convert("L"), "PNG"), "ok"),
        "palette.png": (_save(rgb.convert("P", palette=Image.ADAPTIVE), "PNG"), "ok"),
        "palette_transparent.png": (_save(palette_t, "PNG", transparency=0), "ok"),
        "rgba.png": (_save(rgba, "PNG"), "ok"),
        "png_named.JPEG": (_save(rgb, "PNG"), "ok"),
        "gray16.png": (cv2.imencode(".png", g16)[1].tobytes(), "ok"),
        "rgb16.png": (cv2.imencode(".png", np.ascontiguousarray(photo[:, :, ::-1].astype(np.uint16) * 257))[1].tobytes(), "ok"),
        "bitmap.bmp": (_save(rgb, "BMP"), "ok"),
        "animated.gif": (_save(rgb.convert("P"), "GIF"), "ok"),
        "bomb.png": (png_bomb(), "too_large"),
        "truncated.JPEG": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (_save(rgb, "PNG")[:2000], "truncated"),
        "empty.JPEG": (b"", "empty"),
        "text.JPEG": (b"<html><body>404 Not Found</body></html>\n", "not_an_image"),
        "random.JPEG": (np.random.default_rng(0).bytes(5000), "not_an_image"),
    }
