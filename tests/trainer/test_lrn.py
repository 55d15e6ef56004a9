"""trainer.run.lrn: section 3.3's normalization, in either memory layout, with its own backward."""

import pytest
import torch

from trainer.run.lrn import local_response_norm
from trainer.run.model import AlexNet

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def papers_formula(a: torch.Tensor, n=5, k=2.0, alpha=1e-4, beta=0.75) -> torch.Tensor:
    """b_i = a_i / (k + alpha * sum over j in [i - n/2, i + n/2] of a_j^2)^beta, by loops."""
    out = torch.empty_like(a)
    c = a.shape[1]
    for i in range(c):
        lo, hi = max(0, i - n // 2), min(c - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return out


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_matches_the_papers_formula_and_keeps_the_layout(fmt):
    torch.manual_seed(0)
    # Activations of a few hundred, as after conv1 on 0-255 inputs: the denominator matters.
    a = (torch.rand(2, 13, 4, 5, dtype=torch.float64) * 300).contiguous(memory_format=fmt)
    out = local_response_norm(a)
    assert torch.allclose(out, papers_formula(a), rtol=1e-12, atol=0)
    assert (papers_formula(a) - a).abs().max() > 10  # the test data is in the nonlinear range
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_equals_torch_local_response_norm_forward_and_backward(fmt):
    torch.manual_seed(1)
    a = (torch.randn(3, 16, 6, 6) * 80).contiguous(memory_format=fmt).requires_grad_()
    b = a.detach().clone().requires_grad_()
    ours = local_response_norm(a)
    theirs = torch.nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0)(b)  # torch divides alpha by n
    g = torch.randn_like(ours)
    ours.backward(g)
    theirs.backward(g)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_gradient_is_the_derivative(fmt):
    a = (torch.randn(2, 7, 3, 3, dtype=torch.float64) * 100).contiguous(memory_format=fmt).requires_grad_()
    assert torch.autograd.gradcheck(local_response_norm, (a,))


def test_bf16_stays_bf16_under_autocast_and_close_to_fp32():
    torch.manual_seed(2)
    a = torch.rand(2, 8, 5, 5) * 200
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_response_norm(a.bfloat16())
    assert out.dtype == torch.bfloat16  # no float32 hand-off to the pooling after it
    assert torch.allclose(out.float(), papers_formula(a), rtol=2e-2, atol=0.5)


def test_even_window_is_refused():
    with pytest.raises(ValueError, match="odd"):
        local_response_norm(torch.ones(1, 4, 2, 2), size=4)


def test_model_uses_this_lrn():
    model = AlexNet(num_classes=4, width=0.125)
    a = torch.rand(1, model.conv1.out_channels, 3, 3, dtype=torch.float64) * 300
    assert torch.allclose(model.norm1(a), papers_formula(a), rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_channels_last_bf16_matches_the_cpu():
    torch.manual_seed(4)
    a = (torch.rand(8, 96, 27, 27, dtype=torch.float64) * 300)
    g = torch.randn_like(a)
    ref = a.clone().requires_grad_()
    papers_formula(ref).backward(g)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        x = a.to("cuda", dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        out = local_response_norm(x)
        out.backward(g.to("cuda", dtype))
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(out.double().cpu(), papers_formula(a), rtol=tol, atol=tol * 10), dtype
        assert torch.allclose(x.grad.double().cpu(), ref.grad, rtol=tol * 10, atol=tol), dtype
