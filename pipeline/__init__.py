"""On-the-fly augmentation from shards to device batches (DALI, or the reference loader).

`trainer train` and `trainer evaluate` call `make_loader`; see `pipeline/loader.py`.
"""

from pipeline.loader import make_loader

__all__ = ["make_loader"]
