"""PaperSGD against a float64 hand computation of section 5's rule, step by step."""

import copy

import pytest
import torch

from trainer.run.optim import PaperSGD, create_optimizer, set_lr


def _grad(w: torch.Tensor, i: int) -> torch.Tensor:
    # A loss whose gradient depends on w and on the step, so momentum and decay both matter.
    return torch.sin(w * (i + 1)) + 0.1 * i


def _run(opt_factory, lrs):
    torch.manual_seed(0)
    w = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([w])
    history = []
    for i, lr in enumerate(lrs):
        set_lr(opt, lr)
        w.grad = _grad(w.detach(), i)
        opt.step()
        history.append(w.detach().clone())
    return history


def _paper_by_hand(lrs, momentum=0.9, wd=0.0005):
    torch.manual_seed(0)
    w = torch.randn(7, 3, dtype=torch.float64)
    v = torch.zeros_like(w)
    history = []
    for i, eps in enumerate(lrs):
        v = momentum * v - wd * eps * w - eps * _grad(w, i)
        w = w + v
        history.append(w.clone())
    return history


LRS = [0.01] * 4 + [0.001] * 4 + [0.0001] * 3  # two divisions by 10, as the operator does


def test_paper_sgd_matches_the_papers_rule_step_by_step_across_lr_changes():
    ours = _run(lambda p: PaperSGD(p, lr=0.01), LRS)
    hand = _paper_by_hand(LRS)
    for step, (a, b) in enumerate(zip(ours, hand)):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15), f"step {step}"


def test_paper_and_torch_sgd_agree_at_constant_lr_and_differ_after_a_change():
    const = [0.01] * 6
    paper = _run(lambda p: create_optimizer("paper", p, lr=0.01, momentum=0.9, weight_decay=5e-4), const)
    torch_ = _run(lambda p: create_optimizer("torch", p, lr=0.01, momentum=0.9, weight_decay=5e-4), const)
    assert torch.allclose(paper[-1], torch_[-1], rtol=1e-12)
    paper = _run(lambda p: create_optimizer("paper", p, lr=0.01, momentum=0.9, weight_decay=5e-4), LRS)
    torch_ = _run(lambda p: create_optimizer("torch", p, lr=0.01, momentum=0.9, weight_decay=5e-4), LRS)
    # torch rescales the whole velocity by the new LR; the paper's velocity keeps the old eps.
    assert not torch.allclose(paper[4], torch_[4], rtol=1e-6)


def test_velocity_is_checkpointable_state():
    w = torch.ones(3, requires_grad=True)
    opt = PaperSGD([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    state = copy.deepcopy(opt.state_dict())  # state_dict() shares the velocity tensors
    w2 = w.detach().clone().requires_grad_(True)
    opt2 = PaperSGD([w2], lr=0.1)
    opt2.load_state_dict(state)
    for o, p in ((opt, w), (opt2, w2)):
        p.grad = torch.ones(3)
        o.step()
    assert torch.equal(w, w2)


def test_bad_hyper_parameters_fail():
    with pytest.raises(ValueError):
        PaperSGD([torch.zeros(1, requires_grad=True)], lr=0)
    with pytest.raises(ValueError):
        create_optimizer("adam", [torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9, weight_decay=0)


# -- the fused (compiled) update -------------------------------------------------------------
# Tens of seconds on the 2-core CPU: inductor compiles the update to C++ with gcc.

def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _trajectory(fused: bool, dtype=torch.float32, steps=100, divide_at=(30, 60), device="cpu"):
    """`steps` steps of a conv layer's and a linear layer's parameters, the LR divided by 10
    at `divide_at`; gradients drawn per step (the same for both forms) plus a term in w."""
    torch.manual_seed(0)
    ws = [torch.randn(s, dtype=dtype).to(device).requires_grad_(True) for s in ((16, 3, 5, 5), (16,), (10, 64), (10,))]
    opt = PaperSGD(ws, lr=0.01, fused=fused)
    graphs_after_first = None
    for i in range(steps):
        if i in divide_at:
            set_lr(opt, opt.param_groups[0]["lr"] / 10)
        g = torch.Generator().manual_seed(i)
        for w in ws:
            w.grad = torch.randn(w.shape, generator=g, dtype=dtype).to(device) + 0.5 * w.detach()
        opt.step()
        if i == 0:
            graphs_after_first = _compiled_graphs()
    return ws, opt, graphs_after_first


@pytest.mark.slow
def test_fused_update_equals_paper_sgd_over_100_steps_with_lr_changes_and_compiles_once():
    torch._dynamo.reset()
    fused, opt, graphs_after_first = _trajectory(fused=True)
    eager, eager_opt, _ = _trajectory(fused=False)
    for a, b in zip(fused, eager):
        assert ((a - b).norm() / b.norm()).item() <= 1e-6
    for a, b in zip(fused, eager):
        va, vb = opt.state[a]["velocity"], eager_opt.state[b]["velocity"]
        assert ((va - vb).norm() / vb.norm()).item() <= 1e-6
    # The two LR divisions changed a tensor's value, not the compiled code.
    assert graphs_after_first >= 1 and _compiled_graphs() == graphs_after_first


@pytest.mark.slow
def test_fused_update_carries_the_velocity_across_an_lr_division_as_section_5_says():
    # float64, against the hand computation: the velocity keeps the old eps's steps and
    # decays at 0.9 (no rescale by the new LR, as torch's SGD would do).
    torch._dynamo.reset()
    ours = _run(lambda p: PaperSGD(p, lr=0.01, fused=True), LRS)
    hand = _paper_by_hand(LRS)
    for step, (a, b) in enumerate(zip(ours, hand)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15), f"step {step}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_update_on_cuda_equals_paper_sgd_and_compiles_once():
    torch._dynamo.reset()
    fused, _, graphs_after_first = _trajectory(fused=True, device="cuda")
    eager, _, _ = _trajectory(fused=False, device="cuda")
    for a, b in zip(fused, eager):
        assert ((a - b).norm() / b.norm()).item() <= 1e-6
    assert _compiled_graphs() == graphs_after_first
