"""The `preprocess` console script: `shard`, `verify`, `stats --merge`, `demo-corpus`.

    preprocess shard --src IMAGENET_DIR [--out SHARDS_DIR] [--workers N] [--part i --parts n]
                     [--holdout-fraction F --holdout-seed S]   (a source with train/ only)
    preprocess verify SHARDS_DIR
    preprocess stats --merge PART_DIR... [--out SHARDS_DIR]
    preprocess demo-corpus --out DIR [--classes 10]

Errors end the program with one line on stderr naming the file and the fix, and the exit
status of their class (`common.exitcodes`): 2 for an input the user can fix (missing
source, unwritable output, ...), 4 for a damaged dataset.json, stats.npz or index, 5 for
a full disk (nothing half-written is left: free space and rerun). Too many rejected
inputs, and damaged shards found by `verify`, exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import exitcodes
from common.argtypes import OneLineParser, count, fraction, positive_int, seed, workers
from common.tempfiles import NoSpaceError
from preprocess import democorpus, image
from preprocess.contract import DEFAULT_DATA_DIR, DataError
from preprocess.output import OutputError
from preprocess.sources import SYNSETS_NAME, VAL_SOLUTION_NAME, SourceError


def _add_shard(sub) -> None:
    from preprocess.run import default_workers

    p = sub.add_parser("shard", help="ImageNet folders -> WebDataset shards, index files, manifest, statistics")
    p.add_argument("--src", type=Path, required=True, help="folder with train/<wnid>/* and val/")
    p.add_argument("--out", type=Path,
                   help=f"output folder for the shards (default: {DEFAULT_DATA_DIR}/ in the current folder)")
    p.add_argument("--val-labels", type=Path, help="labels of a flat val/: LOC_val_solution.csv or 'filename wnid' "
                   f"lines (default: --src/{VAL_SOLUTION_NAME} if there)")
    p.add_argument("--synsets", type=Path,
                   help=f"class names, {SYNSETS_NAME} form (default: --src/{SYNSETS_NAME} if there)")
    p.add_argument("--workers", type=workers, default=default_workers(), help="processes (default: all cores)")
    p.add_argument("--quality", type=count(1, 100), default=image.DEFAULT_QUALITY, help="JPEG quality (default 95)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the train shuffle")
    p.add_argument("--shard-max-count", type=positive_int, default=1000)
    p.add_argument("--shard-max-bytes", type=positive_int, default=None)
    p.add_argument("--max-pixels", type=positive_int, default=image.DEFAULT_MAX_PIXELS,
                   help="reject larger images (decompression-bomb guard)")
    p.add_argument("--max-reject-fraction", type=fraction(), default=0.001)
    p.add_argument("--part", type=count(0), default=0, help="this job's part, 0 <= i < --parts")
    p.add_argument("--parts", type=positive_int, default=1)
    p.add_argument("--holdout-fraction", type=fraction(low_open=True, high_open=True), default=None,
                   help="for a source with train/ only: hold out this fraction of each class as val")
    p.add_argument("--holdout-seed", type=seed, default=0, help="which files --holdout-fraction holds out")
    p.add_argument("--overwrite", action="store_true", help="replace output made with other options (not with parts sharing one --out)")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="preprocess", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_shard(sub)
    v = sub.add_parser("verify", help="check shards against the manifest, decode every image")
    v.add_argument("data_dir", type=Path)
    s = sub.add_parser("stats", help="combine the parts of a split job into one dataset")
    s.add_argument("--merge", type=Path, nargs="+", required=True, metavar="PART_DIR")
    s.add_argument("--out", type=Path, help="where the merged dataset goes (default: the first PART_DIR)")
    d = sub.add_parser("demo-corpus", help="a small ImageNet-layout corpus from photos that packages ship")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--classes", type=positive_int, default=10)
    d.add_argument("--train-per-class", type=positive_int, default=30)
    d.add_argument("--val-per-class", type=positive_int, default=10)
    d.add_argument("--seed", type=seed, default=0)
    d.add_argument("--min-side", type=count(1, 8192), default=300)
    d.add_argument("--max-side", type=count(1, 8192), default=500)
    d.add_argument("--flat-val", action="store_true", help="flat val/ plus LOC_val_solution.csv")
    return parser


def cmd_shard(args) -> int:
    from preprocess import run, shards, sources

    if not 0 <= args.part < args.parts:
        raise SourceError(f"--part {args.part} is not in 0..{args.parts - 1}")
    if not 1 <= args.quality <= 100:
        raise SourceError("--quality must be between 1 and 100")
    if args.holdout_fraction is not None and not 0.0 < args.holdout_fraction < 1.0:
        raise SourceError(f"--holdout-fraction must be between 0 and 1 (exclusive), got {args.holdout_fraction}")
    options = shards.Options(args.seed, args.quality, args.shard_max_count, args.shard_max_bytes, args.max_pixels,
                             holdout_fraction=args.holdout_fraction or 0.0, holdout_seed=args.holdout_seed)
    out = args.out or Path(DEFAULT_DATA_DIR)
    sources.check_root(args.src)  # the commonest mistakes, in one line before the first line
    sources.check_out_outside_src(args.src, out)
    val_labels, synsets = sources.label_files(args.src, args.val_labels, args.synsets)
    cfg = run.ShardConfig(args.src, out, options, args.workers, args.part, args.parts,
                          val_labels, synsets, args.overwrite, args.max_reject_fraction, args.progress)
    from preprocess.report import print_summary, reject_check, start_line

    print(start_line(cfg, out_given=args.out is not None), flush=True)
    summary = run.shard(cfg)
    print_summary(summary, cfg)
    return reject_check(summary, cfg)


def cmd_verify(args) -> int:
    from preprocess.verify import check

    report = check(args.data_dir)  # a missing or damaged dataset.json raises: nothing to check against
    for line in report.problems:
        print(line, file=sys.stderr)
    if report.problems:
        print(f"verify: {len(report.problems)} problem(s) in {args.data_dir}", file=sys.stderr)
        return exitcodes.CORRUPT if report.corrupt else exitcodes.FAILED
    print(f"verify: {args.data_dir} is whole")
    return exitcodes.OK


def cmd_stats(args) -> int:
    from preprocess.merge import merge

    manifest = merge(args.merge, args.out or args.merge[0])
    splits = ", ".join(f"{k}: {v['count']} images in {len(v['shards'])} shards" for k, v in manifest["splits"].items())
    print(f"merged {len(args.merge)} part folder(s) into {args.out or args.merge[0]} ({splits})")
    return 0


def cmd_demo_corpus(args) -> int:
    spec = democorpus.CorpusSpec(args.classes, args.train_per_class, args.val_per_class, args.seed,
                                 args.min_side, args.max_side, args.flat_val)
    try:
        out = democorpus.build(args.out, spec)
    except ValueError as err:
        raise SourceError(str(err)) from None
    print(f"demo corpus: {spec.classes} classes, {spec.train_per_class} train + {spec.val_per_class} val each, in {out}")
    return 0


COMMANDS = {"shard": cmd_shard, "verify": cmd_verify, "stats": cmd_stats, "demo-corpus": cmd_demo_corpus}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SourceError, OutputError, DataError, NoSpaceError) as err:
        print(f"preprocess {args.command}: error: {err}", file=sys.stderr)
        return exitcodes.for_error(err)
    except OSError as err:
        if not exitcodes.is_no_space(err):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"preprocess {args.command}: error: no space left on the device{where}: free space and rerun "
              f"the same command; it keeps what is finished and goes on", file=sys.stderr)
        return exitcodes.NO_SPACE
    except KeyboardInterrupt:
        print(f"preprocess {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
