"""A DALI reader's state moved from one pipeline's checkpoint into another pipeline's.

Used by `pipeline.badinput` (the DALI backend of `trainer train`/`evaluate`): to find the
damaged samples of a failed batch, a probe pipeline that only reads (no decoding) must
stand where the training pipeline's reader stood at its last periodic checkpoint.
DALI 2.x restores a checkpoint operator by operator, by name, and refuses one that names
an operator the pipeline lacks ("The executor doesn't recognize ... as a name of an
operator") or lacks one the pipeline has ("There's no checkpoint for operator ...")
(dali/pipeline/operator/checkpointing/checkpoint.cc). So the probe's own fresh checkpoint
is the template, and only its reader's entry (and the iteration counters) are replaced
by the training pipeline's.

A checkpoint is a serialized `dali_proto.Checkpoint`: field 1, repeated `OpCheckpoint`
(field 1 the operator's name, field 2 its state); field 2, the external context (the
Python side's iteration and epoch counters). All are length-delimited, so this needs no
protobuf package, only the wire format's varints.
"""

from __future__ import annotations

OP_CHECKPOINT = 1  # Checkpoint.cpts
EXTERNAL_CONTEXT = 2  # Checkpoint.external_ctx_cpt
OP_NAME = 1  # OpCheckpoint.operator_name
LENGTH_DELIMITED = 2  # protobuf wire type


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated DALI checkpoint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def fields(buf: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, payload, the field's whole encoding) of each top-level field."""
    out, i = [], 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        if key & 7 != LENGTH_DELIMITED:
            raise ValueError(f"unexpected wire type {key & 7} in a DALI checkpoint")
        size, i = _varint(buf, i)
        if i + size > len(buf):
            raise ValueError("truncated DALI checkpoint")
        out.append((key >> 3, buf[i : i + size], buf[start : i + size]))
        i += size
    return out


def operator_name(op_checkpoint: bytes) -> str:
    for number, payload, _ in fields(op_checkpoint):
        if number == OP_NAME:
            return payload.decode()
    return ""


def graft_reader_state(source: bytes, template: bytes, reader: str) -> bytes:
    """`template` (a checkpoint of the pipeline to restore) with the state of the operator
    named `reader` and the iteration counters taken from `source`."""
    ops = {operator_name(p): whole for n, p, whole in fields(source) if n == OP_CHECKPOINT}
    if reader not in ops:
        raise ValueError(f"the checkpoint holds no operator named {reader!r}")
    out, grafted = [], False
    for number, payload, whole in fields(template):
        if number == OP_CHECKPOINT and operator_name(payload) == reader:
            out.append(ops[reader])
            grafted = True
        elif number == OP_CHECKPOINT:
            out.append(whole)
    if not grafted:
        raise ValueError(f"the pipeline to restore has no operator named {reader!r}")
    out += [whole for n, _, whole in fields(source) if n == EXTERNAL_CONTEXT]
    return b"".join(out)
