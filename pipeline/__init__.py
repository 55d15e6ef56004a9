"""On-the-fly augmentation from shards to device batches (DALI, or the reference loader).

`trainer train` and `trainer evaluate` call `make_loader`; see `pipeline/loader.py`. The
analysis tools (`trainer neighbors`, `experiment`) read a split in order with `pipeline.inorder`.
`make_loader` is imported on first use, so that a light submodule (the loader's forkserver
preload, `pipeline.forkserver_signals`) can be imported without torch.
"""

__all__ = ["make_loader"]


def __getattr__(name: str):
    if name == "make_loader":
        from pipeline.loader import make_loader

        return make_loader
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
