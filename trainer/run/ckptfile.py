"""The checkpoint file format (docs/design.md, "Checkpoints"): the record, its checksums, and
one file written and read whole. The folder's policy (last.pt, epoch files, how many are kept,
the newest good one) is `trainer.run.checkpoint`'s; RNG state is `trainer.run.rngstate`'s.

This module is the record's one owner. `pack` builds it from every key resume needs (KEYS),
with the format version and a sha256 of each tensor and of the remaining fields;
`load_checkpoint` reads it back with `torch.load(weights_only=True)`, so a file holds tensors
and plain data only and can never run code, then checks the version, the keys and the
checksums. A file is written to a temporary, fsynced and renamed, so a file with a final name
is always whole even when the trainer is killed while writing; a byte changed later (a bad
disk, a careless edit) is caught by the checksums, and resume falls back to the newest epoch
checkpoint that is still good (`trainer.run.checkpoint.CheckpointDir.load_latest`).

Why not safetensors: it stores one flat dict of tensors plus string metadata, while resume
needs nested plain state (optimizer groups, LR history, per-rank RNG and loader positions,
the config, applied commands); splitting that over two files would lose the single atomic
rename and the hard link of last.pt to the epoch file. `weights_only=True` already loads no
code, and the checksums give the integrity check safetensors would not.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from common import exitcodes
from common.tempfiles import replace_atomically
from preprocess.contract import MANIFEST_NAME

FORMAT_VERSION = 2
# Every key resume reads; `pack` takes exactly these, `load_checkpoint` requires them.
KEYS = ("model", "optimizer", "policy", "lr", "lr_history", "epoch", "epoch_step", "step", "rng",
        "data_state", "config", "applied_commands", "class_digest")
# Format 1 (before checksums and the class digest) is still read: runs in progress resume.
_V1_KEYS = tuple(k for k in KEYS if k != "class_digest")
# Format 1 kept numpy's RNG state as an ndarray: exactly these globals rebuild one (no code).
_V1_GLOBALS = [np.dtype, np.ndarray, type(np.dtype(np.uint32)),
               (getattr(np, "_core", None) or np.core).multiarray._reconstruct]
_OTHER = "~other"  # the checksum of every non-tensor field



class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message is the one line to print."""

    exit_code = exitcodes.USAGE


class CheckpointCorrupt(CheckpointError):
    """Damaged, changed after it was written, not ours, or it would run code when loaded."""

    exit_code = exitcodes.CORRUPT


class CheckpointWriteError(CheckpointError):
    exit_code = exitcodes.FAILED  # exitcodes.for_error makes a full disk NO_SPACE


# -- the record ---------------------------------------------------------------------------
def pack(**fields) -> dict:
    """The record to save: exactly KEYS, tensors moved to the host once (they are hashed and
    written from there), the format version and the checksums."""
    if set(fields) != set(KEYS):
        raise TypeError(f"pack() needs exactly {KEYS}; missing {sorted(set(KEYS) - set(fields))}, "
                        f"unknown {sorted(set(fields) - set(KEYS))}")
    record = {"version": FORMAT_VERSION, **{k: _to_host(v) for k, v in fields.items()}}
    record["checksums"] = checksums(record)
    return record


def _to_host(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_host(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return obj


def _walk(obj, path: str, tensors: list, other: list) -> None:
    """Tensors with their paths, and every other leaf as a line, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        tensors.append((path, obj))
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _walk(obj[k], f"{path}.{k}" if path else str(k), tensors, other)
    elif isinstance(obj, (list, tuple)):
        other.append(f"{path}:{type(obj).__name__}[{len(obj)}]")
        for i, v in enumerate(obj):
            _walk(v, f"{path}.{i}", tensors, other)
    else:
        other.append(f"{path}={obj!r}")


def _tensor_digest(t: torch.Tensor) -> str:
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())  # hashlib frees the GIL here
    return h.hexdigest()


def checksums(record: dict) -> dict[str, str]:
    """sha256 of each tensor (by its path, e.g. model.fc6.weight) and of all other fields.
    Tensors are hashed on a few threads: 0.5 GB of AlexNet weights and momentum take about
    as long as the largest tensor (fc6, 150 MB) on one core."""
    tensors, other = [], []
    _walk({k: v for k, v in record.items() if k != "checksums"}, "", tensors, other)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = dict(zip([p for p, _ in tensors], pool.map(_tensor_digest, [t for _, t in tensors])))
    digests[_OTHER] = hashlib.sha256("\n".join(other).encode()).hexdigest()
    return digests


def _verify(path: Path, record: dict) -> None:
    recorded = record["checksums"]
    if not isinstance(recorded, dict):
        raise CheckpointCorrupt(f"{path} has no valid checksum table: the file is damaged")
    actual = checksums(record)
    changed = sorted(k for k in actual.keys() | recorded.keys() if actual.get(k) != recorded.get(k))
    if changed:
        what = "its non-tensor fields" if changed[0] == _OTHER else f"tensor {changed[0]}"
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CheckpointCorrupt(f"{path} was changed or damaged after it was written: {what}{more} "
                                "does not match the checksum recorded at save")


def load_checkpoint(path: str | Path, *, warn=print) -> dict:
    """The record of a checkpoint file, checked; `CheckpointError` (one line) otherwise.
    Tensors are loaded on the host: checksums are computed there, and load_state_dict copies
    them to the device."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_V1_GLOBALS):
            record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _unsafe_global(exc)
        if code is None:  # not a pickle at all, or a torn one
            raise CheckpointCorrupt(f"{path} cannot be read as a checkpoint ({_weights_only_detail(exc)})") from None
        raise CheckpointCorrupt(f"{path} holds objects other than tensors and plain data ({code}); it was not "
                                "written by `trainer train` and is not loaded (loading it could run code)") from None
    except Exception as exc:  # torn, truncated or not a torch file at all
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise CheckpointCorrupt(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: {detail})") from None
    version = record.get("version") if isinstance(record, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} is not a trainer checkpoint (no format version): pass a file "
                              "that `trainer train` wrote")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than this trainer reads "
                              f"(1 to {FORMAT_VERSION}): use the version of the code that wrote it")
    if version < 1:
        raise CheckpointCorrupt(f"{path} has an unknown checkpoint format {version}: the file is damaged")
    missing = [k for k in (KEYS + ("checksums",) if version >= 2 else _V1_KEYS) if k not in record]
    if missing:
        raise CheckpointCorrupt(f"{path} is not a trainer checkpoint of format {version} (missing "
                                f"{', '.join(missing)})")
    if version >= 2:
        _verify(path, record)
    else:
        record["class_digest"] = None
        warn(f"warning: {path} is in checkpoint format 1 (no checksums): its tensors cannot be checked")
    return record


def _weights_only_detail(exc: Exception) -> str:
    """The line of torch's weights_only refusal that says what it met (the rest is advice)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if not line.startswith("Weights only") and ("nsupported" in line or "but got <class" in line):
            return line.removeprefix("WeightsUnpickler error: ").rstrip(".")
    return "not loadable with weights_only"


def _unsafe_global(exc: Exception) -> str | None:
    """The class or function a refused pickle wanted to call, if that was why it was refused."""
    m = re.search(r"GLOBAL ([\w.]+)|but got <class '([^']+)'>", str(exc))
    return f"it asks for {m.group(1) or m.group(2)}" if m else None


def model_weights(path: str | Path, record: dict) -> dict:
    """The model's tensors of a loaded record, by the plain AlexNet's names (DDP's "module."
    and torch.compile's "_orig_mod." prefixes removed: the weights are the same)."""
    if not isinstance(record["model"], dict) or not isinstance(record["config"], dict):
        raise CheckpointError(f"{path} is not a checkpoint written by `trainer train` (no model and config)")
    out = {}
    for name, value in record["model"].items():
        for prefix in ("module.", "_orig_mod."):
            name = name[len(prefix):] if name.startswith(prefix) else name
        out[name] = value
    return out


def describe_mismatch(model: torch.nn.Module, state: dict, ignore: tuple[str, ...] = ()) -> str:
    """How `state` does not fit `model` (tensor names in `ignore` aside), in one line; "" if it fits."""
    own = {k: v for k, v in model.state_dict().items() if k not in ignore}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and k not in ignore]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) of another shape, e.g. {k} {tuple(state[k].shape)} "
                     f"where the model has {tuple(own[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unknown, e.g. {unexpected[0]}")
    return "; ".join(parts)


def class_change(record: dict, path: str | Path, digest: str, manifest_path: str | Path) -> str | None:
    """A one-line description when the checkpoint's labels mean other classes than the
    data's class list (both sha256 digests, `preprocess.contract.class_digest`), else None.
    Format 1 checkpoints record no digest: None (the caller warns)."""
    recorded = record.get("class_digest")
    if recorded is None or recorded == digest:
        return None
    trained_on = Path(str(record.get("config", {}).get("data", "?"))) / MANIFEST_NAME
    return (f"{manifest_path} lists other classes (digest {digest[:12]}) than {path} was trained on "
            f"(digest {recorded[:12]}, from {trained_on}): its labels would mean other classes")


def class_note(record: dict, path: str | Path, manifest_path: str | Path) -> str | None:
    if record.get("class_digest") is None:
        return (f"warning: {path} records no class list (checkpoint format 1): cannot check that its "
                f"labels mean the classes {manifest_path} lists")
    return None


# -- the files ----------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(record: dict, tmp: Path) -> None:
    with open(tmp, "wb") as f:
        torch.save(record, f)
        f.flush()
        os.fsync(f.fileno())


def write_checkpoint(path: str | Path, record: dict) -> Path:
    """Write a `pack`ed record to one file, whole or not at all (a failed write leaves no
    temporary). The run's checkpoints are saved through `CheckpointDir.save`, which uses this."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        replace_atomically(path, lambda tmp: _write(record, tmp))
    except OSError as exc:
        raise _write_error(path, exc) from exc
    except RuntimeError as exc:  # torch's zip writer reports the OSError as its context
        if isinstance(exc.__context__, OSError):
            raise _write_error(path, exc.__context__) from exc
        raise
    fsync_dir(path.parent)
    return path


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    if exitcodes.is_no_space(exc):
        return CheckpointWriteError(
            f"no space left on the disk of {path.parent} while writing {path.name} (its temporary is "
            f"removed; earlier checkpoints are intact): free space there and rerun with --resume auto")
    return CheckpointWriteError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                                "fix the run dir and rerun with --resume auto")
