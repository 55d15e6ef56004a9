"""A run's checkpoints folder, `{run_dir}/checkpoints`: its policy, apart from the file format
(`trainer.run.ckptfile`). `CheckpointDir.save` is the one way a run saves: last.pt every time,
epoch-NNN.pt at an epoch's end (last.pt a hard link to it), the last `keep` epoch files kept;
`load_latest` reads the newest good one, falling back past damaged files; `sweep` removes
what a killed writer left.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from common.tempfiles import sweep_dead, temp_path
from trainer.run.ckptfile import CheckpointCorrupt, fsync_dir, load_checkpoint, write_checkpoint

LAST = "last.pt"
_EPOCH_RE = re.compile(r"^epoch-(\d{3,})\.pt$")


class CheckpointDir:
    """last.pt plus the last `keep` epoch checkpoints in `{run_dir}/checkpoints`."""

    def __init__(self, run_dir: str | Path, keep: int):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    @property
    def last(self) -> Path:
        return self.dir / LAST

    def epoch_path(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:03d}.pt"

    def epochs(self) -> list[Path]:
        found = [(int(m.group(1)), p) for p in self.dir.glob("epoch-*.pt") if (m := _EPOCH_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def sweep(self) -> list[Path]:
        """Temporaries of dead writers (a trainer killed while writing a checkpoint)."""
        return sweep_dead(self.dir)

    def save(self, record: dict, *, epoch_end: int | None = None) -> Path:
        """Write last.pt; at the end of an epoch also epoch-NNN.pt (a hard link to the same
        bytes where the file system allows, so the 0.5 GB are written once)."""
        if epoch_end is None:
            return write_checkpoint(self.last, record)
        path = write_checkpoint(self.epoch_path(epoch_end), record)
        tmp = temp_path(self.last, "link")
        try:
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            os.replace(tmp, self.last)
            fsync_dir(self.dir)
        except OSError:
            tmp.unlink(missing_ok=True)
            write_checkpoint(self.last, record)
        for old in self.epochs()[:-self.keep] if self.keep > 0 else self.epochs():
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        if self.last.is_file():
            return self.last
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def load_latest(self, *, warn=print) -> tuple[dict | None, Path | None, list[tuple[str, str]]]:
        """The newest good checkpoint: last.pt, else the epoch files newest first. Returns
        (record, its path, [(skipped path, why)]); (None, None, []) for an empty folder.
        A damaged file is skipped (the caller says so); every file damaged is an error."""
        candidates = ([self.last] if self.last.is_file() else []) + self.epochs()[::-1]
        skipped: list[tuple[str, str]] = []
        bad: list[Path] = []
        for path in candidates:
            same = next((b for b in bad if _same_file(b, path)), None)
            if same is not None:  # last.pt is a hard link to the epoch file it was saved with
                skipped.append((str(path), f"the same file as {same.name}"))
                continue
            try:
                return load_checkpoint(path, warn=warn), path, skipped
            except CheckpointCorrupt as exc:
                bad.append(path)
                skipped.append((str(path), str(exc)))
        if skipped:
            raise CheckpointCorrupt(f"no good checkpoint in {self.dir} ({len(skipped)} damaged): {skipped[0][1]}")
        return None, None, []


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
