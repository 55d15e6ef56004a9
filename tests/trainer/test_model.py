"""The network of section 3 as docs/design.md fixes it, and its switches."""

import pytest
import torch

from paper_forward import paper_forward

from trainer.run.model import AlexNet, build_model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_default_alexnet_has_the_papers_parameter_count_and_layer_sizes():
    model = AlexNet()
    assert n_params(model) == 60_965_224
    with torch.no_grad():
        sizes = model.eval().layer_outputs(torch.zeros(1, 3, 224, 224))
    assert sizes == [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]


def test_paper_initialisation():
    torch.manual_seed(0)
    model = AlexNet()
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"):
        layer = getattr(model, name)
        assert abs(layer.weight.std().item() - 0.01) < 0.001, name
        assert abs(layer.weight.mean().item()) < 0.001, name
        expected = 1.0 if name in ("conv2", "conv4", "conv5", "fc1", "fc2") else 0.0
        assert torch.all(layer.bias == expected), name
    assert torch.all(AlexNet(bias_const=0.1).fc1.bias == 0.1)


def test_grouped_convolutions_and_lrn_constants():
    model = AlexNet()
    assert [getattr(model, f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert model.conv1.padding == (2, 2) and model.conv1.stride == (4, 4)
    lrn = model.norm1
    # The paper's alpha, not torch's alpha/n convention (5e-4 in nn.LocalResponseNorm).
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert AlexNet(groups=1).conv2.groups == 1


def test_lrn_matches_the_papers_formula():
    a = torch.rand(1, 12, 3, 3) * 10
    out = AlexNet().norm1(a)
    i, n, k, alpha, beta = 6, 5, 2.0, 1e-4, 0.75
    lo, hi = max(0, i - n // 2), min(11, i + n // 2)
    expected = a[0, i] / (k + alpha * (a[0, lo:hi + 1] ** 2).sum(0)) ** beta
    assert torch.allclose(out[0, i], expected, rtol=1e-5)


def test_dropout_acts_on_hidden_outputs_and_hidden_is_the_last_hidden_layer():
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, width=0.25).eval()
    x = torch.randn(2, 3, 224, 224)
    h = model.hidden(x)
    assert h.shape == (2, 1024) and torch.all(h >= 0)
    assert torch.allclose(model(x), model.fc3(h))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


SWITCHES = {"paper": {}, "no_lrn": dict(lrn=False), "pool_2x2": dict(overlap_pool=False),
            "tanh": dict(activation="tanh"), "one_column": dict(groups=1)}


def _scaled_model(**kw) -> AlexNet:
    """A small AlexNet with weights large enough that every switch changes its output
    (at N(0, 0.01) the LRN denominator is k = 2 to within 1e-6)."""
    torch.manual_seed(0)
    model = build_model(dict(num_classes=7, width=0.125, bias_const=0.1, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)
    return model


def _reference(model: AlexNet, x: torch.Tensor, kw: dict) -> torch.Tensor:
    return paper_forward(model.state_dict(), x, groups=kw.get("groups", 2), lrn_on=kw.get("lrn", True),
                         overlap_pool=kw.get("overlap_pool", True), activation=kw.get("activation", "relu"))


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_computes_the_papers_network_with_that_change(switch):
    kw = SWITCHES[switch]
    model = _scaled_model(**kw)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 60
    with torch.no_grad():
        got, want = model(x), _reference(model, x, kw)
        assert got.shape == (2, 7)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item()), switch
        # The switch matters for these weights, so a model that ignored it would fail above
        # (one column: the two-column weights would not even fit the reference's groups=1).
        if switch not in ("paper", "one_column"):
            default = _reference(model, x, {})
            assert not torch.allclose(want, default, rtol=1e-3, atol=1e-3 * want.abs().max().item())


def test_dropout_zero_trains_deterministically_and_half_does_not():
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 60
    for p, same in ((0.0, True), (0.5, False)):
        model = _scaled_model(dropout=p).train()
        with torch.no_grad():
            assert torch.allclose(model(x), _reference(model, x, {}), rtol=1e-4, atol=1e-2) == same, p


def test_switches_change_the_network():
    assert isinstance(AlexNet(lrn=False).norm1, torch.nn.Identity)
    assert AlexNet(overlap_pool=False).pool.kernel_size == 2
    assert isinstance(AlexNet(activation="tanh").act, torch.nn.Tanh)
    assert n_params(AlexNet(groups=1)) > n_params(AlexNet())
    with pytest.raises(ValueError):
        AlexNet(groups=3)


def test_extra_conv_adds_one_conv5_shaped_layer_and_keeps_the_classifier():
    plain, six = AlexNet(), AlexNet(extra_conv=True)
    assert six.conv6.weight.shape == (256, 128, 3, 3) and six.conv6.groups == 2  # 3x3, 256, per column
    assert n_params(six) - n_params(plain) == six.conv6.weight.numel() + 256
    assert six.fc1.weight.shape == plain.fc1.weight.shape  # fine-tuning copies every FC layer
    with torch.no_grad():
        sizes = six.eval().layer_outputs(torch.zeros(1, 3, 224, 224))
    assert sizes == [290_400, 186_624, 64_896, 64_896, 43_264, 9216, 4096, 4096, 1000]
    assert torch.all(six.conv6.bias == 1.0) and abs(six.conv6.weight.std().item() - 0.01) < 0.001
    assert build_model({"num_classes": 5, "width": 0.25, "extra_conv": True}).conv6 is not None


def test_kaiming_init_is_pytorchs_layer_default_and_unknown_init_is_refused():
    torch.manual_seed(0)
    model = AlexNet(init="kaiming")
    bound = 1 / (3 * 11 * 11) ** 0.5  # kaiming_uniform(a=sqrt(5)) on conv1's fan-in
    assert model.conv1.weight.abs().max().item() <= bound
    assert model.conv1.weight.abs().max().item() > 0.9 * bound
    assert not torch.all(model.fc1.bias == 1.0)
    with pytest.raises(ValueError, match="init must be"):
        AlexNet(init="xavier")
