"""A reader's state moved between DALI checkpoints (pipeline/readerstate.py)."""

from __future__ import annotations

import pytest

from pipeline.readerstate import fields, graft_reader_state


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128  # one-byte lengths keep the test's encoder trivial
    return bytes([number << 3 | 2, len(payload)]) + payload


def _op(name: str, state: bytes) -> bytes:
    return _field(1, _field(1, name.encode()) + _field(2, state))


def test_only_the_reader_and_the_counters_move():
    source = _op("Reader", b"pos=77") + _op("__Image_0", b"") + _field(2, b'{"iter": 9}')
    template = _op("Reader", b"pos=0") + _op("__GetProperty_0", b"") + _field(2, b'{"iter": 0}')
    out = graft_reader_state(source, template, "Reader")
    assert out == _op("Reader", b"pos=77") + _op("__GetProperty_0", b"") + _field(2, b'{"iter": 9}')
    assert [n for n, _, _ in fields(out)] == [1, 1, 2]


def test_what_cannot_be_grafted_is_an_error_not_a_wrong_position():
    with pytest.raises(ValueError, match="no operator named"):
        graft_reader_state(_op("Other", b"x"), _op("Reader", b""), "Reader")
    with pytest.raises(ValueError, match="truncated"):
        graft_reader_state(_op("Reader", b"x")[:-1], _op("Reader", b""), "Reader")
    with pytest.raises(ValueError, match="wire type"):
        graft_reader_state(b"\x08\x01", _op("Reader", b""), "Reader")
