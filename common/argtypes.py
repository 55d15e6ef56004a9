"""Argument types and the parser class that every command line shares (`preprocess`, `trainer ...`).

Each numeric flag names its range here once, as a `Number`: argparse calls it on the text,
so a value out of range, NaN or infinity is a usage error (exit 2) naming the flag, the
range and the value, before anything runs. `OneLineParser` prints that error as one line
(argparse's usage block above it buried the reason at the end of 20 lines).
"""

from __future__ import annotations

import argparse
import math
import sys

INT32_MAX = 2**31 - 1  # seeds: DALI and the data pipeline take non-negative int32 seeds
INT64_MAX = 2**63 - 1  # counts and sizes: what numpy and torch index with
MAX_WORKERS = 1024  # processes or threads; more is a typo, and would fork that many


class Number:
    """An argparse type: a finite int or float within [low, high] (either end open or absent).

    Its `describe()` is the range in words, for --help and for the error."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__  # argparse names the type in some messages

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self._noun()}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise argparse.ArgumentTypeError(f"must be {'>' if self.low_open else '>='} {self.low:g}, got {text}")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise argparse.ArgumentTypeError(f"must be {'<' if self.high_open else '<='} {self.high:g}, got {text}")
        return value

    def _noun(self) -> str:
        return "an integer" if self.kind is int else "a number"

    def describe(self) -> str:
        """The range in words: "an integer >= 1", "a number in [0, 1)"."""
        high = None if self.high == INT64_MAX else self.high  # "any count" needs no number
        if self.low is not None and high is not None:
            if self.kind is int:
                return f"an integer {self.low}..{high}"
            return f"a number in {'(' if self.low_open else '['}{self.low:g}, {high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{self._noun()} {'>' if self.low_open else '>='} {self.low:g}"
        return self._noun()

    def __repr__(self) -> str:
        return f"Number({self.describe()})"


def count(low: int = 1, high: int = INT64_MAX) -> Number:
    """A whole number of things (steps, images, bytes); `low` 0 where 0 has a meaning."""
    return Number(int, low, high)


def fraction(*, low_open: bool = False, high_open: bool = False) -> Number:
    """A probability or a share, within [0, 1] (ends open as asked)."""
    return Number(float, 0.0, 1.0, low_open=low_open, high_open=high_open)


positive_int = Number(int, 1, INT64_MAX)  # an integer >= 1 (counts, sizes)
workers = Number(int, 1, MAX_WORKERS)  # processes or threads, at least one
seed = Number(int, 0, INT32_MAX)  # a random seed
learning_rate = Number(float, 0.0, 1e6, low_open=True)  # the paper's 0.01; 1e6 makes a loss diverge on purpose (tests)
lr_factor = Number(float, 1.0, 1000.0, low_open=True)  # divides the LR: as the REST call's factor (1, 1000]


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (whether this host has that GPU is `UsageError`'s, at setup)."""
    kind, _, index = text.partition(":")
    if text not in ("auto", "cpu", "cuda") and not (kind == "cuda" and index.isdigit()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


class UsageError(Exception):
    """A flag only the machine can refuse (`--device cuda` on a host without CUDA): the
    console script says it in one line and exits 2, as argparse does for the rest."""


class NumberList:
    """An argparse type: numbers separated by commas, each a `Number` (e.g. learning rates to try)."""

    def __init__(self, item: Number):
        self.item, self.__name__ = item, "list"

    def __call__(self, text: str) -> list:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return [self.item(p.strip()) for p in parts]

    def describe(self) -> str:
        return f"comma-separated, each {self.item.describe()}"


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error as one line on stderr and exit 2 (--help still shows the
    usage), and each ranged flag's range at the end of its --help line."""

    def add_argument(self, *args, **kwargs):
        describe = getattr(kwargs.get("type"), "describe", None)
        if describe and kwargs.get("help") is not argparse.SUPPRESS:
            kwargs["help"] = f"{kwargs.get('help') or ''} [{describe()}]".lstrip()
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
