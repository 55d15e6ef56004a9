"""Argument types that more than one command line shares (`preprocess`, `trainer evaluate`)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1, or argparse's usage error (exit 2) naming the value."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
