"""The output folder of `preprocess shard` / `preprocess stats --merge`: bookkeeping, resume, manifest.

Layout under OUT: the shards, their `.idx` files, each split's offsets table
(`preprocess.offsetstable`), `dataset.json`, `stats.npz`, `rejects.jsonl` (the contract),
and `.preprocess/` with what makes reruns and merges exact: `options.json` (what the bytes
depend on), `source.json` (classes, unit names, rejects found before decoding), and per unit `UNIT.json` (its pieces' sizes and hashes,
its rejects), `UNIT.moments.npz` (train) and, until placed, its pieces `UNIT-pN.tar/.idx`.
Writing the dataset folds every train unit's moments into `train.moments.npz` (their
exact sum and the names of the units in it), one unit at a time, and deletes the
units' files: what stays is one total (0.8 MB) instead of 0.75 MB a shard (1 GB at
ImageNet size), and a rerun or a merge adds only units not yet in the total.
Placing renames pieces to their final shard names in plan order (index first, then tar,
so a `.tar` with a final name is always whole and has its index).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from preprocess.contract import (
    FORMAT_VERSION, MANIFEST_NAME, REJECTS_NAME, SPLITS, STATS_NAME, WORK_DIR, class_digest, index_name, sha256_file,
    shard_name, write_manifest,
)
from common.tempfiles import replacing, sweep_dead, temp_path
from preprocess.offsetstable import table_name, write_table
from preprocess.stats import Moments, merge_all

OPTIONS_FILE = "options.json"
SOURCE_FILE = "source.json"
FOLDED_FILE = "train.moments.npz"  # the exact sum of the moments of the units it names


class OutputError(RuntimeError):
    """The output folder cannot be used as asked; the message is one line for the user."""


def _write_json(path: Path, obj) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Output:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.work = self.out / WORK_DIR
        self._folded: set[str] | None = None  # units in FOLDED_FILE, read once

    # --- starting a run -------------------------------------------------------------
    def open(self, settings: dict, source_info: dict, overwrite: bool) -> None:
        """Create or reuse OUT for a run with `settings` ({"params", "source_digest"})."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = temp_path(self.out / ".write-test")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise OutputError(f"cannot write to --out {self.out}: {err.strerror or err}") from None
        self.sweep()
        previous = _read_json(self.work / OPTIONS_FILE)
        has_output = (self.out / MANIFEST_NAME).exists() or any(self.out.glob("*-*.tar"))
        if not overwrite and previous is not None and previous != settings:
            differ = sorted(k for k in previous.get("params", {}) if previous["params"].get(k) != settings["params"].get(k))
            what = f"options differ: {', '.join(differ)}" if differ else "the source changed"
            raise OutputError(f"{self.out} holds output made with other options ({what}); pass --overwrite to "
                              f"replace it, or --out DIR to write elsewhere")
        if not overwrite and previous is None and has_output:
            raise OutputError(f"{self.out} holds shards this tool did not record; pass --overwrite to replace them, "
                              f"or --out DIR to write elsewhere")
        if overwrite:
            self.clear()
        self.work.mkdir(parents=True, exist_ok=True)
        _write_json(self.work / OPTIONS_FILE, settings)
        _write_json(self.work / SOURCE_FILE, source_info)

    def sweep(self) -> list[Path]:
        """Remove what writers killed mid-file left (their temporary files; never a live one's)."""
        return sweep_dead(self.out, self.work)

    def clear(self) -> None:
        for split in SPLITS:
            for p in list(self.out.glob(f"{split}-*.tar")) + list(self.out.glob(f"{split}-*.idx")):
                p.unlink()
            (self.out / table_name(split)).unlink(missing_ok=True)
        for name in (MANIFEST_NAME, STATS_NAME, REJECTS_NAME):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self._folded = None

    # --- units -----------------------------------------------------------------------
    def settings(self) -> dict | None:
        return _read_json(self.work / OPTIONS_FILE)

    def source_info(self) -> dict | None:
        return _read_json(self.work / SOURCE_FILE)

    def record(self, unit: str) -> dict | None:
        return _read_json(self.work / f"{unit}.json")

    def piece(self, unit: str, j: int) -> Path:
        return self.work / f"{unit}-p{j}.tar"

    def moments_path(self, unit: str) -> Path:
        return self.work / f"{unit}.moments.npz"

    def final(self, split: str, index: int) -> Path:
        return self.out / shard_name(split, index)

    def _pair_ok(self, tar: Path, piece: dict) -> bool:
        idx = tar.with_name(index_name(tar))
        return (tar.is_file() and idx.is_file() and tar.stat().st_size == piece["bytes"]
                and sha256_file(idx) == piece["idx_sha256"] and sha256_file(tar) == piece["sha256"])

    def verify_unit(self, record: dict, first_index: int | None) -> bool:
        """Whether a unit's pieces are whole, either still in the work folder or placed.

        Placed pieces can only be found when their shard number is known (`first_index`).
        """
        unit = record["unit"]
        if (record["split"] == "train" and record["pieces"] and not self.moments_path(unit).is_file()
                and unit not in self.folded_units()):
            return False
        for j, piece in enumerate(record["pieces"]):
            work = self.piece(record["unit"], j)
            if work.exists():
                ok = self._pair_ok(work, piece)
            else:
                ok = first_index is not None and self._pair_ok(self.final(record["split"], first_index + j), piece)
            if not ok:
                return False
        return True

    def place_unit(self, record: dict, first_index: int) -> None:
        for j in range(len(record["pieces"])):
            work = self.piece(record["unit"], j)
            if work.exists():
                final = self.final(record["split"], first_index + j)
                work.with_suffix(".idx").replace(final.with_name(index_name(final)))
                work.replace(final)

    # --- the train statistics, folded ------------------------------------------------
    def folded_units(self) -> set[str]:
        if self._folded is None:
            path = self.work / FOLDED_FILE
            self._folded = set()
            if path.is_file():
                with np.load(path) as z:
                    self._folded = set(z["units"].tolist())
        return self._folded

    def fold_moments(self, units: list[str], size: int) -> Moments:
        """The sum of the moments of `units` (train units with pieces, in plan order): the
        folded total plus each unit not in it, loaded one at a time. Saves the new total,
        then deletes the units' own files."""
        folded = self.folded_units()
        if not folded <= set(units):
            raise OutputError(f"{self.work / FOLDED_FILE} sums units this plan does not have; "
                              f"pass --overwrite to start again")
        path = self.work / FOLDED_FILE
        start = Moments.load(path) if folded else None
        todo = [u for u in units if u not in folded]
        total = merge_all((Moments.load(self.moments_path(u)) for u in todo), size, start)
        if todo or not path.is_file():
            total.save(path, units=np.array(units))
            self._folded = set(units)
        for u in units:  # after the save: a unit's file goes only once the total holds it
            self.moments_path(u).unlink(missing_ok=True)
        return total

    # --- finishing -------------------------------------------------------------------
    def write_dataset(self, params: dict, info: dict, records: list[dict]) -> dict:
        """Manifest, statistics and rejects from the records of every unit, in plan order."""
        splits, rejects = {}, list(info["rejects"])
        train_units = []
        for split in SPLITS:
            shards, n = [], 0
            for rec in (r for r in records if r["split"] == split):
                rejects.extend(rec["rejects"])
                if split == "train" and rec["pieces"]:
                    train_units.append(rec["unit"])
                for piece in rec["pieces"]:
                    shards.append({"name": shard_name(split, n), "count": piece["count"],
                                   "bytes": piece["bytes"], "sha256": piece["sha256"]})
                    n += 1
            if shards or info["inputs"].get(split):
                idx = [self.out / index_name(s["name"]) for s in shards]
                splits[split] = {"count": sum(s["count"] for s in shards),
                                 "bytes": sum(s["bytes"] for s in shards), "shards": shards,
                                 "offsets": write_table(self.out, split, idx, [s["count"] for s in shards])}
        manifest = {
            "format_version": FORMAT_VERSION,
            "params": params,
            "classes": info["classes"],
            "splits": splits,
            "totals": {"count": sum(s["count"] for s in splits.values()),
                       "bytes": sum(s["bytes"] for s in splits.values())},
            "inputs": info["inputs"],
            "rejected": len(rejects),
            "class_digest": class_digest(info["classes"]),
            "source_digest": (self.settings() or {}).get("source_digest"),
        }
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects)
        with replacing(self.out / REJECTS_NAME) as tmp:
            tmp.write_text(lines)
        if train_units:
            self.fold_moments(train_units, params["image_size"]).finish().save(self.out / STATS_NAME)
        write_manifest(self.out, manifest)
        return manifest
