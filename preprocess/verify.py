"""`preprocess verify DIR`: every shard against the manifest, every image decoded, every label checked.

Returns a list of problems (empty when the dataset is whole): missing or extra shards,
wrong sizes or sha256, samples missing a field, images that do not decode to 256x256 RGB,
labels outside the classes or disagreeing with the recorded wnid, duplicate keys, index
files that do not describe their tar exactly, an offsets table that differs from the
manifest or from the index files; `stats.npz` damaged or not finite.
A shard whose sha256 differs is still read sample by sample, to name the samples that
show the damage (a flipped bit in a JPEG's entropy data often decodes without error:
the sha256 is what catches it). `check` also says whether one of the files the readers
rely on (dataset.json, stats.npz, an index) is damaged: `preprocess verify` exits 4 then.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import simplejpeg

from preprocess.contract import (
    EXT_IMAGE, EXT_LABEL, EXT_META, SPLITS, CorruptError, DataError, Manifest, index_name, list_shards, load_stats,
    sha256_file,
)
from preprocess.indexfile import read_index, read_index_columns
from preprocess.offsetstable import COLUMNS, open_table


def _tar_samples(path: Path) -> list[list[tuple[str, int, int, str, bytes]]]:
    """Samples as lists of (ext, data offset, size, name, data), grouped like webdataset does."""
    samples, last_key = [], None
    with tarfile.open(path) as tf:
        for member in tf:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            data = tf.extractfile(member).read()
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append((ext, member.offset_data, member.size, member.name, data))
    return samples


def _check_sample(where: str, fields: dict, classes: list[dict], size: int) -> list[str]:
    problems = []
    if EXT_IMAGE not in fields or EXT_LABEL not in fields:
        return [f"{where}: lacks .{EXT_IMAGE} or .{EXT_LABEL} (has {sorted(fields)})"]
    try:
        pixels = simplejpeg.decode_jpeg(fields[EXT_IMAGE], "RGB", strict=True)
        if pixels.shape != (size, size, 3):
            problems.append(f"{where}: image is {pixels.shape}, expected ({size}, {size}, 3)")
    except ValueError as err:
        problems.append(f"{where}: image does not decode ({err})")
    try:
        label = int(fields[EXT_LABEL].decode("ascii"))
    except ValueError:
        return problems + [f"{where}: label {fields[EXT_LABEL][:20]!r} is not a decimal"]
    if not 0 <= label < len(classes):
        return problems + [f"{where}: label {label} outside 0..{len(classes) - 1}"]
    if EXT_META in fields:
        wnid = json.loads(fields[EXT_META]).get("wnid")
        if wnid is not None and wnid != classes[label]["wnid"]:
            problems.append(f"{where}: label {label} is {classes[label]['wnid']} but the sample says {wnid}")
    return problems


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    corrupt: bool = False  # dataset.json, stats.npz or an index is damaged


def _check_shard(shard: Path, entry: dict, classes: list[dict], size: int, keys: set, report: Report) -> None:
    problems = report.problems
    if shard.stat().st_size != entry["bytes"] or sha256_file(shard) != entry["sha256"]:
        problems.append(f"{shard.name}: size or sha256 differs from the manifest (damaged; rerun `preprocess "
                        f"shard` to rewrite it)")
    try:
        samples = _tar_samples(shard)
    except (tarfile.TarError, EOFError, OSError) as err:
        problems.append(f"{shard.name}: cannot be read as a tar ({err})")
        return
    if len(samples) != entry["count"]:
        problems.append(f"{shard.name}: {len(samples)} samples, manifest says {entry['count']}")
    for members in samples:
        key = members[0][3].partition(".")[0]
        if key in keys:
            problems.append(f"{shard.name}: key {key} appears more than once in the dataset")
        keys.add(key)
        fields = {ext: data for ext, _, _, _, data in members}
        problems += _check_sample(f"{shard.name}:{key}", fields, classes, size)
    index = shard.with_name(index_name(shard))
    try:
        listed = read_index(index)
    except (OSError, DataError) as err:
        report.corrupt = report.corrupt or isinstance(err, CorruptError)
        problems.append(f"{index.name}: unreadable ({err})")
        return
    actual = [[(ext, off, n, name) for ext, off, n, name, _ in members] for members in samples]
    if listed != actual:
        report.corrupt = True
        problems.append(f"{index.name}: does not match the members of {shard.name}")


def _check_table(data_dir: Path, split: str, manifest: Manifest, report: Report) -> None:
    """The split's offsets table against the manifest and, shard by shard, the index files."""
    entry = manifest.split_offsets(split)
    if entry is None:
        return  # written before tables existed: the loaders parse the index files instead
    try:
        idx = [data_dir / index_name(shard["name"]) for shard in manifest.split_shards(split)]
        table = open_table(data_dir, entry, idx, manifest.split_count(split))
    except OSError:
        return  # an index file is missing or unreadable: reported with its shard
    except DataError as err:
        report.corrupt = True
        report.problems.append(str(err))
        return
    start = 0
    for shard in manifest.split_shards(split):
        rows = table[start : start + shard["count"]]
        start += shard["count"]
        try:
            same = (read_index_columns(data_dir / index_name(shard["name"]), COLUMNS) == rows).all()
        except (OSError, DataError):
            continue  # the unreadable index is reported with its shard
        if not same:
            report.corrupt = True
            report.problems.append(f"{entry['name']}: the rows of {shard['name']} differ from its index file; "
                                   f"rerun the `preprocess shard` command that made it")


def check(data_dir: str | Path) -> Report:
    """Every problem of a shard folder; raises DataError when its dataset.json is missing or
    damaged (there is nothing to check against)."""
    data_dir = Path(data_dir)
    manifest = Manifest.read(data_dir)
    classes, size = list(manifest.classes), manifest.image_size
    report, keys = Report(), set()
    problems = report.problems
    for split in SPLITS:
        entries = manifest.split_shards(split)
        on_disk = {p.name for p in list_shards(data_dir, split)}
        for extra in sorted(on_disk - {e["name"] for e in entries}):
            problems.append(f"{extra}: not in the manifest")
        for entry in entries:
            shard = data_dir / entry["name"]
            if entry["name"] not in on_disk:
                problems.append(f"{entry['name']}: missing")
                continue
            _check_shard(shard, entry, classes, size, keys, report)
        if sum(e["count"] for e in entries) != manifest.split_count(split):
            problems.append(f"{split}: shard counts do not add up to the manifest's count")
        else:
            _check_table(data_dir, split, manifest, report)
    if manifest.split_count("train"):
        try:
            load_stats(data_dir, size)  # every field's dtype and shape (the mean image's: size), finite
        except DataError as err:
            report.corrupt = True
            problems.append(str(err))
    return report


def verify(data_dir: str | Path) -> list[str]:
    """The problems of a shard folder, as lines (empty when it is whole)."""
    try:
        return check(data_dir).problems
    except DataError as err:
        return [str(err)]
