"""Models: parameter counts against hand formulas and a published count, determinism, no BatchNorm."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.nn.models import (
    build_model,
    cnn_parameter_count,
    count_parameters,
    mlp_parameter_count,
    wrn_parameter_count,
)


@settings(max_examples=15, deadline=None)
@given(n0=st.integers(1, 50), width=st.integers(1, 40), depth=st.integers(0, 4), classes=st.integers(2, 12))
def test_mlp_parameter_count(n0, width, depth, classes):
    m = build_model("mlp", input_shape=(n0,), num_classes=classes, width=width, depth=depth, seed=0)
    # independent count: each Linear(a, b) holds a·b + b parameters
    sizes = [n0] + [width] * depth + [classes]
    expect = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
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


def test_per_sample_outputs_do_not_mix_examples():
    # DP-SGD needs per-sample independence: example i's output must not depend on example j
    for name, shape, kw in (("cnn", (1, 8, 8), dict(width=8, depth=2)), ("wrn", (1, 8, 8), dict(width=1, depth=10))):
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
