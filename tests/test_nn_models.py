"""Models: parameter counts against hand formulas and a published count, determinism, no BatchNorm."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.nn.layers import WSConv2d, standardize_weight
from simulations.nn.models import (
    build_model,
    cnn_parameter_count,
    count_parameters,
    dpcnn_parameter_count,
    mlp_parameter_count,
    wrn_parameter_count,
)


@settings(max_examples=15, deadline=None)
@given(n0=st.integers(1, 50), width=st.integers(1, 40), depth=st.integers(0, 4), classes=st.integers(2, 12))
def test_mlp_parameter_count(n0, width, depth, classes):
    m = build_model("mlp", input_shape=(n0,), num_classes=classes, width=width, depth=depth, seed=0)
    # independent count: each Linear(a, b) holds a·b + b parameters
    sizes = [n0] + [width] * depth + [classes]
    expect = sum(a * b + b for a, b in itertools.pairwise(sizes))
    assert (
        count_parameters(m)
        == expect
        == mlp_parameter_count(input_dim=n0, num_classes=classes, width=width, depth=depth)
    )


def test_mlp_width_spans_two_decades():
    d = [
        count_parameters(build_model("mlp", input_shape=(40,), num_classes=10, width=w, depth=2, seed=0))
        for w in (8, 256)
    ]
    assert d[1] / d[0] > 100


@pytest.mark.parametrize("shape", [(40,), (1, 40), (2, 17), (1, 8, 8), (3, 32, 32)])
def test_cnn_parameter_count_and_forward(shape):
    m = build_model("cnn", input_shape=shape, num_classes=10, width=12, depth=3, seed=0)
    assert count_parameters(m) == cnn_parameter_count(input_shape=shape, num_classes=10, width=12, depth=3)
    assert m(torch.randn(2, *shape)).shape == (2, 10)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())


def test_wrn_16_4_matches_the_published_size():
    m = build_model("wrn", input_shape=(3, 32, 32), num_classes=10, width=4, depth=16, seed=0)
    # Zagoruyko & Komodakis 2016 (arXiv 1605.07146v4, Table 4/5): WRN-16-4 has 2.7M parameters;
    # GroupNorm has the same 2 affine parameters per channel as BatchNorm.
    assert 2.70e6 < count_parameters(m) < 2.80e6
    assert count_parameters(m) == wrn_parameter_count(in_channels=3, num_classes=10, widen=4, depth=16)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    small = build_model("wrn", input_shape=(1, 8, 8), num_classes=10, width=1, depth=10, seed=0)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert count_parameters(small) == wrn_parameter_count(in_channels=1, num_classes=10, widen=1, depth=10)


def test_dpcnn_matches_the_hand_count_of_the_mnist_model():
    # Papernot et al. 2021 (arXiv 2007.14191v1), MNIST: conv 16·(1·8·8) + 16, conv 32·(16·4·4) + 32,
    # fc (32·4·4)·32 + 32, fc 32·10 + 10 = 1 040 + 8 224 + 16 416 + 330 = 26 010
    m = build_model("dpcnn", input_shape=(1, 28, 28), num_classes=10, width=1, depth=1, seed=0)
    assert count_parameters(m) == 26_010 == dpcnn_parameter_count(input_shape=(1, 28, 28), num_classes=10)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(x, torch.nn.Tanh) for x in m.modules()) == 3
    for shape in [(3, 32, 32), (1, 14, 14), (2, 17, 23)]:  # other sizes: only the flatten size changes
        m = build_model("dpcnn", input_shape=shape, num_classes=5, width=1, depth=1, seed=0)
        assert count_parameters(m) == dpcnn_parameter_count(input_shape=shape, num_classes=5)
        assert m(torch.randn(2, *shape)).shape == (2, 5)


def test_wrn_ws_is_the_wrn_with_weight_standardised_convolutions():
    plain = build_model("wrn", input_shape=(3, 32, 32), num_classes=10, width=4, depth=16, seed=0)
    ws = build_model("wrn_ws", input_shape=(3, 32, 32), num_classes=10, width=4, depth=16, seed=0)
    assert count_parameters(ws) == count_parameters(plain)
    convs = [x for x in ws.modules() if isinstance(x, torch.nn.Conv2d)]
    assert convs and all(type(x) is WSConv2d for x in convs)
    assert not any(type(x) is WSConv2d for x in plain.modules())
    # scaled WS: every output channel of ŵ has mean 0 and ‖ŵ_c‖² = v/(v + ε) ≤ 1
    w = standardize_weight(convs[3].weight, eps=convs[3].eps, scaled=True).flatten(1)
    assert torch.allclose(w.mean(1), torch.zeros(w.shape[0]), atol=1e-6)
    assert torch.all(w.pow(2).sum(1) <= 1) and torch.all(w.pow(2).sum(1) > 0.99)
    # and the forward uses it: scaling a conv's raw weights leaves the output unchanged up to the ε in
    # √(v + ε) (relative effect ε/v ≈ 3e-4 at this init), while the plain WRN's output changes
    small = build_model("wrn_ws", input_shape=(1, 8, 8), num_classes=10, width=1, depth=10, seed=0)
    x = torch.randn(2, 1, 8, 8)
    before = small(x)
    with torch.no_grad():
        small.stem.weight.mul_(3.0)
    assert torch.allclose(small(x), before, atol=2e-3)
    plain_small = build_model("wrn", input_shape=(1, 8, 8), num_classes=10, width=1, depth=10, seed=0)
    before = plain_small(x)
    with torch.no_grad():
        plain_small.blocks[0].conv2.weight.mul_(3.0)
    assert not torch.allclose(plain_small(x), before, atol=2e-2)


def test_per_sample_outputs_do_not_mix_examples():
    # DP-SGD needs per-sample independence: example i's output must not depend on example j
    for name, shape, kw in (
        ("cnn", (1, 8, 8), dict(width=8, depth=2)),
        ("wrn", (1, 8, 8), dict(width=1, depth=10)),
        ("wrn_ws", (1, 8, 8), dict(width=1, depth=10)),
        ("dpcnn", (1, 14, 14), dict(width=1, depth=1)),
    ):
        m = build_model(name, input_shape=shape, num_classes=10, seed=0, **kw)
        x = torch.randn(4, *shape)
        y = m(x)
        x2 = x.clone()
        x2[1:] = torch.randn(3, *shape)
        assert torch.allclose(m(x2)[0], y[0], atol=1e-5)


@pytest.mark.parametrize(
    "name,shape,kw",
    [
        ("mlp", (40,), dict(width=32, depth=2)),
        ("cnn", (40,), dict(width=8, depth=2)),
        ("wrn", (1, 8, 8), dict(width=1, depth=10)),
        ("wrn_ws", (1, 8, 8), dict(width=1, depth=10)),
        ("dpcnn", (1, 14, 14), dict(width=1, depth=1)),
    ],
)
def test_seeded_determinism_without_global_side_effect(name, shape, kw):
    torch.manual_seed(99)
    before = torch.rand(1)
    torch.manual_seed(99)
    a = build_model(name, input_shape=shape, num_classes=10, seed=7, **kw)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_model(name, input_shape=shape, num_classes=10, seed=7, **kw)
    c = build_model(name, input_shape=shape, num_classes=10, seed=8, **kw)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("vit", input_shape=(40,), num_classes=10, width=8, depth=1, seed=0)
    with pytest.raises(ValueError, match="width"):
        build_model("mlp", input_shape=(40,), num_classes=10, width=0, depth=1, seed=0)
    with pytest.raises(ValueError, match="6n"):
        build_model("wrn", input_shape=(3, 32, 32), num_classes=10, width=4, depth=15, seed=0)
    with pytest.raises(ValueError, match="2-D image"):
        build_model("wrn", input_shape=(40,), num_classes=10, width=4, depth=16, seed=0)
    with pytest.raises(ValueError, match="wrn_ws depth must be 6n"):
        build_model("wrn_ws", input_shape=(3, 32, 32), num_classes=10, width=4, depth=12, seed=0)
    with pytest.raises(ValueError, match=r"dpcnn needs .*\(3, 13, 13\)"):
        build_model("dpcnn", input_shape=(3, 13, 13), num_classes=10, width=1, depth=1, seed=0)
    with pytest.raises(ValueError, match="dpcnn needs"):
        build_model("dpcnn", input_shape=(40,), num_classes=10, width=1, depth=1, seed=0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        WSConv2d(1, 1, 3, eps=0.0)
