"""evaluate_loader is exact: padding masked, top-5 counted as top-5, and under DDP the
counts of both ranks summed, whatever the batch size.

The model is a lookup table (`lookup_model.py`): each val image gets prescribed logits
that put its true class at a chosen rank, so the right errors are known by hand and
differ from what a missing mask, a top-1-only count or a missing reduction would give.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from lookup_model import expected_errors, lookup_model

from pipeline import make_loader
from trainer.run.validation import evaluate_loader


def _loader(data, mode, batch, rank=0, world=1):
    return make_loader(data, split="val", mode=mode, batch_size=batch, backend="reference", rank=rank,
                       world_size=world, num_workers=1)


@pytest.fixture(scope="module")
def models(demo_shards):
    return {mode: lookup_model(demo_shards, mode) for mode in ("center", "tencrop")}


def _hits_with_and_without_mask(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """[top-1 hits, top-5 hits] over valid rows, and over all rows (padding included)."""
    masked, unmasked = torch.zeros(2), torch.zeros(2)
    with torch.no_grad():
        for images, labels, valid in loader:
            x = images.flatten(0, 1) if images.dim() == 5 else images
            probs = model(x).softmax(1)
            if images.dim() == 5:
                probs = probs.view(len(images), 10, -1).mean(1)
            top = probs.topk(5, 1).indices == labels[:, None]
            hits = torch.stack([top[:, 0], top.any(1)]).float()
            masked += (hits * valid).sum(1)
            unmasked += hits.sum(1)
    return masked, unmasked


@pytest.mark.parametrize("mode", ["center", "tencrop"])
def test_errors_equal_the_hand_count_with_padding_masked(demo_shards, models, mode):
    model = models[mode]
    want = expected_errors(demo_shards)
    assert want["top1_error"] != want["top5_error"], "the prescribed ranks must separate top-1 from top-5"
    # 40 images in batches of 3: 14 batches, the last one padded with two repeated rows.
    # Those rows are hits, so counting them would change both errors (checked here, so that
    # this test keeps the power to see a missing mask).
    masked, unmasked = _hits_with_and_without_mask(model, _loader(demo_shards, mode, 3))
    assert (unmasked > masked).all(), "the padding rows must be top-1 and top-5 hits"
    got = evaluate_loader(model, _loader(demo_shards, mode, 3), "cpu", view=mode)
    assert got["count"] == 40
    assert got["top1_error"] == pytest.approx(want["top1_error"], abs=1e-12)
    assert got["top5_error"] == pytest.approx(want["top5_error"], abs=1e-12)
    assert model.training  # the mode is restored


def _rank_main(rank: int, data: str, port: int, out_dir: str) -> None:
    """One DDP rank: join a real gloo group, evaluate its share, write what it got."""
    from trainer.run.distributed import setup, teardown

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = setup("cpu")
    try:
        model = lookup_model(data, "center")
        got = evaluate_loader(model, _loader(data, "center", 3, rank, 2), "cpu", view="center",
                              group=world.control_group)
    finally:
        teardown(world)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(got, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_each_report_the_whole_split(demo_shards, tmp_path):
    """Two gloo ranks, 20 images each in batches of 3 (one padding row each): every rank
    reports the errors over all 40 images, equal to the hand count."""
    mp.start_processes(_rank_main, args=(str(demo_shards), _free_port(), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    want = expected_errors(demo_shards)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["count"] == 40, f"rank {rank} counted only its own share"
        assert got["top1_error"] == pytest.approx(want["top1_error"], abs=1e-12)
        assert got["top5_error"] == pytest.approx(want["top5_error"], abs=1e-12)


@pytest.mark.slow
def test_trainer_evaluate_reports_exactly_the_runs_last_validation(demo_shards, tmp_path):
    """One evaluation core: `trainer evaluate` of a run's last checkpoint gives, to the last
    bit, the errors the run logged for it (center and ten-crop), though it reads the split in
    other batches. The run trains under bf16 autocast, so the checkpoint's precision rule is
    applied on both sides (an fp32 evaluation of a bf16-trained net is another computation)."""
    from trainer_helpers import run_train

    from trainer import runstore as rs
    from trainer.cli import main as trainer_main

    run_dir = tmp_path / "runs" / "agree"
    # Measured: these 10 steps give a net whose top-5 differs from image to image (a net that
    # ranks the classes alike for every image scores exactly 0.9 and 0.5 on 4 images a class).
    done = run_train(demo_shards, run_dir, "--max-steps", "10", "--width", "0.125", "--init", "kaiming",
                     "--lr", "0.02", "--momentum", "0", "--amp", "bf16", "--checkpoint-minutes", "600")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = rs.RunStore(tmp_path / "runs" / "runs.db")
    run = store.get_run_by_name("agree")
    logged = {name: store.last_metric(run["id"], name) for name in (rs.VAL_TOP1, rs.VAL_TOP5, rs.VAL10_TOP1,
                                                                    rs.VAL10_TOP5)}
    assert {m["step"] for m in logged.values()} == {10}, logged  # the last validation: of last.pt's weights

    out = tmp_path / "eval.json"
    assert trainer_main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--num-workers", "1",
                         "--backend", "reference", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())["models"][0]
    got = {rs.VAL_TOP1: report["center"]["top1_error"], rs.VAL_TOP5: report["center"]["top5_error"],
           rs.VAL10_TOP1: report["tencrop"]["top1_error"], rs.VAL10_TOP5: report["tencrop"]["top5_error"]}
    assert got == {name: m["value"] for name, m in logged.items()}
    assert got[rs.VAL_TOP5] != 0.5 != got[rs.VAL10_TOP5], "a net that ranks the classes alike for every image"
