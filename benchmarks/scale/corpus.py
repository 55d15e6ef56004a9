"""Synthetic ImageNet-shaped corpora for `benchmarks/scale_bench.py`, built cheaply.

`build_source`: the layout `preprocess shard` reads (1,000 class folders of train images,
val in class folders), every file a hard link into a pool of distinct tiny JPEGs, so that
160,000 inputs cost seconds and a few megabytes. `link_full_split`: ImageNet's exact
counts (1,281,167 train samples in 1,282 shards, 50,000 val) as hard links of one real
shard that `preprocess shard` wrote (and one cut to the remainder), with their DALI index
files and a manifest: every loader code path (planning, `make_loader`, workers, lookup,
DALI's index parsing, decoding) runs on it for real, with repeated samples.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.contract import STATS_NAME, index_name, load_manifest, shard_name, write_manifest
from preprocess.indexfile import read_index, read_index_count, write_index
from preprocess.offsetstable import write_table

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000
IMAGENET_CLASSES = 1_000
POOL = 4096  # distinct source JPEGs; the inputs are hard links to them
TAR_BLOCK = 512


def tiny_jpeg(rng: np.random.Generator, side: int = 32) -> bytes:
    """A distinct, smooth 32x32 JPEG: 4x4 random colours, bicubic-enlarged, with noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((side, side), Image.BICUBIC), np.int16)
    img = np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def build_pool(folder: Path, size: int = POOL, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(size):
        p = folder / f"p{i:05d}.jpg"
        if not p.exists():
            p.write_bytes(tiny_jpeg(rng))
        paths.append(p)
    return paths


def wnid(c: int) -> str:
    return f"n{c:08d}"


def build_source(root: Path, pool: list[Path], n_train: int, n_val: int, classes: int = IMAGENET_CLASSES) -> Path:
    """train/<wnid>/<wnid>_<j>.JPEG (n_train spread evenly over `classes`) and
    val/<wnid>/ILSVRC2012_val_<k>.JPEG, all hard links into `pool`."""
    for split, count in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            (root / split / wnid(c)).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            c, j = k % classes, k // classes
            name = f"{wnid(c)}_{j}.JPEG" if split == "train" else f"ILSVRC2012_val_{k + 1:08d}.JPEG"
            target = root / split / wnid(c) / name
            if not target.exists():
                os.link(pool[(c * 131 + j * 7 + (split == "val")) % len(pool)], target)
    return root


def _cut_shard(tar: Path, idx: Path, count: int, dst_tar: Path) -> None:
    """The first `count` samples of a shard as a whole tar with its index."""
    samples = read_index(idx)[:count]
    end = max(offset + size for members in samples for _, offset, size, _ in members)
    end += -end % TAR_BLOCK
    with open(tar, "rb") as f:
        data = f.read(end)
    dst_tar.write_bytes(data + b"\0" * (2 * TAR_BLOCK))
    write_index(dst_tar.with_name(index_name(dst_tar)), samples)


def _link_split(src: Path, dst: Path, split: str, total: int) -> list[dict]:
    tar = src / shard_name(split, 0)
    idx = tar.with_name(index_name(tar))
    per = read_index_count(idx)
    shards, n = [], 0
    while n < total:
        out = dst / shard_name(split, len(shards))
        take = min(per, total - n)
        if take == per:
            os.link(tar, out)
            os.link(idx, out.with_name(index_name(out)))
        else:
            _cut_shard(tar, idx, take, out)
        shards.append({"name": out.name, "count": take, "bytes": out.stat().st_size, "sha256": ""})
        n += take
    return shards


def link_full_split(src: Path, dst: Path, n_train: int = IMAGENET_TRAIN, n_val: int = IMAGENET_VAL) -> Path:
    """ImageNet-sized shards in `dst`, hard-linked from `src` (a `preprocess shard` output)."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(src)
    splits = {}
    for split, total in (("train", n_train), ("val", n_val)):
        shards = _link_split(src, dst, split, total)
        splits[split] = {"count": total, "bytes": sum(s["bytes"] for s in shards), "shards": shards,
                         "offsets": write_table(dst, split, [dst / index_name(s["name"]) for s in shards],
                                                [s["count"] for s in shards])}
    manifest["splits"] = splits
    manifest["totals"] = {"count": n_train + n_val, "bytes": sum(s["bytes"] for s in splits.values())}
    write_manifest(dst, manifest)
    os.link(src / STATS_NAME, dst / STATS_NAME)
    return dst

