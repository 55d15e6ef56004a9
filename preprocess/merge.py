"""`preprocess stats --merge PART_DIR... [--out DIR]`: the parts of a split job become one dataset.

Each part (`preprocess shard --part i --parts n`) leaves its finished units in
PART_DIR/.preprocess/. Merging checks that the parts were made with the same options from
the same source and that every unit of the plan is there and whole, moves the units into
OUT (a no-op when the parts shared OUT), numbers the shards in plan order and writes
dataset.json, stats.npz and rejects.jsonl exactly as a single run would have.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from preprocess.output import Output, OutputError


def _move(src: Path, dst: Path) -> None:
    if src.resolve() != dst.resolve():
        shutil.move(str(src), str(dst))


def _placed(target: Output, names: list[str]) -> dict[str, tuple[Output, dict]]:
    """Units already placed in the target by an earlier merge (a prefix per split)."""
    found, cursor = {}, {}
    for name in names:
        split = name.split("-u")[0]
        record = target.record(name)
        first = cursor.get(split, 0)
        if first is None or record is None or not target.verify_unit(record, first):
            cursor[split] = None
            continue
        found[name] = (target, record)
        cursor[split] = first + len(record["pieces"])
    return found


def _collect(parts: list[Output], names: list[str], found: dict) -> dict[str, tuple[Output, dict]]:
    """For every unit name: a part that holds it whole (still unplaced), unless already placed."""
    for part in parts:
        for name in names:
            if name in found:
                continue
            record = part.record(name)
            if record is not None and part.verify_unit(record, None):
                found[name] = (part, record)
    missing = [n for n in names if n not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise OutputError(f"units missing from the parts: {', '.join(missing[:5])}{more}; "
                          f"run the parts that produce them (same options) and merge again")
    return found


def merge(part_dirs: list[str | Path], out: str | Path) -> dict:
    parts = [Output(d) for d in part_dirs]
    for part in parts:
        part.sweep()  # killed parts' temporary files (each part's own host keeps its live ones)
    settings = [p.settings() for p in parts]
    for d, s in zip(part_dirs, settings):
        if s is None:
            raise OutputError(f"{d} holds no `preprocess shard --part` output")
    if any(s != settings[0] for s in settings[1:]):
        raise OutputError("the parts were made with different options or from different sources")
    info = parts[0].source_info()
    names = info["units"]
    target = Output(out)
    target.sweep()
    found = _collect(parts, names, _placed(target, names) if target.settings() == settings[0] else {})
    target.out.mkdir(parents=True, exist_ok=True)
    if target.settings() not in (None, settings[0]):
        raise OutputError(f"{out} holds output made with other options")
    target.work.mkdir(parents=True, exist_ok=True)
    for part in parts[:1]:
        for fname in ("options.json", "source.json"):
            if part.work.resolve() != target.work.resolve():
                shutil.copyfile(part.work / fname, target.work / fname)
    next_index: dict[str, int] = {}
    for name in names:
        part, record = found[name]
        for j in range(len(record["pieces"])):
            piece = part.piece(name, j)
            if not piece.exists():
                continue  # placed by an earlier merge
            _move(piece.with_suffix(".idx"), target.piece(name, j).with_suffix(".idx"))
            _move(piece, target.piece(name, j))
        if part.moments_path(name).exists():
            _move(part.moments_path(name), target.moments_path(name))
        _move(part.work / f"{name}.json", target.work / f"{name}.json")
        first = next_index.get(record["split"], 0)
        target.place_unit(record, first)
        next_index[record["split"]] = first + len(record["pieces"])
    return target.write_dataset(settings[0]["params"], info, [found[n][1] for n in names])
