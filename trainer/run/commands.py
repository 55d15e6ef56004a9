"""Operator commands and the other per-step decisions every rank must take together.

At a step boundary `Control.exchange` returns one `Decision` for all ranks: a new LR
(operator `lr_divide` commands, read by rank 0 from the run store at most once a second),
a stop request (SIGTERM/SIGINT on any rank), and whether a timed checkpoint is due. Rank 0
alone reads the store and the clock; one all-reduce of three numbers on the CPU group
carries its decision to the others. Under DDP that all-reduce runs only every
`--control-every` steps (at steps S with S % N == 0), not at every step: a host never
waits for the others between two of DDP's own gradient all-reduces, and a command or a
stop takes effect at the next such step, the same one on every rank. Replays (below) need
no exchange at all: rank 0 hands every rank the list once, at start, and each applies them
at their own steps.

Replay rule (never lost, never applied twice, across kill -9):
  * a command is marked `applied` at step S (the first step that uses the new LR) only
    after the LR is set; every checkpoint lists the ids of the commands it includes;
  * on resume from a checkpoint, each command that the store says was applied at step S
    but the checkpoint does not list is applied again when the resumed run reaches step S
    (at once if S is already behind it). It keeps its row and its one `lr_change` event: an
    event with `replayed: true` is written only where the first one never reached the store.
    The resumed run thus follows the same LR schedule as an uninterrupted one;
  * a command still `pending` (read but not marked before the crash, or new) is applied
    at the next poll as usual; one the checkpoint lists but the store still calls pending
    (its verdict was lost, e.g. to a full disk) is marked applied at resume, not re-applied.

LR floor: rank 0 applies a new command only if the LR after it, and after every replay
still to come, stays at or above `--min-lr`; otherwise the command is rejected with the
reason. The server checks the same bound when it records a command, but only the trainer
knows the LR for certain (a replay, a policy drop not yet reported).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field

import torch

from trainer.run.distributed import World, all_gather_object, all_reduce_sum
from trainer.runstore import below_floor


@dataclass
class Decision:
    new_lr: float | None = None
    stop: bool = False
    checkpoint: bool = False
    commands: list[dict] = field(default_factory=list)  # rank 0: what produced new_lr


class Control:
    def __init__(self, world: World, store=None, run_id: int | None = None, *, checkpoint_seconds: float,
                 replays: list[dict] | None = None, poll_seconds: float = 1.0, min_lr: float = 0.0,
                 included: set[int] | None = None, every: int = 1):
        self.world, self.store, self.run_id = world, store, run_id
        self.every = max(1, every) if world.distributed else 1
        self.checkpoint_seconds = checkpoint_seconds
        self.min_lr = min_lr
        self.poll_seconds = poll_seconds
        # Rank 0 read the replays from the store; every rank applies them (one gather, at start).
        replays = all_gather_object(world, replays or [])[0]
        self.replays = sorted(replays, key=lambda c: (c["step"], c["id"]))
        self.queue: list[dict] = []
        # Replays, and commands the checkpoint already includes, are never taken as new.
        self.seen: set[int] = {c["id"] for c in self.replays} | set(included or ())
        self.stop_reason: str | None = None
        self._last_poll = -math.inf
        self._generation = 0
        self._last_checkpoint = time.monotonic()

    # -- signals -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self.stop_reason = signal.Signals(signum).name
            # A second signal falls through to the default action: the operator insists.
            signal.signal(signum, signal.SIG_DFL)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def checkpoint_written(self) -> None:
        self._last_checkpoint = time.monotonic()

    # -- rank 0: the store -------------------------------------------------------------
    def _poll(self) -> None:
        now = time.monotonic()
        if self.store is None or now - self._last_poll < self.poll_seconds:
            return
        self._last_poll = now
        pending = self.store.pending_commands(self.run_id)
        generation = getattr(self.store, "generation", 0)
        if generation != self._generation:  # a store made again (storeguard.py): old ids mean nothing there
            self._generation, self.seen = generation, set()
        for cmd in pending:
            if cmd.id in self.seen:
                continue
            self.seen.add(cmd.id)
            if cmd.kind != "lr_divide" or not (math.isfinite(cmd.factor) and cmd.factor > 0):
                self.store.mark_command(cmd.id, "rejected", detail=f"cannot apply {cmd.kind} by {cmd.factor}")
                continue
            self.queue.append({"id": cmd.id, "factor": cmd.factor, "reason": cmd.reason, "who": cmd.who,
                               "replayed": False})

    def _due_replays(self, step: int) -> list[dict]:
        due = [{**c, "replayed": True} for c in self.replays if c["step"] <= step]
        self.replays = [c for c in self.replays if c["step"] > step]
        return due

    def _admit(self, due: list[dict], step: int, lr: float) -> list[dict]:
        """The due commands that keep the LR at or above min_lr (after the replays still to
        come); the others are rejected in the store with the reason."""
        later = math.prod(c["factor"] for c in self.replays)
        admitted = []
        for cmd in due:
            new = lr / cmd["factor"]
            if not cmd["replayed"] and below_floor(new / later, self.min_lr):
                if self.store is not None:
                    self.store.mark_command(cmd["id"], "rejected", step=step, detail=(
                        f"refused by the trainer: the learning rate would become {new / later:.3g}, "
                        f"under its --min-lr {self.min_lr:.3g}"))
                continue
            admitted.append(cmd)
            lr = new
        return admitted

    def exchange(self, step: int, lr: float) -> Decision:
        """Every rank, at every step boundary; a collective only at exchange steps."""
        decision = Decision()
        replayed = self._due_replays(step)  # the same list on every rank
        for cmd in replayed:
            lr /= cmd["factor"]
        if self.world.is_main:
            decision.commands = replayed
        if step % self.every:
            decision.new_lr = lr if replayed else None
            return decision
        msg = torch.zeros(3, dtype=torch.float64)  # new lr (0: none), stop votes, checkpoint
        if self.world.is_main:
            self._poll()
            admitted = self._admit(self.queue, step, lr)
            self.queue = []
            decision.commands += admitted
            msg[0] = lr / math.prod(c["factor"] for c in admitted) if admitted else 0.0
            msg[2] = float(time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds)
        msg[1] = float(self.stop_reason is not None)
        all_reduce_sum(self.world, msg)
        decision.new_lr = float(msg[0]) if msg[0] > 0 else (lr if replayed else None)
        decision.stop = bool(msg[1] > 0)
        decision.checkpoint = bool(msg[2] > 0)
        return decision

    def record(self, decision: Decision, step: int, old_lr: float) -> list[dict]:
        """Rank 0, after the LR is set: mark the commands and write the events. Returns
        the entries for the checkpoint's `applied_commands`."""
        entries, lr = [], old_lr
        for cmd in decision.commands:
            new = lr / cmd["factor"]
            payload = {"old_lr": lr, "new_lr": new, "factor": cmd["factor"], "reason": cmd.get("reason", ""),
                       "command_id": cmd["id"], "replayed": cmd["replayed"]}
            if self.store is not None:
                if not cmd["replayed"]:
                    self.store.mark_command(cmd["id"], "applied", step=step, event_payload=payload, lr=new)
                if not cmd.get("logged"):
                    self.store.log_event(self.run_id, step, "lr_change", payload, flush=True)
            entries.append({"id": cmd["id"], "step": step, "factor": cmd["factor"]})
            lr = new
        return entries


def replays_on_resume(store, run_id: int, known_ids: set[int]) -> list[dict]:
    """Commands the store has applied that the checkpoint does not include (see above);
    `logged`: the store holds the command's `lr_change` event already."""
    replays = [c for c in store.commands(run_id, "applied") if c.id not in known_ids]
    logged = {e["payload"].get("command_id") for e in store.events(run_id, kinds=["lr_change"], limit=1 << 30)}
    return [{"id": c.id, "step": int(c.applied_step or 0), "factor": c.factor, "reason": c.reason,
             "logged": c.id in logged} for c in replays]


def settle_included(store, run_id: int, included: dict[int, dict]) -> None:
    """Mark applied the commands a checkpoint includes that the store still calls pending."""
    for cmd in store.pending_commands(run_id):
        if cmd.id in included:
            store.mark_command(cmd.id, "applied", step=int(included[cmd.id]["step"]),
                               detail="applied before the last checkpoint; its verdict is recorded at resume")
