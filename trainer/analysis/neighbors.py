"""The right half of the paper's Figure 4: training images nearest to a query image in the
last, 4096-d hidden layer (Euclidean distance).

    trainer neighbors --checkpoint runs/NAME/checkpoints/last.pt [--data shards/] \
        [-o neighbors.png] [--k 6] photo.jpg ...

The first call builds a feature index of the train split (center patch of every image, one
pass) and saves it beside the checkpoint (`--index` to choose where); later calls with the
same checkpoint and shards reuse it. The index holds float16 features, their squared
norms, and where each image lies in its shard (byte offset and size), so the contact sheet
reads the six neighbours straight from the tar files. Distances come from batched matrix
products, |q|^2 - 2 q.x + |x|^2, over chunks of the index with a running top-k, so memory
stays bounded for the 1.2M ImageNet images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from common import argtypes
from trainer.run.loaders import add_loader_arguments
from common.tempfiles import replace_atomically, sweep_dead
from preprocess.contract import require_shards

INDEX_VERSION = 1
CHUNK_ROWS = 65536


class ShardImages(torch.utils.data.IterableDataset):
    """Center-patch inputs of a split with their location: (x, key, shard number, offset, size,
    label), read by the analysis tools' reader (`pipeline.inorder`); each DataLoader worker
    takes every n-th shard."""

    def __init__(self, data_dir: Path, split: str, config: dict, manifest=None):
        from pipeline.inorder import SplitSamples

        self.data_dir, self.config, self.manifest = data_dir, config, manifest
        self.samples = SplitSamples(data_dir, split, manifest)
        self.samples.index.table  # noqa: B018 -- parsed now, into shared memory, before any worker starts

    def __iter__(self):
        from trainer.analysis.inference import center_input

        info = torch.utils.data.get_worker_info()
        shards = range(len(self.samples.index.tars))
        for sample in self.samples.read(shards if info is None else shards[info.id :: info.num_workers]):
            x = center_input(sample.image, self.data_dir, self.config, self.manifest)
            yield x, sample.key, sample.shard, sample.offset, sample.size, sample.label


def index_dir_for(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + "-neighbors")


def _identity(checkpoint: Path, data_dir: Path) -> dict:
    """What the saved index was built from; a changed checkpoint or shard set forces a rebuild."""
    st = checkpoint.stat()
    shards = require_shards(data_dir, "train")
    return {"version": INDEX_VERSION, "checkpoint": str(checkpoint.resolve()), "checkpoint_bytes": st.st_size,
            "checkpoint_mtime_ns": st.st_mtime_ns, "data": str(data_dir.resolve()),
            "shards": [[p.name, p.stat().st_size] for p in shards]}


@torch.no_grad()
def build_index(model, data_dir: Path, config: dict, out: Path, device, flags, manifest=None) -> dict:
    """One pass over the train split; writes features.npy, sq_norms.npy, locations.npy, keys.txt.
    Its batch and worker processes are the one loader path's (`trainer.run.loaders`), for the
    reference loader on this process's device: `--batch-size` global, `--num-workers` 0 auto."""
    from trainer.run.distributed import World
    from trainer.run.loaders import loader_config

    lc = loader_config(data_dir, "train", "center", World(device=torch.device(device)), batch_size=flags.batch_size,
                       backend="reference", num_workers=flags.num_workers, manifest=manifest)
    loader = torch.utils.data.DataLoader(ShardImages(data_dir, "train", config, manifest), batch_size=lc.batch_size,
                                         num_workers=lc.num_workers)
    feats, locs, keys = [], [], []
    for x, key, shard, offset, size, label in loader:
        feats.append(model.hidden(x.to(device)).float().cpu().numpy().astype(np.float16))
        locs.append(np.stack([shard.numpy(), offset.numpy(), size.numpy(), label.numpy()], axis=1))
        keys.extend(key)
    out.mkdir(parents=True, exist_ok=True)
    features = np.concatenate(feats)
    sq = np.square(features.astype(np.float32)).sum(axis=1)  # norms of the stored float16 values
    for name, arr in (("features", features), ("sq_norms", sq), ("locations", np.concatenate(locs))):
        np.save(out / f"{name}.npy", arr)
    (out / "keys.txt").write_text("\n".join(keys) + "\n")
    return {"count": len(keys), "dim": int(features.shape[1])}


def open_index(out: Path) -> dict:
    return {"features": np.load(out / "features.npy", mmap_mode="r"),
            "sq_norms": np.load(out / "sq_norms.npy"),
            "locations": np.load(out / "locations.npy"),
            "keys": (out / "keys.txt").read_text().split("\n")[:-1]}


def nearest(queries: torch.Tensor, features, sq_norms, k: int, device, chunk: int = CHUNK_ROWS):
    """Squared Euclidean distances and rows of the k nearest index rows to each query."""
    q = queries.to(device, torch.float32)
    q_sq = q.square().sum(dim=1, keepdim=True)
    best_d = torch.full((len(q), 0), float("inf"), device=device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=device)
    for start in range(0, len(features), chunk):
        x = torch.from_numpy(np.asarray(features[start : start + chunk], np.float32)).to(device)
        x_sq = torch.from_numpy(np.asarray(sq_norms[start : start + chunk])).to(device)
        d = (q_sq - 2.0 * q @ x.T + x_sq[None, :]).clamp_min_(0)
        idx = torch.arange(start, start + len(x), device=device).expand(len(q), -1)
        d, idx = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        best_d, pos = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i = idx.gather(1, pos)
    return best_d.cpu(), best_i.cpu()


def read_stored(data_dir: Path, shard: int, offset: int, size: int) -> np.ndarray:
    """A training image straight from its shard by byte offset (no scan of the tar)."""
    from trainer.analysis.inference import decode_stored

    with open(require_shards(data_dir, "train")[shard], "rb") as f:
        f.seek(offset)
        return decode_stored(f.read(size))


def contact_sheet(rows: list[list[np.ndarray]], captions: list[list[str]], path: Path, thumb: int = 128) -> None:
    """One row per query: the query, then its neighbours, as in Figure 4 (right)."""
    from PIL import Image, ImageDraw

    gap, text_h = 4, 14
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (thumb + gap) + gap * 3, len(rows) * (thumb + text_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, texts) in enumerate(zip(rows, captions)):
        y = gap + r * (thumb + text_h + gap)
        for c, (image, text) in enumerate(zip(images, texts)):
            x = gap + c * (thumb + gap) + (gap * 2 if c else 0)  # set the query apart
            sheet.paste(Image.fromarray(image).resize((thumb, thumb), Image.BILINEAR), (x, y))
            draw.text((x + 1, y + thumb + 1), text[:22], fill="black")
    sweep_dead(path.parent, target=path.name)  # a former writer's, killed mid-write
    replace_atomically(path, lambda tmp: sheet.save(tmp, format="PNG"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `trainer train`")
    parser.add_argument("--data", help="shard folder (default: the one in the checkpoint's config)")
    parser.add_argument("--index", help="feature index folder (default: beside the checkpoint)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even if it is current")
    parser.add_argument("-k", "--k", type=argtypes.positive_int, default=6, help="neighbours per image (the paper: 6)")
    parser.add_argument("-o", "--output", default="neighbors.png", help="contact sheet PNG")
    add_loader_arguments(parser, 128, "images")
    parser.add_argument("--device", type=argtypes.device, default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("images", nargs="+", help="query JPEG or PNG files")


def ensure_index(args, model, config, data_dir: Path, device, manifest=None) -> Path:
    """The saved index if it was built from this checkpoint and these shards, else a new one."""
    out = Path(args.index) if args.index else index_dir_for(args.checkpoint)
    identity = _identity(Path(args.checkpoint), data_dir)
    meta_path = out / "meta.json"
    if not args.rebuild and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in identity} == json.loads(json.dumps(identity)):
            print(f"using the feature index in {out} ({meta['count']} training images)")
            return out
    print(f"building the feature index of {data_dir} in {out} (once per checkpoint)")
    meta_path.unlink(missing_ok=True)  # an interrupted rebuild must not look current
    info = build_index(model, data_dir, config, out, device, args, manifest)
    meta_path.write_text(json.dumps({**identity, **info}, indent=2) + "\n")
    return out


def run(args: argparse.Namespace) -> int:
    from common import exitcodes
    from preprocess.contract import DataError
    from trainer.run.distributed import setup
    from trainer.analysis.inference import CheckpointError, image_input, load_models

    device = setup(args.device).device
    try:
        (model,), (config,), data_dir, manifest = load_models([args.checkpoint], args.data, device)
        queries = [image_input(p, data_dir, config, manifest) for p in args.images]
        index = open_index(ensure_index(args, model, config, data_dir, device, manifest))
    except (CheckpointError, DataError) as exc:
        print(f"trainer neighbors: {exc}")
        return exitcodes.for_error(exc)
    names = manifest.class_names()
    with torch.no_grad():
        q = model.hidden(torch.stack([x for x, _ in queries]).to(device)).float()
    dist, rows = nearest(q, index["features"], index["sq_norms"], args.k, device)
    sheet, captions = [], []
    for path, (_, image), d, r in zip(args.images, queries, dist.tolist(), rows.tolist()):
        print(path)
        sheet.append([image])
        captions.append([Path(path).name])
        for dd, i in zip(d, r):
            shard, offset, size, label = (int(v) for v in index["locations"][i])
            print(f"  {dd ** 0.5:10.3f}  {index['keys'][i]}  {names[label]}")
            sheet[-1].append(read_stored(data_dir, shard, offset, size))
            captions[-1].append(names[label])
    contact_sheet(sheet, captions, Path(args.output))
    print(f"wrote {args.output}")
    return 0
