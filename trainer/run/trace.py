"""The `--trace PREFIX` test hook of `trainer train`: one JSON line per step (labels, a
fingerprint of each image, LR) and a digest of the final weights, per rank. The resume,
replay and DDP tests compare these files between runs."""

from __future__ import annotations

import hashlib
import json

import torch

from trainer.run.distributed import collective_calls


def params_digest(model: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class StepTrace:
    def __init__(self, prefix: str, rank: int):
        self.file = open(f"{prefix}.rank{rank}", "a")

    def step(self, state, images: torch.Tensor, labels: torch.Tensor) -> None:
        fps = [hashlib.blake2b(x.float().cpu().numpy().tobytes(), digest_size=8).hexdigest() for x in images]
        self.file.write(json.dumps({"step": state.step, "epoch": state.epoch, "lr": state.lr,
                                    "labels": labels.tolist(), "fp": fps,
                                    "collectives": collective_calls()}) + "\n")
        self.file.flush()  # a SIGKILL must not lose the steps already taken

    def close(self, model: torch.nn.Module) -> None:
        self.file.write(json.dumps({"final_params": params_digest(model)}) + "\n")
        self.file.close()
