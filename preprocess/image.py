"""One input file to one 256x256 RGB image: robust decode, fast downscale, center crop.

Used by `preprocess shard` (through `preprocess.shards`) and `trainer.analysis.inference`. The fast
path decodes JPEGs with libjpeg-turbo (simplejpeg) into a reused buffer, using its
DCT-domain scaling by 1/2, 1/4 or 1/8 while the short side stays at least `DCT_MARGIN`
times the target; torch's uint8 kernel for antialiased bicubic resampling (Pillow's
BICUBIC filter, SIMD) does the rest. Everything else (CMYK/YCCK JPEGs, PNG, GIF, TIFF,
16-bit, palette, alpha) goes through Pillow. Going straight to the target size in the DCT
domain loses fidelity (29 dB PSNR on some photos when the decode falls below the target);
a margin of 1.5 kept every photo measured above 44 dB against the float64 full-decode
reference.
"""

from __future__ import annotations

import io
import math
import warnings

import threading

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from preprocess.contract import IMAGE_SIZE

DCT_MARGIN = 1.5  # decode JPEGs to at least this multiple of the target before resizing
DEFAULT_MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are rejected
DEFAULT_QUALITY = 95
SUBSAMPLING = "420"
RESIZE_FILTER = "bicubic a=-0.5, antialiased (Pillow's BICUBIC; torch _upsample_bicubic2d_aa)"
_KEEP_BUFFER_BYTES = 64 << 20  # decode buffers up to this size are kept for the next image
_FAST_COLORSPACES = ("YCbCr", "Gray", "RGB")  # what libjpeg-turbo converts to RGB itself
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# Pillow's own bomb check would raise before ours can give a reason; ours is explicit.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class Rejected(Exception):
    """An input that cannot be used; `reason` is a short code for rejects.jsonl and the summary."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def target_shape(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after scaling the shorter side of an image of the given size to `size`."""
    short = min(height, width)
    if height <= width:
        return size, max(size, round(width * size / short))
    return max(size, round(height * size / short)), size


def _torch():
    # Imported on first use: `preprocess verify`, `stats --merge` and --help don't need it.
    import torch

    return torch


def set_threads(n: int | None) -> int:
    """Set the resize kernel's thread count (None: leave it); returns the previous one.

    Workers use 1: they are one process per core already.
    """
    torch = _torch()
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    return before


def resize_crop(pixels: np.ndarray, original_hw: tuple[int, int], size: int = IMAGE_SIZE,
                scale: float = 1.0) -> np.ndarray:
    """Scale to the geometry of the *original* image's short side = size, then center-crop.

    `pixels` is the original (`scale` 1) or a DCT-downscaled decode of it (`scale` n/8, whose
    size is ceil(original * n/8)). The filter is given the exact scale relative to the
    original, not the ratio of rounded sizes: that rounding shifts the far side of the image
    by up to half a decoded pixel, which alone costs several dB of PSNR. Since the scale
    fixes where every output pixel samples, only the rows and columns up to the crop's far
    edge are computed. Works for uint8 (torch's SIMD kernel wants the HWC layout numpy
    gives) and float64 (the fidelity reference).
    """
    th, tw = target_shape(*original_hw, size)
    top, left = (th - size) // 2, (tw - size) // 2
    if scale == 1.0 and pixels.shape[:2] == (th, tw):
        return np.ascontiguousarray(pixels[top : top + size, left : left + size])
    torch = _torch()
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # Pillow's arrays are read-only, which torch warns about
    fy, fx = th / original_hw[0] / scale, tw / original_hw[1] / scale
    nchw = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # channels-last strides
    # torch returns the input unchanged along an axis whose output size equals the input's,
    # whatever the scale: compute one more row or column then.
    rows, cols = top + size, left + size
    rows += rows == pixels.shape[0] and fy != 1.0
    cols += cols == pixels.shape[1] and fx != 1.0
    out = torch.ops.aten._upsample_bicubic2d_aa(nchw, [rows, cols], False, fy, fx)
    crop = out[0, :, top : top + size, left : left + size].permute(1, 2, 0)
    if crop.dtype != torch.uint8:
        crop = crop.clamp(0, 255)  # bicubic overshoots; the uint8 kernel saturates itself
    return crop.contiguous().numpy()  # torch's CHW -> HWC copy is twice as fast as numpy's


def dct_scale(height: int, width: int, size: int = IMAGE_SIZE) -> int:
    """n of the n/8 decode: the smallest of 1, 2, 4, 8 that keeps the short side >= DCT_MARGIN * size.

    Only powers of two: libjpeg-turbo's 3/8, 5/8, 6/8, 7/8 IDCTs are plain C, slower than a
    full SIMD decode (measured: 6/8 takes 1.6x the full decode's time).
    """
    want = DCT_MARGIN * size
    return next(n for n in (1, 2, 4, 8) if n == 8 or math.ceil(min(height, width) * n / 8) >= want)


_local = threading.local()


def _decode_buffer(n_bytes: int) -> np.ndarray:
    """A per-thread output buffer for simplejpeg: a fresh multi-megabyte array per image is
    page-faulted in each time, which cost as much as a third of the decode (measured)."""
    buf = getattr(_local, "buffer", None)
    if buf is not None and buf.size >= n_bytes:
        return buf
    buf = np.empty(max(n_bytes, 4 << 20), np.uint8)
    if buf.size <= _KEEP_BUFFER_BYTES:
        _local.buffer = buf
    return buf


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise Rejected("corrupt", f"image size {width}x{height}")
    if height * width > max_pixels:
        raise Rejected("too_large", f"{width}x{height} exceeds --max-pixels {max_pixels}")


def _decode_jpeg_fast(data: bytes, size: int, max_pixels: int):
    """libjpeg-turbo scaled decode, or None when Pillow must handle the file."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _FAST_COLORSPACES:
        return None  # CMYK / YCCK: libjpeg-turbo cannot convert them to RGB
    _check_size(height, width, max_pixels)
    n = dct_scale(height, width, size)
    shape = (math.ceil(height * n / 8), math.ceil(width * n / 8))
    try:
        buffer = _decode_buffer(shape[0] * shape[1] * 3)
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=shape[0], min_width=shape[1], strict=True,
                                        buffer=buffer)
    except ValueError:
        return None  # truncated or with recoverable errors: let Pillow judge it
    if pixels.shape[:2] != shape:
        return None  # a libjpeg that scales differently: let Pillow do it
    return pixels, (height, width), n / 8


def _pillow_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to an RGB uint8 array (alpha flattened onto white, 16-bit scaled)."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F" and values.max(initial=0) <= 1.0:
            top = 1.0
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _decode_pillow(data: bytes, size: int, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "no image format recognises the content") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise Rejected("corrupt", str(err)) from None
    with im:
        width, height = im.size
        _check_size(height, width, max_pixels)
        if im.format == "JPEG" and min(width, height) >= 2 * DCT_MARGIN * size:
            # Pillow's DCT scaling by 1/2, 1/4 or 1/8; never below the requested size.
            ratio = DCT_MARGIN * size / min(width, height)
            im.draft(im.mode if im.mode != "YCbCr" else "RGB", (math.ceil(width * ratio), math.ceil(height * ratio)))
        try:
            im.load()
            pixels = _pillow_to_rgb(im)
            scale = 1.0 / round(width / im.size[0])  # draft divides by a power of two
        except OSError as err:
            reason = "truncated" if "truncated" in str(err) else "corrupt"
            raise Rejected(reason, str(err)) from None
        except (ValueError, SyntaxError, MemoryError) as err:
            raise Rejected("corrupt", str(err)) from None
    return pixels, (height, width), scale


def decode(data: bytes, size: int = IMAGE_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS):
    """(RGB uint8 pixels, (height, width) of the original, scale of the pixels to the original).

    The fast path's pixels live in this thread's decode buffer: the next decode overwrites
    them, so copy what must be kept (`prepare` returns a copy).
    """
    if not data:
        raise Rejected("empty", "zero-byte file")
    if data[:3] == b"\xff\xd8\xff":
        fast = _decode_jpeg_fast(data, size, max_pixels)
        if fast is not None:
            return fast
    return _decode_pillow(data, size, max_pixels)


def prepare(data: bytes, size: int = IMAGE_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The (size, size, 3) uint8 image that is stored, before JPEG encoding."""
    pixels, original_hw, scale = decode(data, size, max_pixels)
    return resize_crop(pixels, original_hw, size, scale)


def encode(pixels: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """Baseline JPEG (libjpeg-turbo; deterministic for the same library build)."""
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling=SUBSAMPLING)


def reference(data: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Float64 reference: the same filter applied to the full-resolution decode (tests only)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        full = _pillow_to_rgb(im).astype(np.float64)
    return resize_crop(full, full.shape[:2], size)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
