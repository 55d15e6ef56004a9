"""Find the inputs of `preprocess shard --src DIR`: classes, train and val samples.

Layouts: `train/<wnid>/*` and `val/<wnid>/*` (class folders), or a flat `val/*` with
`--val-labels FILE` (ImageNet's `LOC_val_solution.csv`, or lines `filename wnid`).
Classes are the sorted wnids of train; `--synsets FILE` (`LOC_synset_mapping.txt` form:
`wnid name, other name`) gives their names. Either file, not given, is taken from the top
of the source under its Kaggle CLS-LOC name (`label_files`), where the README puts them.
Every regular, non-hidden file is an input, whatever its extension (upper or lower case,
or none): the decoder judges the content.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocess.contract import SPLITS

# The label files' names in Kaggle's CLS-LOC archive, and at the top of a source laid out
# as the README says.
SYNSETS_NAME = "LOC_synset_mapping.txt"
VAL_SOLUTION_NAME = "LOC_val_solution.csv"

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_KEY_MAX = 80  # tar's ustar name field holds 100 bytes, with room for ".json" and a suffix


class SourceError(RuntimeError):
    """The source folder cannot be used; the message is one line for the user."""


# A file name that is not UTF-8 (Linux allows any bytes) arrives from os.scandir as a str
# with its odd bytes as lone surrogates (PEP 383). Kept so internally, it opens the same
# file again; it is stored and hashed as its original bytes (`to_bytes`), and recorded,
# in rejects.jsonl and the sample's .json, as text with those bytes escaped (`printable`).
def to_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """`name` as UTF-8 text, a byte that is not UTF-8 written as \\xff."""
    return to_bytes(name).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ClassInfo:
    index: int
    wnid: str
    name: str


@dataclass(frozen=True)
class Sample:
    split: str
    rel: str  # path relative to --src, with forward slashes
    label: int
    wnid: str
    key: str  # unique in the dataset, no dots


class SampleTable:
    """One split's samples in path order, as columns: each path and key inside one UTF-8
    buffer with end offsets, labels in an int32 array. About 100 bytes a sample where
    `Sample` objects took 377 (480 MB for ImageNet's train split, in the parent and, page
    by page as the garbage collector touched them, in every forked worker); a slice or
    `take` is as compact, which is all a worker gets of its unit. Indexing and iteration
    give `Sample`s."""

    def __init__(self, split: str, wnids: tuple[str, ...], rel: bytes, rel_ends: np.ndarray, key: bytes,
                 key_ends: np.ndarray, labels: np.ndarray):
        self.split, self.wnids = split, wnids
        self._rel, self._rel_ends, self._key, self._key_ends = rel, rel_ends, key, key_ends
        self.labels = labels

    @classmethod
    def build(cls, split: str, wnids: tuple[str, ...], rows) -> SampleTable:
        """From (rel, label, key) rows, in order."""
        rel, key, rel_ends, key_ends, labels = bytearray(), bytearray(), array("q"), array("q"), array("i")
        for r, label, k in rows:
            rel += to_bytes(r)
            key += k.encode()
            rel_ends.append(len(rel))
            key_ends.append(len(key))
            labels.append(label)
        return cls(split, wnids, bytes(rel), np.frombuffer(rel_ends, np.int64), bytes(key),
                   np.frombuffer(key_ends, np.int64), np.frombuffer(labels, np.int32))

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def _get(buf: bytes, ends: np.ndarray, i: int) -> str:
        return buf[int(ends[i - 1]) if i else 0 : int(ends[i])].decode("utf-8", "surrogateescape")

    def row(self, i: int) -> tuple[str, int, str]:
        """(rel, label, key) of sample i, without building a `Sample`."""
        return self._get(self._rel, self._rel_ends, i), int(self.labels[i]), self._get(self._key, self._key_ends, i)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        rel, label, key = self.row(i % len(self))
        return Sample(self.split, rel, label, self.wnids[label], key)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def take(self, ids) -> SampleTable:
        """The rows `ids`, in that order, as a table of their own."""
        return SampleTable.build(self.split, self.wnids, (self.row(int(i)) for i in ids))


@dataclass
class Source:
    root: Path
    classes: list[ClassInfo]
    samples: dict[str, SampleTable] = field(default_factory=dict)  # split -> in path order
    rejects: list[dict] = field(default_factory=list)  # inputs refused before decoding

    def digest(self) -> str:
        """Fingerprint of what would be processed, to recognise a resumable output."""
        h = hashlib.sha256()
        for c in self.classes:
            h.update(f"c {c.wnid}\n".encode())
        for split in SPLITS:
            table = self.samples.get(split)
            for i in range(len(table) if table is not None else 0):
                rel, label, key = table.row(i)
                h.update(to_bytes(f"{split} {rel} {label} {key}\n"))
        return h.hexdigest()


def _entries(folder: Path, roots: tuple[str, ...] = ()) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Sorted (sub-folder names, file names) of a folder, hidden entries skipped, and the
    (name, reason) of each entry refused: a symlink loop, a dangling link, a link to a
    folder that holds it, or (when `roots` are given) a link that leads outside them."""
    dirs, files, refused = [], [], []
    real_folder = os.path.realpath(folder)
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links; a loop raises ELOOP here
                if not is_dir and not entry.is_file():
                    os.stat(entry.path)  # a dangling link raises; a fifo or socket is no input
                    continue
            except OSError as err:
                what = "a symlink loop" if err.errno == errno.ELOOP else f"a link to nothing ({err.strerror})"
                refused.append((entry.name, what))
                continue
            reason = _link_problem(entry.path, is_dir, real_folder, roots) if entry.is_symlink() else None
            if reason:
                refused.append((entry.name, reason))
            else:
                (dirs if is_dir else files).append(entry.name)
    return sorted(dirs), sorted(files), sorted(refused)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _link_problem(path: str, is_dir: bool, real_folder: str, roots: tuple[str, ...]) -> str | None:
    target = os.path.realpath(path)
    if is_dir and _inside(real_folder, target):
        return f"links to {target}, a folder that holds it (a loop)"
    if roots and not any(_inside(target, r) for r in roots):
        return f"links to {target}, outside --src"
    return None


def source_roots(root: Path) -> tuple[str, ...]:
    """Where links may lead: inside --src, and inside train/ and val/, which may themselves
    be links (the README's layout: one folder of symlinks to where ImageNet was unpacked)."""
    return tuple(os.path.realpath(p) for p in (root, root / "train", root / "val") if p.is_dir())


def check_out_outside_src(src: str | Path, out: str | Path) -> None:
    """--out inside --src would make the shards (and, inside train/, a class) inputs of a rerun."""
    real_src, real_out = os.path.realpath(src), os.path.realpath(out)
    if _inside(real_out, real_src):
        raise SourceError(f"--out {out} is inside --src {src}: put the shards in a folder outside the source")


def _stem(filename: str) -> str:
    return filename.split(".", 1)[0] if not filename.startswith(".") else filename


def read_synsets(path: str | Path) -> dict[str, str]:
    names = {}
    for line in Path(path).read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            names[parts[0]] = parts[1] if len(parts) > 1 else parts[0]
    return names


def read_val_labels(path: str | Path) -> dict[str, str]:
    """Map file stem (name without extension) -> wnid, from either accepted form."""
    labels = {}
    lines = Path(path).read_text().splitlines()
    csv_form = bool(lines) and lines[0].replace(" ", "").lower().startswith("imageid,")
    for number, line in enumerate(lines[1:] if csv_form else lines, start=2 if csv_form else 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if csv_form:
            name, _, prediction = line.partition(",")
            wnid = prediction.split()[0] if prediction.split() else ""
        else:
            parts = line.split()
            name, wnid = parts[0], parts[1] if len(parts) > 1 else ""
        if not wnid:
            raise SourceError(f"{path}:{number}: no wnid in {line!r}")
        labels[_stem(os.path.basename(name))] = wnid
    return labels


def _safe_key(stem: str) -> str:
    return _KEY_UNSAFE.sub("_", stem)[:_KEY_MAX] or "x"


def _refused_folder(folder: Path, refused: list[tuple[str, str]]) -> SourceError:
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    name, reason = refused[0]
    return SourceError(f"{folder / name}: {reason}{more}; class folders must be real folders inside --src")


def _link_rejects(split: str, prefix: str, refused: list[tuple[str, str]]) -> list[dict]:
    return [{"path": printable(f"{prefix}/{name}"), "split": split, "reason": "bad_link", "detail": printable(reason)}
            for name, reason in refused]


def _class_folder_samples(root: Path, split: str, by_wnid: dict[str, ClassInfo], rejects: list):
    """(rel, class) of each file in the class folders of `split`, in path order: the
    folders by "WNID/" (as whole paths sort), each one's files by name."""
    roots = source_roots(root)
    dirs, files, refused = _entries(root / split, roots)
    if refused:
        raise _refused_folder(root / split, refused)
    for name in files:
        rejects.append({"path": printable(f"{split}/{name}"), "split": split, "reason": "no_label",
                        "detail": "not in a class folder"})
    for wnid in dirs:
        if wnid not in by_wnid:
            raise SourceError(f"{root / split / wnid} is not a class of train/ (classes are train's folders)")
    for wnid in sorted(dirs, key=lambda w: w + "/"):
        _, names, refused = _entries(root / split / wnid, roots)
        rejects.extend(_link_rejects(split, f"{split}/{wnid}", refused))
        if split == "train" and not names:
            # An error, not a skip: skipping it would give every later class another label
            # than the same folder has in a full ImageNet, and keeping it would make a class
            # that no image teaches. ImageNet has no empty class: this is a failed unpack.
            raise SourceError(f"{root / split / wnid} is an empty class folder: every class needs training "
                              f"images (fill it, or remove the folder to train without that class)")
        for name in names:
            yield f"{split}/{wnid}/{name}", by_wnid[wnid]


def _flat_val_samples(root: Path, labels: dict[str, str], by_wnid: dict[str, ClassInfo], rejects: list):
    _, names, refused = _entries(root / "val", source_roots(root))
    rejects.extend(_link_rejects("val", "val", refused))
    for name in names:
        wnid = labels.get(_stem(name))
        rel = f"val/{name}"
        if wnid is None:
            rejects.append({"path": printable(rel), "split": "val", "reason": "no_label",
                            "detail": "not in --val-labels"})
        elif wnid not in by_wnid:
            rejects.append({"path": printable(rel), "split": "val", "reason": "unknown_class", "detail": wnid})
        else:
            yield rel, by_wnid[wnid]


def _assign_keys(found: dict, wnids: tuple[str, ...]) -> dict[str, SampleTable]:
    """Keys from file stems; a clash (same stem twice) gets a numbered suffix, in path order.
    `found` maps a split to its (rel, class) pairs in path order, read as they come."""
    used: set[str] = set()

    def rows(pairs):
        for rel, cls in pairs:
            base = key = _safe_key(_stem(rel.rsplit("/", 1)[-1]))
            n = 1
            while key in used:
                n += 1
                key = f"{base}_{n}"
            used.add(key)
            yield rel, cls.index, key

    return {split: SampleTable.build(split, wnids, rows(found.get(split, ()))) for split in SPLITS}


def check_root(src: str | Path) -> Path:
    """The source folder, or a one-line SourceError when it cannot be one."""
    root = Path(src)
    if not root.is_dir():
        raise SourceError(f"--src {src} does not exist or is not a folder")
    if not any(True for _ in root.iterdir()):
        raise SourceError(f"--src {src} is empty")
    if not (root / "train").is_dir():
        raise SourceError(f"--src {src} has no train/ folder (expected train/<wnid>/* and val/<wnid>/*)")
    return root


def _flat_val(root: Path) -> bool:
    """val/ holds files and no class folder (ImageNet's layout as shipped)."""
    if not (root / "val").is_dir():
        return False
    dirs, files, _ = _entries(root / "val")
    return bool(files) and not dirs


def label_files(src: str | Path, val_labels: str | Path | None = None,
                synsets: str | Path | None = None) -> tuple[Path | None, Path | None]:
    """(--val-labels, --synsets) as `discover` uses them: a flag given wins; else the file of
    that name at the top of the source, the val labels only for a flat val/ (a val/ in class
    folders is labelled by its folders, whatever file lies beside it). A flat val/ with
    neither is a SourceError naming the file looked for and the flag."""
    root = Path(src)
    for flag, given in (("--val-labels", val_labels), ("--synsets", synsets)):
        if given is not None and not Path(given).is_file():
            raise SourceError(f"{flag} {given} does not exist or is not a file")
    if val_labels is None and _flat_val(root):
        if not (root / VAL_SOLUTION_NAME).is_file():
            raise SourceError(f"{root / 'val'} is flat and {root / VAL_SOLUTION_NAME} does not exist: put "
                              f"the labels there or give them with --val-labels FILE")
        val_labels = root / VAL_SOLUTION_NAME
    if synsets is None and (root / SYNSETS_NAME).is_file():
        synsets = root / SYNSETS_NAME
    return (Path(val_labels) if val_labels else None), (Path(synsets) if synsets else None)


def discover(src: str | Path, val_labels: str | Path | None = None, synsets: str | Path | None = None) -> Source:
    root = check_root(src)
    val_labels, synsets = label_files(root, val_labels, synsets)
    wnids, _, refused = _entries(root / "train", source_roots(root))
    if refused:
        raise _refused_folder(root / "train", refused)
    if not wnids:
        raise SourceError(f"{root / 'train'} has no class folders (expected train/<wnid>/*)")
    odd = [w for w in wnids if printable(w) != w]
    if odd:  # a class is its name everywhere (manifest, checkpoints, the page): refuse, as an empty one
        raise SourceError(f"{printable(str(root / 'train' / odd[0]))}: a class folder whose name is not UTF-8: "
                          f"rename it to its wnid")
    names = read_synsets(synsets) if synsets else {}
    classes = [ClassInfo(i, w, names.get(w, w)) for i, w in enumerate(wnids)]
    by_wnid = {c.wnid: c for c in classes}
    rejects: list[dict] = []
    found = {"train": _class_folder_samples(root, "train", by_wnid, rejects)}
    if (root / "val").is_dir():
        if val_labels:
            found["val"] = _flat_val_samples(root, read_val_labels(val_labels), by_wnid, rejects)
        else:  # in class folders: label_files refused a flat one without labels
            found["val"] = _class_folder_samples(root, "val", by_wnid, rejects)
    elif val_labels:
        raise SourceError(f"--val-labels given but {root / 'val'} does not exist")
    samples = _assign_keys(found, tuple(c.wnid for c in classes))
    if not len(samples["train"]):
        raise SourceError(f"{root / 'train'} has class folders but no files in them")
    return Source(root, classes, samples, rejects)
