"""Per-layer per-sample gradients (simulations.nn.persample) against one-backward-per-example references,
and the book-keeping engine on convolutional networks against the per-example loop and against Opacus."""

from __future__ import annotations

import copy
import math
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from simulations.nn import persample as ps
from simulations.nn.engine import private_gradient, trainable_parameters
from simulations.nn.layers import WSConv1d, WSConv2d, standardize_weight

torch.set_num_threads(1)


def _conv_layer(draw):
    """A random Conv1d/Conv2d (or WS twin): groups, stride, padding (int / 'same' / 'valid', any mode),
    dilation, bias; and an input size for which the output has at least one position."""
    dims = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2]))
    c_in = groups * draw(st.sampled_from([1, 2, 3, 9, 32]))  # C_g ≥ 32: a product per kernel offset; below: gathered
    c_out = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    size = draw(st.integers(3, 8))
    padding = draw(st.sampled_from([0, 1, 2, "valid"] + (["same"] if stride == 1 else [])))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    numeric = {"valid": 0, "same": dilation * (k - 1) // 2 + 1}.get(padding, padding)
    assume(mode == "zeros" or numeric < size)  # reflect/circular padding must be smaller than the input
    assume(size + 2 * (padding if isinstance(padding, int) else 0) >= dilation * (k - 1) + 1)
    ws = draw(st.sampled_from([None, True, False]))  # None: plain conv; True/False: WS scaled or not
    kind = {1: (nn.Conv1d, WSConv1d), 2: (nn.Conv2d, WSConv2d)}[dims]
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    kw["bias"] = draw(st.booleans())
    if ws is None:
        layer = kind[0](c_in, c_out, k, **kw)
    else:
        layer = kind[1](c_in, c_out, k, scaled=ws, **kw)
    shape = (c_in, size) if dims == 1 else (c_in, size, draw(st.integers(3, 8)))
    assume(all(s >= dilation * (k - 1) + 1 - 2 * numeric for s in shape[1:]))
    return layer, shape


@st.composite
def conv_cases(draw):
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layer, shape = _conv_layer(draw)
    n = draw(st.integers(1, 5))
    a = torch.randn(n, *shape, dtype=torch.float64)
    layer = layer.double()
    with torch.no_grad():
        out = layer(a)
    d = torch.randn_like(out)
    mask = (torch.rand(layer.weight.shape) < draw(st.floats(0.2, 0.9))).double() if draw(st.booleans()) else None
    return layer, a, d, mask


def _reference_weight_grads(layer, a, d):
    """g_i = ∂⟨δ_i, layer(a_i)⟩/∂w, one backward per example (the definition)."""
    out = []
    for i in range(a.shape[0]):
        (g,) = torch.autograd.grad((layer(a[i : i + 1]) * d[i : i + 1]).sum(), layer.weight)
        out.append(g)
    return torch.stack(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=conv_cases())
def test_grouped_conv_and_polyphase_instantiation_both_equal_the_per_example_reference(case):
    # the two instantiations, each forced on every geometry (the engine uses the grouped one only for
    # 2-D layers with one input channel per group): per-sample gradients, masked norms, kept sums
    layer, a, d, mask = case
    ref = _reference_weight_grads(layer, a, d)
    geom = ps.conv_geometry(layer)
    ws = (layer.weight, layer.eps, layer.scaled) if isinstance(layer, ps.WS_TYPES) else None
    w = standardize_weight(layer.weight.detach(), eps=layer.eps, scaled=layer.scaled) if ws else layer.weight
    per_weight = _grads_wrt(layer, w, a, d) if ws else ref
    expect = (ref * (1 if mask is None else mask)).pow(2).flatten(1).sum(1)
    for grouped in (True, False):
        with mock.patch.object(ps, "conv_uses_grouped", lambda geom, grouped=grouped: grouped):
            assert torch.allclose(ps.conv_per_sample(a, d, geom), per_weight, rtol=1e-9, atol=1e-10), grouped
            got, kept = ps.conv_sq_norms(a, d, geom, mask=mask, ws=ws, ghost=False, keep=True)
        assert torch.allclose(got, expect, rtol=1e-9, atol=1e-10), (grouped, got, expect)
        assert torch.allclose(kept.weighted_sum(None), per_weight.sum(0), rtol=1e-9, atol=1e-10)


def _grads_wrt(layer, weight, a, d):
    """g_i = ∂⟨δ_i, conv(a_i; weight)⟩/∂weight with ``layer``'s geometry (for a WS layer: w.r.t. ŵ)."""
    w = weight.detach().clone().requires_grad_(True)
    return torch.stack(
        [
            torch.autograd.grad((layer._conv_forward(a[i : i + 1], w, None) * d[i : i + 1]).sum(), w)[0]
            for i in range(a.shape[0])
        ]
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=conv_cases())
def test_conv_norms_ghost_and_instantiation_equal_the_per_example_reference(case):
    # both branches of mixed ghost clipping (forced), masked and unmasked, plain and weight-standardised
    layer, a, d, mask = case
    ref = _reference_weight_grads(layer, a, d)
    expect = (ref * (1 if mask is None else mask)).pow(2).flatten(1).sum(1)
    geom = ps.conv_geometry(layer)
    ws = (layer.weight, layer.eps, layer.scaled) if isinstance(layer, ps.WS_TYPES) else None
    output = None
    if ws is not None:
        with torch.no_grad():
            output = layer(a) if layer.bias is None else layer(a) - layer.bias.view(1, -1, *[1] * (a.dim() - 2))
    for ghost in (True, False):
        got, kept = ps.conv_sq_norms(a, d, geom, mask=mask, ws=ws, output=output, ghost=ghost, keep=True)
        assert torch.allclose(got, expect, rtol=1e-9, atol=1e-10), (ghost, got, expect)
        if kept is not None:  # instantiated gradients w.r.t. the weight convolved with (ŵ for WS)
            w_sum = kept.weighted_sum(torch.arange(1.0, a.shape[0] + 1, dtype=a.dtype))
            if ws is not None:
                w_sum = ps.ws_apply_jacobian(w_sum, layer.weight, eps=layer.eps, scaled=layer.scaled)
            ref_sum = torch.einsum("b,b...->...", torch.arange(1.0, a.shape[0] + 1, dtype=a.dtype), ref)
            assert torch.allclose(w_sum, ref_sum, rtol=1e-9, atol=1e-10)
    # book-keeping sum: the convolution weight gradient of c∘δ (then J for WS)
    c = torch.rand(a.shape[0], dtype=a.dtype)
    w_conv = standardize_weight(layer.weight.detach(), eps=layer.eps, scaled=layer.scaled) if ws else layer.weight
    total = ps.conv_weight_sum(a, d, geom, w_conv, c)
    if ws is not None:
        total = ps.ws_apply_jacobian(total, layer.weight, eps=layer.eps, scaled=layer.scaled)
    assert torch.allclose(total, torch.einsum("b,b...->...", c, ref), rtol=1e-9, atol=1e-10)
    if ws is None:
        assert torch.allclose(ps.conv_per_sample(a, d, geom), ref, rtol=1e-9, atol=1e-10)


def test_ws_jacobian_is_the_derivative_of_the_standardisation():
    # J_c = (1/s)(I − 11ᵀ/n − (κ/n)ŵŵᵀ) against torch.autograd.functional.jacobian, both κ
    torch.manual_seed(0)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    for scaled in (True, False):
        jac = torch.autograd.functional.jacobian(lambda v, s=scaled: standardize_weight(v, eps=1e-3, scaled=s), w)
        g = torch.randn_like(w)
        expect = torch.einsum("abcd,abcdefgh->efgh", g, jac)  # gᵀJ = (Jg)ᵀ, J symmetric per channel
        got = ps.ws_apply_jacobian(g, w, eps=1e-3, scaled=scaled)
        assert torch.allclose(got, expect, rtol=1e-10, atol=1e-12)
        blocks = jac.reshape(3, 8, 3, 8)
        assert torch.count_nonzero(blocks[0, :, 1]) == 0  # channels do not mix


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    t=st.integers(1, 6),
    fan_in=st.integers(1, 6),
    fan_out=st.integers(1, 6),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_norms_on_positions_equal_instantiation(n, t, fan_in, fan_out, masked, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, t, fan_in, generator=g, dtype=torch.float64)
    d = torch.randn(n, t, fan_out, generator=g, dtype=torch.float64)
    mask = (torch.rand(fan_out, fan_in, generator=g) < 0.5).double() if masked else None
    inst = torch.einsum("bto,bti->boi", d, a)  # g_i = Δ_iᵀA_i
    expect = (inst * (1 if mask is None else mask)).pow(2).sum((1, 2))
    assert torch.allclose(ps.linear_sq_norms(a, d, mask=mask), expect, rtol=1e-10, atol=1e-12)
    c = torch.rand(n, generator=g, dtype=torch.float64)
    assert torch.allclose(ps.linear_weight_sum(a, d, c), torch.einsum("b,boi->oi", c, inst), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_norm_layer_affine_per_sample_gradients_are_closed_forms(kind):
    # Σ_t δ x̂ and Σ_t δ per channel against autograd per example; input with a large mean (cancellation)
    torch.manual_seed(1)
    layer = nn.GroupNorm(2, 4) if kind == "group" else nn.LayerNorm((3, 5))
    layer = layer.double()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    a = (torch.randn(6, 4, 3, 5) * 3 + 7).double()
    d = torch.randn(6, 4, 3, 5, dtype=torch.float64)
    if kind == "group":
        gw, gb = ps.group_norm_per_sample(a, d, num_groups=2, eps=layer.eps)
    else:
        gw, gb = ps.layer_norm_per_sample(a, d, normalized_shape=(3, 5), eps=layer.eps)
    for i in range(6):
        rw, rb = torch.autograd.grad((layer(a[i : i + 1]) * d[i : i + 1]).sum(), [layer.weight, layer.bias])
        assert torch.allclose(gw[i], rw, rtol=1e-10, atol=1e-12)
        assert torch.allclose(gb[i], rb, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# the engine on convolutional networks


@st.composite
def conv_models(draw):
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layer, shape = _conv_layer(draw)
    with torch.no_grad():
        o = layer(torch.zeros(1, *shape))
    norm = draw(st.sampled_from(["none", "group", "layer"]))
    layers = [layer]
    if norm == "group":
        assume(o[0].numel() // layer.groups > 1)  # GroupNorm needs more than one value per group
        layers.append(nn.GroupNorm(layer.groups, layer.out_channels))
    elif norm == "layer":
        assume(o[0, 0].numel() > 1)  # LayerNorm over one entry normalises rounding noise (x − x)/√ε
        layers.append(nn.LayerNorm(tuple(o.shape[2:])))
    layers += [nn.Tanh(), nn.Flatten(), nn.Linear(o[0].numel(), 3)]
    model = nn.Sequential(*layers)
    n = draw(st.integers(1, 6))
    x = torch.randn(n, *shape)
    y = torch.randint(0, 3, (n,))
    masked = draw(st.booleans())
    masks = None
    if masked:
        g = torch.Generator().manual_seed(seed)
        masks = {k: (torch.rand(p.shape, generator=g) < 0.6).float() for k, p in model.named_parameters()}
    clip = draw(st.sampled_from([0.05, 0.5, 5.0, math.inf]))
    return model, x, y, masks, clip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=conv_models())
def test_bk_on_conv_networks_equals_the_per_example_loop(case):
    # float64: random GroupNorm/LayerNorm over a few entries are ill-conditioned in float32 (1/σ), which
    # would make batched and one-example float32 forwards differ by more than the engine's rounding
    model, x, y, masks, clip = case
    model, x = model.double(), x.double()
    masks = None if masks is None else {k: m.double() for k, m in masks.items()}
    kw = dict(clip_norm=clip, noise_std=0.3, expected_batch_size=4.0, keep_sums=True, masks=masks)
    bk = private_gradient(model, x, y, method="bk", generator=torch.Generator().manual_seed(1), **kw)
    loop = private_gradient(model, x, y, method="loop", generator=torch.Generator().manual_seed(1), **kw)
    assert bk.method == "bk" and loop.method == "loop"
    assert torch.allclose(bk.per_sample_norms, loop.per_sample_norms, rtol=1e-8, atol=1e-12)
    for k in bk.grads:
        assert torch.allclose(bk.grads[k], loop.grads[k], rtol=1e-8, atol=1e-12), k
        assert torch.allclose(bk.unclipped_sum[k], loop.unclipped_sum[k], rtol=1e-8, atol=1e-12), k
        if masks is not None:
            assert torch.all(bk.grads[k][masks[k] == 0] == 0)


@st.composite
def opacus_cases(draw):
    """Conv networks in the layer set Opacus 1.6's hooks support: Conv1d/Conv2d with zero padding (an
    int or "same"; its grad sampler ignores reflect/replicate/circular padding modes, so those are
    checked against the per-example loop only), GroupNorm/LayerNorm, Linear."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    dims, groups = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.sampled_from([1, 2, 8, 32])), groups * draw(st.integers(1, 3))  # 32: per-offset
    k, stride, dilation, padding = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 2)),
        draw(st.integers(0, 2)),
    )
    size = draw(st.integers(4, 9))
    assume(size + 2 * padding >= dilation * (k - 1) + 1)
    if stride == 1 and draw(st.booleans()):
        padding = "same"
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(
        c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans())
    )
    shape = (c_in, size) if dims == 1 else (c_in, size, size)
    with torch.no_grad():
        o = conv(torch.zeros(1, *shape))
    norm = draw(st.sampled_from(["group", "layer", "none"]))
    layers = [conv]
    if norm == "group" and o[0].numel() // groups > 1:
        layers.append(nn.GroupNorm(groups, c_out))
    elif norm == "layer" and o[0, 0].numel() > 1:
        layers.append(nn.LayerNorm(tuple(o.shape[2:])))
    model = nn.Sequential(*layers, nn.ReLU(), nn.Flatten(), nn.Linear(o[0].numel(), 3))
    n = draw(st.integers(2, 6))
    clip = draw(st.sampled_from([0.05, 0.5, 5.0]))
    branch = draw(st.sampled_from([None, True, False]))  # the conv layer's choice: automatic, ghost, instantiation
    return model, torch.randn(n, *shape), torch.randint(0, 3, (n,)), clip, branch


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=opacus_cases())
def test_bk_equals_opacus_hooks_on_conv_networks(case):
    # Opacus 1.6 GradSampleModule (hooks) + DPOptimizer with σ = 0: the same per-sample norms and the
    # same clipped mean (Opacus rescales grad_sample to per-example losses under loss_reduction="mean")
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model, x, y, clip, branch = case
    model, x = model.double(), x.double()  # float64: see the loop test above
    n = x.shape[0]
    choose = ps.conv_uses_ghost if branch is None else (lambda *a, **k: branch)
    with mock.patch.object(ps, "conv_uses_ghost", choose):
        ours = private_gradient(
            model, x, y, clip_norm=clip, noise_std=0.0, expected_batch_size=n, generator=torch.Generator(), method="bk"
        )
    twin = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
    opt = DPOptimizer(
        torch.optim.SGD(twin.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=clip, expected_batch_size=n
    )
    opt.zero_grad()
    nn.functional.cross_entropy(twin(x), y).backward()
    norms = torch.stack([p.grad_sample.reshape(n, -1).norm(dim=1) for p in twin.parameters()]).norm(dim=0)
    opt.pre_step()
    assert torch.allclose(ours.per_sample_norms, norms, rtol=1e-8, atol=1e-12)
    theirs = {k.removeprefix("_module."): p.grad for k, p in twin.named_parameters()}
    for k, g in ours.grads.items():
        assert torch.allclose(g, theirs[k], rtol=1e-8, atol=1e-12), k


@pytest.mark.parametrize("inplace", [False, True])
def test_ws_ghost_layer_followed_by_an_in_place_op_equals_the_loop(inplace):
    # a WS layer on the ghost branch reads its own output (ŵ_c·g_ic = Σ_t δ_ict o_ict); an in-place
    # activation after it overwrites that output, which the engine detects and recomputes
    torch.manual_seed(3)
    conv = WSConv2d(16, 32, 3, padding=1)
    x0 = torch.zeros(1, 16, 4, 4)
    geom = ps.conv_geometry(conv)
    assert ps.conv_uses_ghost(geom, x0.shape[1:], conv(x0).shape[1:])
    model = nn.Sequential(conv, nn.ReLU(inplace=inplace), nn.Flatten(), nn.Linear(32 * 16, 3))
    x, y = torch.randn(5, 16, 4, 4), torch.randint(0, 3, (5,))
    kw = dict(clip_norm=1.0, noise_std=0.0, expected_batch_size=5, generator=torch.Generator())
    bk = private_gradient(model, x, y, method="bk", **kw)
    loop = private_gradient(model, x, y, method="loop", **kw)
    assert torch.allclose(bk.per_sample_norms, loop.per_sample_norms, rtol=1e-4)
    for k in bk.grads:
        assert torch.allclose(bk.grads[k], loop.grads[k], rtol=1e-4, atol=1e-6), k


def test_bk_on_the_repository_models_equals_the_loop():
    from simulations.nn.models import build_model

    cases = [
        ("cnn", (40,), 8, 2),
        ("cnn", (1, 8, 8), 8, 2),
        ("dpcnn", (1, 14, 14), 1, 1),
        ("wrn", (1, 8, 8), 1, 10),
        ("wrn_ws", (2, 8, 8), 1, 10),
    ]
    for name, shape, width, depth in cases:
        model = build_model(name, input_shape=shape, num_classes=4, width=width, depth=depth, seed=3)
        x, y = torch.randn(5, *shape), torch.randint(0, 4, (5,))
        kw = dict(clip_norm=0.7, noise_std=0.0, expected_batch_size=5, generator=torch.Generator())
        bk = private_gradient(model, x, y, method="auto", **kw)
        loop = private_gradient(model, x, y, method="loop", **kw)
        assert bk.method == "bk", name
        assert torch.allclose(bk.per_sample_norms, loop.per_sample_norms, rtol=1e-4), name
        for k in trainable_parameters(model):
            assert torch.allclose(bk.grads[k], loop.grads[k], rtol=1e-4, atol=1e-6), (name, k)
