"""The data contract between `preprocess` (writer) and `pipeline`/`trainer` (readers).

Shard names, sample fields, manifest and statistics names live here once; see
`DESIGN.md`, "Data contracts". Change them only together with every reader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
IMAGE_SIZE = 256  # side of the stored square image
CROP_SIZE = 224  # side of the network's input crop
SPLITS = ("train", "val")

# Sample fields inside a shard: KEY.jpg, KEY.cls, optionally KEY.json.
EXT_IMAGE = "jpg"
EXT_LABEL = "cls"
EXT_META = "json"

MANIFEST_NAME = "dataset.json"
STATS_NAME = "stats.npz"
REJECTS_NAME = "rejects.jsonl"

# Names stored in stats.npz (all computed on the 0-255 scale from train pixels).
STATS_FIELDS = ("n_pixels", "mean_rgb", "cov", "eigvals", "eigvecs", "mean_image")

_SHARD_RE = re.compile(r"^(train|val)-(\d{6})\.tar$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class DataError(RuntimeError):
    """Missing or inconsistent prepared data; the message names the command that fixes it."""


def shard_name(split: str, index: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{split}-{index:06d}.tar"


def index_name(shard: str | Path) -> str:
    """The DALI index file that sits beside a shard: train-000000.tar -> train-000000.idx."""
    return Path(shard).name[: -len(".tar")] + ".idx"


def is_valid_key(key: str) -> bool:
    """Keys are unique in the dataset and have no dots (webdataset splits on the first dot)."""
    return bool(_KEY_RE.match(key))


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
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"no {MANIFEST_NAME} in {data_dir}: create it with "
            f"`preprocess shard --src IMAGENET_DIR --out {data_dir}`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {manifest.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}: re-run `preprocess shard --overwrite`"
        )
    return manifest


@dataclass(frozen=True)
class DatasetStats:
    """Training-set statistics on the 0-255 scale (see DESIGN.md, "Statistics")."""

    n_pixels: int
    mean_rgb: np.ndarray  # (3,)
    cov: np.ndarray  # (3, 3)
    eigvals: np.ndarray  # (3,), descending
    eigvecs: np.ndarray  # (3, 3), column i belongs to eigvals[i]
    mean_image: np.ndarray  # (256, 256, 3) float32, HWC

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                n_pixels=np.int64(self.n_pixels),
                mean_rgb=self.mean_rgb.astype(np.float64),
                cov=self.cov.astype(np.float64),
                eigvals=self.eigvals.astype(np.float64),
                eigvecs=self.eigvecs.astype(np.float64),
                mean_image=self.mean_image.astype(np.float32),
            )
        tmp.replace(path)


def load_stats(data_dir: str | Path) -> DatasetStats:
    path = Path(data_dir) / STATS_NAME
    if not path.is_file():
        raise DataError(
            f"no {STATS_NAME} in {data_dir}: it is written with the shards by "
            f"`preprocess shard --src IMAGENET_DIR --out {data_dir}` "
            f"(or `preprocess stats --merge PART_DIR...` for a split job)"
        )
    with np.load(path) as z:
        missing = [k for k in STATS_FIELDS if k not in z]
        if missing:
            raise DataError(f"{path} lacks {missing}: re-run `preprocess shard --overwrite`")
        return DatasetStats(
            n_pixels=int(z["n_pixels"]),
            mean_rgb=np.asarray(z["mean_rgb"], np.float64),
            cov=np.asarray(z["cov"], np.float64),
            eigvals=np.asarray(z["eigvals"], np.float64),
            eigvecs=np.asarray(z["eigvecs"], np.float64),
            mean_image=np.asarray(z["mean_image"], np.float32),
        )


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
# }
WORK_DIR = ".preprocess"  # inside the output folder: per-shard statistics and bookkeeping


def split_count(manifest: dict, split: str) -> int:
    """Number of samples of a split in a manifest (0 when the split is absent)."""
    return int(manifest.get("splits", {}).get(split, {}).get("count", 0))


def num_classes(manifest: dict) -> int:
    return len(manifest["classes"])


# --- DALI index files ---------------------------------------------------------------------
# The format `wds2idx` writes and `fn.readers.webdataset(index_paths=...)` reads (v1.2):
# a first line "v1.2 N", then one line per sample: "EXT OFFSET SIZE NAME" per member, where
# OFFSET is where the member's data starts (after its 512-byte tar header).
INDEX_VERSION = "v1.2"


def format_index(samples: list[list[tuple[str, int, int, str]]]) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for members in samples:
        lines.append(" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members))
    return "\n".join(lines) + "\n"


def parse_index(text: str) -> list[list[tuple[str, int, int, str]]]:
    """Inverse of `format_index`; raises ValueError on a malformed file."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("empty index file")
    head = lines[0].split()
    if len(head) != 2 or head[0] != INDEX_VERSION:
        raise ValueError(f"index header {lines[0]!r} is not '{INDEX_VERSION} N'")
    samples = []
    for line in lines[1:]:
        parts = line.split()
        if not parts or len(parts) % 4:
            raise ValueError(f"malformed index line {line!r}")
        samples.append(
            [(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3]) for i in range(0, len(parts), 4)]
        )
    if len(samples) != int(head[1]):
        raise ValueError(f"index says {head[1]} samples but lists {len(samples)}")
    return samples
