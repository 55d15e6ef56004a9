"""Shard planning and writing for `preprocess shard`: a unit of work is one planned shard.

The plan is fixed before any image is read: train samples shuffled with the seed, val in
path order, each split cut into units of `--shard-max-count` samples. A worker turns one
unit into whole tar files ("pieces": one, or more when `--shard-max-bytes` splits it),
their DALI index files and, for train, the unit's moments; the main process later gives
the pieces their final shard numbers in plan order (`preprocess.output`). Tar headers are
fixed (mtime 0, uid 0, mode 0444), so the same unit always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import exitcodes
from common.tempfiles import no_space, replacing, temp_path
from preprocess import image
from preprocess.contract import EXT_IMAGE, EXT_LABEL, EXT_META, IMAGE_SIZE
from preprocess.indexfile import write_index
from preprocess.sources import SampleTable, Source, printable
from preprocess.stats import Moments

_BLOCK = 512


@dataclass(frozen=True)
class Options:
    """Everything that changes the bytes of the output."""

    seed: int = 0
    quality: int = image.DEFAULT_QUALITY
    shard_max_count: int = 1000
    shard_max_bytes: int | None = None
    max_pixels: int = image.DEFAULT_MAX_PIXELS
    size: int = IMAGE_SIZE
    holdout_fraction: float = 0.0  # 0: no holdout (preprocess.holdout)
    holdout_seed: int = 0

    def params(self) -> dict:
        return {
            "image_size": self.size,
            "jpeg_quality": self.quality,
            "jpeg_subsampling": image.SUBSAMPLING,
            "resize_filter": image.RESIZE_FILTER,
            "dct_margin": image.DCT_MARGIN,
            "seed": self.seed,
            "shard_max_count": self.shard_max_count,
            "shard_max_bytes": self.shard_max_bytes,
            "max_pixels": self.max_pixels,
            "holdout_fraction": self.holdout_fraction,
            "holdout_seed": self.holdout_seed,
        }


@dataclass(frozen=True)
class Unit:
    split: str
    index: int  # position among the split's units
    table: SampleTable = field(repr=False)  # the split's samples (or, in a worker, this unit's alone)
    ids: np.ndarray = field(repr=False)  # this unit's rows of `table`, in shard order

    @property
    def name(self) -> str:
        return f"{self.split}-u{self.index:06d}"

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def samples(self) -> SampleTable:
        return self.table.take(self.ids)

    def __reduce__(self):
        # A worker gets its own ~1,000 rows, not the split's table.
        return Unit, (self.split, self.index, self.samples, np.arange(self.count))


def plan(source: Source, options: Options) -> list[Unit]:
    """All units, train first; the same source and options always give the same plan."""
    units = []
    for split, samples in source.samples.items():
        # Shuffling the row numbers draws the same permutation as shuffling the samples
        # (random.shuffle uses only the length), so plans match those made before.
        order = list(range(len(samples)))
        if split == "train":
            random.Random(options.seed).shuffle(order)
        order = np.array(order, np.int64)
        step = options.shard_max_count
        for i in range(0, len(order), step):
            units.append(Unit(split, i // step, samples, order[i : i + step]))
    return units


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o444, 0, 0
    info.uname = info.gname = ""
    pad = -len(data) % _BLOCK
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + data + b"\0" * pad


class PieceWriter:
    """Writes a unit's samples into tar pieces with their index, under `workdir`."""

    def __init__(self, workdir: Path, unit_name: str, max_bytes: int | None):
        self.workdir, self.unit_name, self.max_bytes = workdir, unit_name, max_bytes
        self.pieces: list[dict] = []
        self._file = None

    def _open(self) -> None:
        self._tar_path = self.workdir / f"{self.unit_name}-p{len(self.pieces)}.tar"
        self._tmp = temp_path(self._tar_path)
        self._file = open(self._tmp, "wb")
        self._hash, self._offset, self._index = hashlib.sha256(), 0, []

    def add(self, key: str, fields: list[tuple[str, bytes]]) -> None:
        parts, members, rel = [], [], 0  # member offsets relative to the sample's start
        for ext, data in fields:
            name = f"{key}.{ext}"
            members.append((ext, rel + _BLOCK, len(data), name))
            parts.append(_member(name, data))
            rel += len(parts[-1])
        sample = b"".join(parts)
        # A sample never straddles pieces; a piece holds at least one sample.
        if self._file and self.max_bytes and self._offset + len(sample) + 2 * _BLOCK > self.max_bytes:
            self._close_piece()
        if self._file is None:
            self._open()
        self._index.append([(e, self._offset + o, n_bytes, n) for e, o, n_bytes, n in members])
        self._file.write(sample)
        self._hash.update(sample)
        self._offset += len(sample)

    def _close_piece(self) -> None:
        end = b"\0" * (2 * _BLOCK)
        self._file.write(end)
        self._hash.update(end)
        self._file.close()
        self._file = None
        idx_text = write_index(self._tar_path.with_suffix(".idx"), self._index)
        self._tmp.replace(self._tar_path)
        self.pieces.append({
            "count": len(self._index),
            "bytes": self._offset + 2 * _BLOCK,
            "sha256": self._hash.hexdigest(),
            "idx_sha256": hashlib.sha256(idx_text).hexdigest(),
        })

    def close(self) -> list[dict]:
        if self._file is not None:
            self._close_piece()
        return self.pieces

    def current(self) -> Path | None:
        """The piece last opened, if any (for error messages)."""
        return getattr(self, "_tar_path", None)

    def abort(self) -> None:
        """Remove the piece being written (the unit is redone whole on the next run)."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # its buffer may not fit on the disk either
                self._file.close()
            self._file = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.unlink(missing_ok=True)  # gone already once the piece was renamed


# Inputs up to this size are read whole and judged by the decoder; a larger one must first
# show an image header whose pixel count is within --max-pixels and whose file size fits
# that many pixels (8 bytes a pixel: 16-bit RGBA uncompressed), so that a 2 GB file of
# anything else is refused after a few KB instead of being read into every worker's memory.
READ_WHOLE_BYTES = 32 << 20


def _header_check(path: Path, n_bytes: int, max_pixels: int) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except UnidentifiedImageError:
        raise image.Rejected("not_an_image", f"{n_bytes} bytes and no image header") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise image.Rejected("corrupt", str(err)) from None
    if width * height > max_pixels:
        raise image.Rejected("too_large", f"{width}x{height} exceeds --max-pixels {max_pixels}")
    if n_bytes > 8 * width * height + (1 << 20):
        raise image.Rejected("too_large", f"{n_bytes} bytes for a {width}x{height} image")


def _read(path: Path, max_pixels: int = image.DEFAULT_MAX_PIXELS) -> bytes:
    try:
        n_bytes = path.stat().st_size
        if n_bytes > READ_WHOLE_BYTES:
            _header_check(path, n_bytes, max_pixels)
        return path.read_bytes()
    except OSError as err:
        raise image.Rejected("unreadable", err.strerror or str(err)) from None


def process_unit(unit: Unit, src: Path, workdir: Path, options: Options, progress=None) -> dict:
    """Write one unit's pieces, moments and record into `workdir`; return the record.

    The record (`UNIT.json`) is written last: its presence means the rest is whole.
    `progress`, if given, is called with the number of inputs done since the last call.
    """
    writer = PieceWriter(workdir, unit.name, options.shard_max_bytes)
    try:
        return _write_unit(unit, src, workdir, options, writer, progress)
    except BaseException as err:
        writer.abort()
        if isinstance(err, OSError) and exitcodes.is_no_space(err):
            raise no_space(writer.current() or workdir, err) from err
        raise


def _write_unit(unit: Unit, src: Path, workdir: Path, options: Options, writer: PieceWriter, progress) -> dict:
    moments = Moments(options.size) if unit.split == "train" else None
    rejects = []
    for sample in unit.samples:
        try:
            pixels = image.prepare(_read(src / sample.rel, options.max_pixels), options.size, options.max_pixels)
        except image.Rejected as r:
            rejects.append({"path": printable(sample.rel), "split": unit.split, "reason": r.reason, "detail": r.detail})
        else:
            meta = json.dumps({"src": printable(sample.rel), "wnid": sample.wnid}, sort_keys=True).encode()
            jpeg = image.encode(pixels, options.quality)
            writer.add(sample.key, [(EXT_IMAGE, jpeg), (EXT_LABEL, str(sample.label).encode()), (EXT_META, meta)])
            if moments is not None:
                moments.add(pixels)
        if progress is not None:
            progress(1)
    record = {"unit": unit.name, "split": unit.split, "inputs": unit.count,
              "pieces": writer.close(), "rejects": rejects}
    if moments is not None:
        moments.save(workdir / f"{unit.name}.moments.npz")
    with replacing(workdir / f"{unit.name}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    return record

