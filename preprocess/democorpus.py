"""A small corpus in ImageNet's layout, made from real photos that installed packages ship.

Used by `preprocess demo-corpus --out DIR`, by `make demo` and by the tests. Each class is
one source photo (so classes are visually distinct); each sample is a different random
crop, scale, flip and slight colour change of it, saved as a JPEG at an ImageNet-like size.
The same seed gives the same files.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.sources import SYNSETS_NAME, VAL_SOLUTION_NAME

# (class name, package, file inside the package). Read straight from the package folders:
# importing sklearn.datasets just to find two JPEGs costs a second.
PHOTOS = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("cat", "skimage", "data/chelsea.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("galaxies", "skimage", "data/hubble_deep_field.jpg"),
    ("tissue", "skimage", "data/ihc.png"),
    ("retina", "skimage", "data/retina.jpg"),
    ("colorwheel", "skimage", "data/color.png"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("temple", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
    ("logo", "skimage", "data/logo.png"),
)
# Classes beyond len(PHOTOS) reuse a photo under a fixed, visible change.
VARIANTS = ("", "rot90", "swap_rb", "rot270")


@dataclass(frozen=True)
class CorpusSpec:
    classes: int = 10
    train_per_class: int = 30
    val_per_class: int = 10
    seed: int = 0
    min_side: int = 300  # shorter side of each sample, drawn uniformly in [min_side, max_side]
    max_side: int = 500
    flat_val: bool = False  # val/ as one folder plus LOC_val_solution.csv, as ImageNet ships it


def max_classes() -> int:
    return len(PHOTOS) * len(VARIANTS)


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the demo corpus needs the package {package!r}")
    path = Path(spec.origin).parent / rel
    if not path.is_file():
        raise RuntimeError(f"{package} no longer ships {rel}")
    return path


def load_photo(index: int) -> tuple[str, np.ndarray]:
    """Class `index`'s name and source photo as an RGB uint8 array."""
    name, package, rel = PHOTOS[index % len(PHOTOS)]
    with Image.open(_package_file(package, rel)) as im:
        if im.mode in ("RGBA", "LA", "P"):
            # Flatten transparency onto white, as a browser would show it.
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im)
        photo = np.asarray(im.convert("RGB"))
    variant = VARIANTS[index // len(PHOTOS)]
    if variant == "rot90":
        photo = np.rot90(photo, 1)
    elif variant == "rot270":
        photo = np.rot90(photo, 3)
    elif variant == "swap_rb":
        photo = photo[:, :, ::-1]
    return (f"{name}_{variant}" if variant else name), np.ascontiguousarray(photo)


def make_sample(photo: np.ndarray, rng: np.random.Generator, spec: CorpusSpec) -> bytes:
    """One random view of `photo` as JPEG bytes."""
    h, w = photo.shape[:2]
    area = rng.uniform(0.45, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = photo[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    # Slight colour jitter: per-channel gain and a brightness offset.
    gain = 1.0 + rng.normal(0.0, 0.04, size=3)
    crop = np.clip(crop * gain + rng.normal(0.0, 6.0), 0, 255).astype(np.uint8)
    short = int(rng.integers(spec.min_side, spec.max_side + 1))
    scale = short / min(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    im = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def build(out: str | Path, spec: CorpusSpec = CorpusSpec()) -> Path:
    """Write the corpus under `out` (train/, val/, LOC_synset_mapping.txt); return `out`."""
    if not 1 <= spec.classes <= max_classes():
        raise ValueError(f"--classes must be between 1 and {max_classes()}")
    if not 1 <= spec.min_side <= spec.max_side:
        raise ValueError("need 1 <= min_side <= max_side")
    out = Path(out)
    synsets, solution = [], ["ImageId,PredictionString"]
    val_number = 0
    for c in range(spec.classes):
        wnid = f"n{c + 1:08d}"
        name, photo = load_photo(c)
        synsets.append(f"{wnid} {name.replace('_', ' ')}")
        train_dir = out / "train" / wnid
        train_dir.mkdir(parents=True, exist_ok=True)
        for i in range(spec.train_per_class):
            rng = np.random.default_rng([spec.seed, c, 0, i])
            (train_dir / f"{wnid}_{i + 1}.JPEG").write_bytes(make_sample(photo, rng, spec))
        val_dir = out / "val" if spec.flat_val else out / "val" / wnid
        val_dir.mkdir(parents=True, exist_ok=True)
        for i in range(spec.val_per_class):
            rng = np.random.default_rng([spec.seed, c, 1, i])
            val_number += 1
            stem = f"ILSVRC2012_val_{val_number:08d}"
            (val_dir / f"{stem}.JPEG").write_bytes(make_sample(photo, rng, spec))
            solution.append(f"{stem},{wnid} 0 0 1 1")
    (out / SYNSETS_NAME).write_text("\n".join(synsets) + "\n")
    if spec.flat_val:
        (out / VAL_SOLUTION_NAME).write_text("\n".join(solution) + "\n")
    return out
