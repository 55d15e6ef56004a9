"""The data contract between `preprocess` (writer) and `pipeline`/`trainer` (readers).

Shard names, sample fields, manifest and statistics live here once; the index files' format
in `preprocess.indexfile`. See `docs/design.md`, "Data contracts". Change them only together with
every reader.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import exitcodes
from common.tempfiles import replacing

FORMAT_VERSION = 1
IMAGE_SIZE = 256  # side of the stored square image
CROP_SIZE = 224  # side of the network's input crop
SPLITS = ("train", "val")

# Sample fields inside a shard: KEY.jpg, KEY.cls, optionally KEY.json.
EXT_IMAGE = "jpg"
EXT_LABEL = "cls"
EXT_META = "json"

MANIFEST_NAME = "dataset.json"
# Where `preprocess shard` writes and `trainer train` reads when neither is told (--out,
# --data): shards/ in the current folder.
DEFAULT_DATA_DIR = "shards"
STATS_NAME = "stats.npz"
REJECTS_NAME = "rejects.jsonl"

# Names stored in stats.npz (all computed on the 0-255 scale from train pixels).
STATS_FIELDS = ("n_pixels", "mean_rgb", "cov", "eigvals", "eigvecs", "mean_image")

_SHARD_RE = re.compile(r"^(train|val)-(\d{6})\.tar$")


class DataError(RuntimeError):
    """Missing or inconsistent prepared data; the message names the command that fixes it."""


class CorruptError(DataError):
    """A file of the prepared data (dataset.json, stats.npz, an index) is damaged; the message
    names the file and the command that rewrites it."""

    exit_code = exitcodes.CORRUPT


# What rewrites dataset.json, stats.npz or an index: a rerun keeps the shards that verify
# and rewrites the rest from OUT/.preprocess/ (--overwrite only when that folder is gone).
REWRITE_FIX = ("rerun the `preprocess shard` command that made it (or `preprocess stats --merge PART_DIR...` "
               "for a split job); with --overwrite if {dir}/.preprocess is gone")


def shard_name(split: str, index: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{split}-{index:06d}.tar"


def index_name(shard: str | Path) -> str:
    """The DALI index file that sits beside a shard: train-000000.tar -> train-000000.idx."""
    return Path(shard).name[: -len(".tar")] + ".idx"


def list_shards(data_dir: str | Path, split: str) -> list[Path]:
    """The split's complete shards in order; temporary files never match the pattern."""
    data_dir = Path(data_dir)
    found = sorted(
        p for p in data_dir.glob(f"{split}-*.tar") if (m := _SHARD_RE.match(p.name)) and m.group(1) == split
    )
    return found


def require_shards(data_dir: str | Path, split: str) -> list[Path]:
    shards = list_shards(data_dir, split)
    if not shards:
        raise DataError(
            f"no {split} shards in {data_dir}: create them with "
            f"`preprocess shard --src IMAGENET_DIR --out {data_dir}`"
        )
    return shards


def load_manifest(data_dir: str | Path) -> dict:
    """dataset.json whole and checked, as a dict: for the code that writes, merges or
    reports it. A reader of its fields uses `Manifest.read`."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"no {MANIFEST_NAME} in {data_dir}: create it with "
            f"`preprocess shard --src IMAGENET_DIR --out {data_dir}`"
        )
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptError(f"{path} is damaged ({err}): {REWRITE_FIX.format(dir=data_dir)}") from None
    if not isinstance(manifest, dict):
        raise CorruptError(f"{path} is not a manifest (a JSON {type(manifest).__name__}): "
                           f"{REWRITE_FIX.format(dir=data_dir)}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {manifest.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}: re-run `preprocess shard --overwrite`"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise CorruptError(f"{path} is damaged ({problem}): {REWRITE_FIX.format(dir=data_dir)}")
    return manifest


def _manifest_problem(manifest: dict) -> str | None:
    """What makes a parsed manifest unusable, or None: the fields every reader relies on."""
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "wnid" in c and "index" in c for c in classes):
        return "its class list is missing or malformed"
    if sorted(_int_or_none(c["index"]) or 0 for c in classes) != list(range(len(classes))):
        return "its class indices are not 0..N-1"
    if not all(isinstance(manifest.get(k, {}), dict) for k in ("splits", "params")):
        return "its splits or params are not objects"
    recorded = manifest.get("class_digest")  # absent in manifests written before it existed
    if recorded is not None and recorded != class_digest(classes):
        return "its class list does not match its class_digest"
    return None


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_manifest(data_dir: str | Path, manifest: dict) -> Path:
    """Write `dataset.json` atomically; this and `load_manifest` are its only writer and reader."""
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"a manifest of format {manifest.get('format_version')}, this code writes {FORMAT_VERSION}")
    path = Path(data_dir) / MANIFEST_NAME
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


@dataclass(frozen=True)
class DatasetStats:
    """Training-set statistics on the 0-255 scale (see docs/design.md, "Statistics")."""

    n_pixels: int
    mean_rgb: np.ndarray  # (3,)
    cov: np.ndarray  # (3, 3)
    eigvals: np.ndarray  # (3,), descending
    eigvecs: np.ndarray  # (3, 3), column i belongs to eigvals[i]
    mean_image: np.ndarray  # (256, 256, 3) float32, HWC

    def nonfinite(self) -> list[str]:
        """The fields holding NaN or infinity (a mean image with a NaN trains on garbage)."""
        return [name for name in STATS_FIELDS[1:] if not np.all(np.isfinite(getattr(self, name)))]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        bad = self.nonfinite()
        if bad:
            raise ValueError(f"refusing to write {path}: non-finite values in {', '.join(bad)}")
        with replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                n_pixels=np.int64(self.n_pixels),
                mean_rgb=self.mean_rgb.astype(np.float64),
                cov=self.cov.astype(np.float64),
                eigvals=self.eigvals.astype(np.float64),
                eigvecs=self.eigvecs.astype(np.float64),
                mean_image=self.mean_image.astype(np.float32),
            )


_STATS_SHAPES = {"n_pixels": (), "mean_rgb": (3,), "cov": (3, 3), "eigvals": (3,), "eigvecs": (3, 3)}


def load_stats(data_dir: str | Path, image_size: int | None = None) -> DatasetStats:
    """stats.npz, checked: every field present, of its dtype and shape (the mean image of the
    manifest's image size; `image_size` when the caller read the manifest already), and
    finite (CorruptError if not). The one reader: every command's check is this one."""
    path = Path(data_dir) / STATS_NAME
    if not path.is_file():
        raise DataError(
            f"no {STATS_NAME} in {data_dir}: it is written with the shards by "
            f"`preprocess shard --src IMAGENET_DIR --out {data_dir}` "
            f"(or `preprocess stats --merge PART_DIR...` for a split job)"
        )
    if image_size is None:
        image_size = Manifest.read(data_dir).image_size if (Path(data_dir) / MANIFEST_NAME).is_file() else IMAGE_SIZE
    fix = REWRITE_FIX.format(dir=data_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in STATS_FIELDS if k not in z]
            if missing:
                raise CorruptError(f"{path} lacks {missing}: {fix}")
            raw = {k: z[k] for k in STATS_FIELDS}
    except CorruptError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as err:  # torn or foreign
        raise CorruptError(f"{path} is damaged ({type(err).__name__}: {err}): {fix}") from None
    # A field of another kind (text, complex, integer pixels) or size is another file's, or
    # a mean image of other shards: casting it, or cropping a 224 window out of it, would
    # train on a wrong mean without a word.
    shapes = {**_STATS_SHAPES, "mean_image": (image_size, image_size, 3)}
    wrong = [f"{k} is {raw[k].dtype} {_shape(raw[k])}, expected {'an integer' if k == 'n_pixels' else 'float'} "
             f"{_shape(shapes[k])}" for k in STATS_FIELDS
             if raw[k].shape != shapes[k] or raw[k].dtype.kind not in ("iu" if k == "n_pixels" else "f")]
    if wrong:
        raise CorruptError(f"{path} does not fit the {image_size}x{image_size} images of {MANIFEST_NAME} "
                           f"({'; '.join(wrong)}): {fix}")
    stats = DatasetStats(
        n_pixels=int(raw["n_pixels"]),
        mean_rgb=np.asarray(raw["mean_rgb"], np.float64),
        cov=np.asarray(raw["cov"], np.float64),
        eigvals=np.asarray(raw["eigvals"], np.float64),
        eigvecs=np.asarray(raw["eigvecs"], np.float64),
        mean_image=np.asarray(raw["mean_image"], np.float32),
    )
    bad = stats.nonfinite()
    if bad:
        raise CorruptError(f"{path} holds NaN or infinite values in {', '.join(bad)}: {fix}")
    return stats


def _shape(shape_or_array) -> str:
    shape = getattr(shape_or_array, "shape", shape_or_array)
    return "x".join(map(str, shape)) if shape else "scalar"


# --- Manifest fields (added with `preprocess shard`) -------------------------------------
# dataset.json = {
#   "format_version": 1,
#   "params": {"image_size", "jpeg_quality", "jpeg_subsampling", "resize_filter", "seed",
#              "shard_max_count", "shard_max_bytes", "max_pixels", "dct_margin"},
#   "classes": [{"index", "wnid", "name"}],
#   "splits": {"train": {"count", "bytes", "shards": [{"name", "count", "bytes", "sha256"}]},
#              "val": {...}},
#   "totals": {"count", "bytes"},
#   "rejected": int,
#   "class_digest": class_digest(classes),  # the labels' meaning; readers check it
#   "source_digest": str,  # the listing of --src the plan was cut from (with params: the shard set)
# }
WORK_DIR = ".preprocess"  # inside the output folder: per-shard statistics and bookkeeping


@dataclass(frozen=True)
class SplitEntry:
    count: int
    shards: tuple[dict, ...]  # {"name", "count", "bytes", "sha256"}, in shard order
    offsets: dict | None = None  # {"name", "rows", "bytes", "sha256", "index_sha256"} (preprocess.offsetstable)


@dataclass(frozen=True)
class Manifest:
    """dataset.json as its readers use it: `Manifest.read(data_dir)`, checked by
    `load_manifest`, with typed fields. The preprocess side that writes, merges and reports
    the file keeps the whole dict (`load_manifest`, `write_manifest`)."""

    classes: tuple[dict, ...]  # {"index", "wnid", "name"}, in label order
    image_size: int  # side of the stored square images
    splits: dict[str, SplitEntry]  # the splits the file lists

    @classmethod
    def read(cls, data_dir: str | Path) -> "Manifest":
        return cls.of(load_manifest(data_dir))

    @classmethod
    def of(cls, manifest: dict) -> "Manifest":
        """The view of a manifest dict that `load_manifest` checked."""
        splits = {name: SplitEntry(int(entry.get("count", 0)), tuple(entry.get("shards", [])), entry.get("offsets"))
                  for name, entry in manifest.get("splits", {}).items()}
        return cls(classes=tuple(sorted(manifest["classes"], key=lambda c: c["index"])),
                   image_size=int(manifest.get("params", {}).get("image_size", IMAGE_SIZE)), splits=splits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_digest(self) -> str:
        return class_digest(list(self.classes))

    def class_names(self) -> list[str]:
        """Each label's name (its wnid where the name is missing), in label order."""
        return [c.get("name") or c["wnid"] for c in self.classes]

    def split_count(self, split: str) -> int:
        """Samples of a split (0 when the split is absent)."""
        entry = self.splits.get(split)
        return entry.count if entry else 0

    def split_offsets(self, split: str) -> dict | None:
        """The split's offsets table entry; None for shards written before there was one."""
        entry = self.splits.get(split)
        return entry.offsets if entry else None

    def split_shards(self, split: str) -> tuple[dict, ...]:
        """A split's shard entries in order (none when the split is absent)."""
        entry = self.splits.get(split)
        return entry.shards if entry else ()


def sha256_file(*paths: str | Path) -> str:
    """sha256 of the files' bytes, one after the other (the digests the manifest records)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def class_digest(classes: list[dict]) -> str:
    """sha256 of the class list in label order (wnids only: names may be re-labelled).

    Two datasets with the same digest give every label the same meaning; checkpoints record
    it so that resume, evaluate and predict refuse shards whose labels mean other classes.
    """
    wnids = [c["wnid"] for c in sorted(classes, key=lambda c: int(c["index"]))]
    return hashlib.sha256(json.dumps(wnids, separators=(",", ":")).encode()).hexdigest()
