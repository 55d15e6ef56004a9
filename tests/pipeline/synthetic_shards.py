"""Small shard directories with exactly known content, for the pipeline tests and benchmark.

Each sample's label is its global sample number, so a test can tell which sample a
batch row came from. Images are smooth colour fields plus texture, so the JPEG codec has
real work and decoder differences show up as they do on photos.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.contract import EXT_IMAGE, EXT_LABEL, IMAGE_SIZE, DatasetStats, index_name, shard_name
from preprocess.indexfile import write_index as contract_write_index


def synthetic_image(rng: np.random.Generator) -> np.ndarray:
    """A 256x256x3 uint8 image: a random colour gradient with blobs and noise."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for c in range(3):
        a, b, f = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(2, 12)
        img[..., c] = 128 + 60 * (a * xx + b * yy) + 40 * np.sin(f * (xx * a + yy * b) * np.pi)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_index(tar_path: Path) -> Path:
    """Write the DALI index of a tar, through `preprocess.contract` (its only writer)."""
    samples: list[list[tuple[str, int, int, str]]] = []
    last_key = None
    with tarfile.open(tar_path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = m.name.split(".", 1)
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append((ext, m.offset_data, m.size, m.name))
    idx = tar_path.with_name(index_name(tar_path))
    contract_write_index(idx, samples)
    return idx


def relabel(tar_path: Path, member_index: int, label: bytes) -> str:
    """Rewrite the .cls payload of a shard's `member_index`-th sample (its size may change:
    the tar and its index are rebuilt); returns the sample's key."""
    with tarfile.open(tar_path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    cls = [i for i, (n, _) in enumerate(members) if n.endswith(f".{EXT_LABEL}")][member_index]
    members[cls] = (members[cls][0], label)
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _add(tar, name, data)
    write_index(tar_path)
    return members[cls][0].split(".", 1)[0]


def write_split(
    out_dir: Path,
    split: str,
    shard_sizes: list[int],
    seed: int = 0,
    first_label: int = 0,
    damaged: dict[int, bytes] | None = None,
) -> list[np.ndarray]:
    """Write `{split}-NNNNNN.tar` + `.idx`; sample i gets key `{split}_{i:06d}`, label i.

    `damaged` maps a sample number to the bytes stored instead of its JPEG.
    Returns the decoded-from-source images (before JPEG) in sample order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, n = [], first_label
    for s, size in enumerate(shard_sizes):
        path = out_dir / shard_name(split, s)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(size):
                img = synthetic_image(rng)
                images.append(img)
                key = f"{split}_{n:06d}"
                data = (damaged or {}).get(n, None)
                _add(tar, f"{key}.{EXT_IMAGE}", data if data is not None else jpeg_bytes(img))
                _add(tar, f"{key}.{EXT_LABEL}", str(n).encode())
                n += 1
        write_index(path)
    return images


def write_stats(out_dir: Path, images: list[np.ndarray]) -> DatasetStats:
    """stats.npz from the given train images, computed as docs/design.md defines it."""
    px = np.stack(images).astype(np.float64)
    flat = px.reshape(-1, 3)
    cov = np.cov(flat, rowvar=False, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    stats = DatasetStats(
        n_pixels=flat.shape[0],
        mean_rgb=flat.mean(0),
        cov=cov,
        eigvals=vals[order],
        eigvecs=vecs[:, order],
        mean_image=px.mean(0).astype(np.float32),
    )
    stats.save(out_dir / "stats.npz")
    return stats


def make_dataset(out_dir: Path, train_sizes: list[int], val_sizes: list[int], seed: int = 0) -> Path:
    """A complete shard directory: train and val shards with indexes, and stats.npz."""
    train = write_split(out_dir, "train", train_sizes, seed=seed)
    write_split(out_dir, "val", val_sizes, seed=seed + 1, first_label=sum(train_sizes))
    write_stats(out_dir, train)
    return out_dir


# The pipeline tests' shard layout (tests/pipeline/conftest.py builds it). Uneven sizes on
# purpose: ranks and batches straddle shard boundaries. Kept here, not in conftest.py,
# because every test folder has a module named conftest.
TRAIN_SIZES = [40, 40, 37]
VAL_SIZES = [30, 23]


def sample_location(sizes: list[int], n: int, first: int = 0) -> tuple[int, int]:
    """(shard number, sample number) of the sample with label n."""
    starts = np.cumsum([0, *sizes])
    s = int(np.searchsorted(starts, n - first, side="right") - 1)
    return s, n - first - int(starts[s])
