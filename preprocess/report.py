"""What `preprocess shard` says: its first line (where it reads and writes), the end-of-run
summary and its reject-fraction check."""

from __future__ import annotations

import sys
from pathlib import Path

from preprocess.contract import DEFAULT_DATA_DIR, REJECTS_NAME
from preprocess.sources import SYNSETS_NAME


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def start_line(cfg, out_given: bool) -> str:
    """Where the shards go and what labels and names the run takes, before the long listing
    of the source: a default the user did not type is said with the flag that changes it."""
    out = Path(cfg.out).absolute()
    where = (f"{out}" if out_given else
             f"{out} (--out default {DEFAULT_DATA_DIR}/ in the current folder; --out DIR writes elsewhere)")
    if cfg.val_labels:
        val = f"val labels {cfg.val_labels}"
    elif (Path(cfg.src) / "val").is_dir():
        val = "val labels from val/'s class folders"
    else:
        val = "no val/" + (f" (held out: --holdout-fraction {cfg.options.holdout_fraction})"
                           if cfg.options.holdout_fraction else "")
    names = f"class names {cfg.synsets}" if cfg.synsets else f"class names: the wnids (no --synsets, no {SYNSETS_NAME})"
    return f"preprocess shard: {cfg.src} -> {where}; {val}; {names}"


def print_summary(summary, cfg, stream=None) -> None:
    stream = stream or sys.stdout
    rate = summary.processed / summary.seconds if summary.seconds > 0 else 0.0
    lines = [f"preprocess shard: {summary.inputs} inputs, {summary.processed} decoded in this run, "
             f"{summary.seconds:.1f} s ({rate:.1f} images/s)"]
    if summary.manifest is not None:
        for split, entry in summary.manifest["splits"].items():
            lines.append(f"  {split}: {entry['count']} images in {len(entry['shards'])} shards ({_mb(entry['bytes'])})")
    else:
        lines.append(f"  part {cfg.part} of {cfg.parts} done; combine the parts with "
                     f"`preprocess stats --merge PART_DIR... --out {cfg.out}`")
    if summary.rejects_by_reason:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rejects_by_reason.items()))
        lines.append(f"  rejected: {summary.rejected} ({detail}); see {cfg.out / REJECTS_NAME}")
    else:
        lines.append("  rejected: 0")
    print("\n".join(lines), file=stream, flush=True)


def reject_check(summary, cfg) -> int:
    """Exit status: 1 when rejects exceed --max-reject-fraction (the shards are whole anyway)."""
    fraction = summary.rejected / max(summary.inputs, 1)
    if fraction > cfg.max_reject_fraction:
        print(f"preprocess shard: error: {summary.rejected} of {summary.inputs} inputs rejected "
              f"({fraction:.2%}) exceeds --max-reject-fraction {cfg.max_reject_fraction}; "
              f"see {cfg.out / REJECTS_NAME}", file=sys.stderr)
        return 1
    return 0
