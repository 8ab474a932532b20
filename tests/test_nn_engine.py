"""Tests of the PyTorch DP-SGD engine: per-sample gradients, clipping, noise, Poisson sampling, masks, Hessian."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from simulations.nn.engine import CLIP_EPS, per_sample_gradients, private_gradient, trainable_parameters
from simulations.nn.masks import apply_masks, magnitude_masks, mask_density
from simulations.nn.sampler import PoissonSampler, poisson_batch

torch.set_num_threads(1)


def _mlp(seed=0, d_in=12, width=16, classes=4, depth=2):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    fan = d_in
    for _ in range(depth):
        layers += [nn.Linear(fan, width), nn.Tanh()]
        fan = width
    layers.append(nn.Linear(fan, classes))
    return nn.Sequential(*layers)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4 * 6, 3)
    )


def _data(n, d_in, classes, seed=1, shape=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + (shape or (d_in,)), generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _reference(model, x, y, *, clip_norm, noise_std, expected_batch_size, seed, masks=None):
    """Slow, obvious DP-SGD gradient: per-example backward, flat clip, noise drawn in parameter order."""
    params = trainable_parameters(model)
    total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    for i in range(x.shape[0]):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        g = {k: p.grad.detach().double() * (masks[k].double() if masks else 1) for k, p in params.items()}
        norm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
        phi = 1.0 if math.isinf(clip_norm) else min(1.0, clip_norm / (norm + CLIP_EPS))
        for k in total:
            total[k] += phi * g[k]
    model.zero_grad()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, p in params.items():
        xi = torch.randn(p.shape, generator=gen, dtype=p.dtype).double()
        if masks:
            xi = xi * masks[k].double()
        out[k] = (total[k] + noise_std * xi) / expected_batch_size
    return out


def _maxdiff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("method", ["bk", "vmap", "loop", "auto"])
@pytest.mark.parametrize("clip_norm", [0.3, 5.0, math.inf])
def test_mlp_gradient_equals_per_example_reference(method, clip_norm):
    model = _mlp()
    x, y = _data(23, 12, 4)
    got = private_gradient(
        model,
        x,
        y,
        clip_norm=clip_norm,
        noise_std=0.7,
        expected_batch_size=20,
        generator=torch.Generator().manual_seed(5),
        method=method,
    )
    ref = _reference(model, x, y, clip_norm=clip_norm, noise_std=0.7, expected_batch_size=20, seed=5)
    assert _maxdiff(got.grads, ref) < 1e-6
    if clip_norm == 0.3:  # the clip is active for most samples: the test exercises clipping
        assert float((got.clip_factors < 1).float().mean()) > 0.5


@pytest.mark.parametrize("method", ["bk", "vmap", "auto"])
def test_cnn_with_groupnorm_and_mask_equals_reference(method):
    model = _cnn()
    x, y = _data(9, 12, 3, shape=(1, 12))
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.6, scope="layer")
    apply_masks(model, masks)
    got = private_gradient(
        model,
        x,
        y,
        clip_norm=0.5,
        noise_std=0.3,
        expected_batch_size=10,
        generator=torch.Generator().manual_seed(2),
        masks=masks,
        method=method,
        chunk_size=4,
    )
    ref = _reference(model, x, y, clip_norm=0.5, noise_std=0.3, expected_batch_size=10, seed=2, masks=masks)
    assert _maxdiff(got.grads, ref) < 1e-6
    for k, m in masks.items():  # pruned coordinates: no gradient and no noise, exactly
        assert torch.all(got.grads[k][m == 0] == 0)


@settings(max_examples=10, deadline=None)
@given(
    width=st.integers(1, 9),
    depth=st.integers(0, 2),
    n=st.integers(1, 12),
    clip=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
)
def test_bk_equals_loop_property(width, depth, n, clip, seed):
    model = _mlp(seed=seed, d_in=5, width=width, classes=3, depth=depth)
    x, y = _data(n, 5, 3, seed=seed + 1)
    kw = dict(clip_norm=clip, noise_std=0.0, expected_batch_size=7.5, generator=torch.Generator(), keep_sums=True)
    a = private_gradient(model, x, y, method="bk", **kw)
    b = private_gradient(model, x, y, method="loop", **kw)
    assert _maxdiff(a.grads, b.grads) < 1e-6
    assert _maxdiff(a.unclipped_sum, b.unclipped_sum) < 1e-5
    assert torch.allclose(a.per_sample_norms, b.per_sample_norms, rtol=1e-5, atol=1e-6)


def _random_masks(model, seed, density):
    """Independent Bernoulli(density) 0/1 masks on every parameter (biases too), with one all-pruned
    row and one all-pruned column in the first weight (edge cases of the masked book-keeping)."""
    g = torch.Generator().manual_seed(seed)
    masks = {k: (torch.rand(p.shape, generator=g) < density).to(p.dtype) for k, p in model.named_parameters()}
    first = next(k for k, p in model.named_parameters() if p.dim() == 2)
    masks[first][0, :] = 0
    masks[first][:, -1] = 0
    return masks


@settings(max_examples=12, deadline=None)
@given(
    width=st.integers(1, 9),
    depth=st.integers(0, 2),
    n=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    clip=st.sampled_from([0.05, 0.5, 5.0, math.inf]),
    seed=st.integers(0, 2**16),
)
def test_masked_bk_equals_loop_and_vmap_property(width, depth, n, density, clip, seed):
    # masked book-keeping: ‖M⊙δaᵀ‖² = Σ_k [(Δ∘Δ)M]_ik a_ik² and M ⊙ Δᵀdiag(φ)A must equal the
    # materialised per-sample gradients (loop: one backward per example; vmap) — norms, clip
    # factors, clipped and unclipped sums and the final noised gradient (noise on, same stream)
    model = _mlp(seed=seed, d_in=5, width=width, classes=3, depth=depth)
    masks = _random_masks(model, seed + 2, density)
    apply_masks(model, masks)
    x, y = _data(n, 5, 3, seed=seed + 1)
    kw = dict(clip_norm=clip, noise_std=0.3, expected_batch_size=7.5, keep_sums=True, masks=masks)
    out = {
        m: private_gradient(model, x, y, method=m, generator=torch.Generator().manual_seed(seed), **kw)
        for m in ("bk", "loop", "vmap", "auto")
    }
    for m in ("loop", "vmap", "auto"):
        assert _maxdiff(out["bk"].grads, out[m].grads) < 1e-6
        assert _maxdiff(out["bk"].clipped_sum, out[m].clipped_sum) < 1e-6
        assert _maxdiff(out["bk"].unclipped_sum, out[m].unclipped_sum) < 1e-5
        assert torch.allclose(out["bk"].per_sample_norms, out[m].per_sample_norms, rtol=1e-5, atol=1e-6)
        assert torch.allclose(out["bk"].clip_factors, out[m].clip_factors, rtol=1e-5, atol=1e-6)
    ref = _reference(model, x, y, clip_norm=clip, noise_std=0.3, expected_batch_size=7.5, seed=seed, masks=masks)
    assert _maxdiff(out["bk"].grads, ref) < 1e-6
    for k, mk in masks.items():  # pruned coordinates: exactly zero (no gradient, no noise)
        assert torch.all(out["bk"].grads[k][mk == 0] == 0)


def test_masked_bk_norm_differs_from_unmasked_and_auto_uses_bk(monkeypatch):
    # non-vacuous: the masked norm is strictly smaller than the unmasked one here, and 'auto' takes
    # the book-keeping path with masks (the vmap path is disabled to prove it)
    import simulations.nn.engine as engine

    model = _mlp(seed=11)
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.9, scope="global")
    x, y = _data(20, 12, 4, seed=12)
    kw = dict(clip_norm=0.5, noise_std=0.0, expected_batch_size=20, generator=torch.Generator())
    dense = private_gradient(model, x, y, method="bk", **kw)
    monkeypatch.setattr(engine, "_materialised_sums", None)
    masked = private_gradient(model, x, y, method="auto", masks=masks, **kw)
    assert torch.all(masked.per_sample_norms < dense.per_sample_norms)
    ref = _reference(model, x, y, clip_norm=0.5, noise_std=0.0, expected_batch_size=20, seed=0, masks=masks)
    assert _maxdiff(masked.grads, ref) < 1e-6


def test_bk_on_sequence_input_with_masks_equals_reference():
    # a Linear applied to a 3-D input (per position): the per-example gradient sums the positions
    # (ghost norm or instantiation); 'auto' takes book-keeping and stays exact with masks
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5, 2))
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.5)
    apply_masks(model, masks)
    x, y = _data(6, 3, 2, seed=6, shape=(4, 3))
    kw = dict(clip_norm=0.3, noise_std=0.0, expected_batch_size=6, generator=torch.Generator(), masks=masks)
    ref = _reference(model, x, y, clip_norm=0.3, noise_std=0.0, expected_batch_size=6, seed=0, masks=masks)
    for method in ("auto", "bk"):
        got = private_gradient(model, x, y, method=method, **kw)
        assert got.method == "bk"
        assert _maxdiff(got.grads, ref) < 1e-6


def test_reshaping_rows_into_the_batch_falls_back_to_vmap_and_bk_refuses():
    # (B, L, F) → (B·L, F) before a Linear: its rows are positions, not examples. Clipping them as
    # examples would let one example contribute up to L·C; the engine must not take book-keeping
    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.head = nn.Linear(4 * 4, 2)

        def forward(self, x):
            b, l, f = x.shape
            return self.head(torch.tanh(self.fc(x.reshape(b * l, f))).reshape(b, l * 4))

    torch.manual_seed(2)
    model = Rows()
    x, y = _data(5, 3, 2, seed=3, shape=(4, 3))
    kw = dict(clip_norm=0.1, noise_std=0.0, expected_batch_size=5, generator=torch.Generator())
    got = private_gradient(model, x, y, method="auto", **kw)
    assert got.method == "vmap"
    ref = _reference(model, x, y, clip_norm=0.1, noise_std=0.0, expected_batch_size=5, seed=0)
    assert _maxdiff(got.grads, ref) < 1e-6
    with pytest.raises(ValueError, match="reshape"):
        private_gradient(model, x, y, method="bk", **kw)


@pytest.mark.parametrize("sigma", [0.0, 1.3])
def test_equals_opacus_dpoptimizer(sigma):
    # σ = 0: the clipped average must agree exactly. σ > 0: Opacus draws its noise with
    # torch.normal(0, σC, generator=g) parameter by parameter — the same stream as ours from the
    # same seed — so the noised gradient agrees too (a check of the noise scale σC and of 1/B).
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = _mlp(seed=3)
    x, y = _data(30, 12, 4, seed=4)
    expected = 25  # realised 30 ≠ expected 25: both divide by the EXPECTED batch size
    ours = private_gradient(
        model,
        x,
        y,
        clip_norm=0.4,
        noise_std=sigma * 0.4,
        expected_batch_size=expected,
        generator=torch.Generator().manual_seed(7),
    )
    twin = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
    opt = DPOptimizer(
        torch.optim.SGD(twin.parameters(), lr=0.1),
        noise_multiplier=sigma,
        max_grad_norm=0.4,
        expected_batch_size=expected,
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(7),
    )
    opt.zero_grad()
    nn.functional.cross_entropy(twin(x), y).backward()
    opt.pre_step()
    theirs = {k.removeprefix("_module."): p.grad for k, p in twin.named_parameters()}
    assert _maxdiff(ours.grads, theirs) < 1e-6
    if sigma > 0:  # the noise is not negligible here: the comparison would fail with a wrong scale
        assert ours.noise_norm / expected > 10 * 1e-6


def test_tied_weights_and_a_layer_called_twice_are_exact_with_bk():
    # a weight shared by two Linear layers (and a layer used twice): the per-sample gradient is the SUM
    # of the uses, so per-use norms would be wrong; book-keeping instantiates and sums the uses
    from simulations.nn.engine import bk_applicable

    torch.manual_seed(0)
    a, b = nn.Linear(6, 6), nn.Linear(6, 6)
    b.weight = a.weight
    model = nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), a, nn.Tanh(), nn.Linear(6, 3))
    assert bk_applicable(model)
    x, y = _data(7, 6, 3, seed=5)
    ref = _reference(model, x, y, clip_norm=0.2, noise_std=0.0, expected_batch_size=7, seed=0)
    for method in ("auto", "bk"):
        got = private_gradient(
            model, x, y, clip_norm=0.2, noise_std=0.0, expected_batch_size=7, generator=torch.Generator(), method=method
        )
        assert got.method == "bk"
        assert _maxdiff(got.grads, ref) < 1e-6


def test_custom_loss_is_evaluated_example_by_example():
    # a custom loss_fn is applied to each example alone (under torch.vmap), like the loop reference:
    # a loss that would couple examples through batch statistics cannot leak into book-keeping's δ
    def centred_mse(out, target):  # couples examples when called on a batch
        err = out - target.unsqueeze(1)
        return (err - err.mean(0, keepdim=True)).pow(2).sum(1) + err.pow(2).sum(1)

    model = _mlp(seed=6, classes=2)
    x, _ = _data(8, 12, 2, seed=7)
    y = torch.randn(8)
    kw = dict(clip_norm=0.5, noise_std=0.0, expected_batch_size=8, generator=torch.Generator(), loss_fn=centred_mse)
    bk = private_gradient(model, x, y, method="bk", **kw)
    loop = private_gradient(model, x, y, method="loop", **kw)
    assert _maxdiff(bk.grads, loop.grads) < 1e-6
    assert torch.allclose(bk.per_sample_norms, loop.per_sample_norms, rtol=1e-5)


def test_unclipped_noiseless_is_the_plain_minibatch_gradient():
    model = _mlp(seed=7)
    x, y = _data(16, 12, 4, seed=8)
    got = private_gradient(
        model, x, y, clip_norm=math.inf, noise_std=0.0, expected_batch_size=16, generator=torch.Generator()
    )
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()  # mean over 16 = sum / 16
    assert _maxdiff(got.grads, {k: p.grad for k, p in model.named_parameters()}) < 1e-6
    assert torch.all(got.clip_factors == 1)


@pytest.mark.parametrize("masked", [False, True])
def test_sgd_only_path_is_the_per_sample_sum_and_keeps_the_noise_stream(masked):
    # per_sample=False: one backward of the summed loss; equal to the per-sample (C = ∞) gradient up to
    # float rounding, the same noise drawn from the same stream, per-sample norms not computed (NaN)
    model = _cnn(seed=3)
    x, y = _data(9, 12, 3, seed=4, shape=(1, 12))
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.5) if masked else None
    kw = dict(clip_norm=math.inf, noise_std=0.7, expected_batch_size=8, masks=masks, keep_sums=True)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    fast = private_gradient(model, x, y, per_sample=False, generator=g1, **kw)
    slow = private_gradient(model, x, y, generator=g2, **kw)
    assert fast.method == "none" and slow.method == "bk"
    assert _maxdiff(fast.grads, slow.grads) < 1e-6
    assert _maxdiff(fast.unclipped_sum, slow.unclipped_sum) < 1e-5
    assert fast.noise_norm == pytest.approx(slow.noise_norm, rel=1e-6) and fast.noise_norm > 0
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert torch.isnan(fast.per_sample_norms).all() and torch.all(fast.clip_factors == 1)
    if masked:
        for k, m in masks.items():
            assert torch.all(fast.grads[k][m == 0] == 0)


def test_clip_bound_and_scale_equivariance():
    # ‖Σ φ_i g_i‖ ≤ |S| C, and every clipped per-sample gradient has norm ≤ C
    model = _mlp(seed=9)
    x, y = _data(40, 12, 4, seed=10)
    c = 0.05
    out = private_gradient(model, x, y, clip_norm=c, noise_std=0.0, expected_batch_size=40, generator=torch.Generator())
    assert torch.all(out.per_sample_norms * out.clip_factors <= c * (1 + 1e-6))
    total = math.sqrt(sum(float((g * 40).pow(2).sum()) for g in out.grads.values()))
    assert total <= 40 * c * (1 + 1e-6)


def test_noise_std_statistics_and_empty_batch():
    # Empty batch: ĝ = ν ξ / B exactly. Its coordinates are i.i.d. N(0, (ν/B)²): the sample std of
    # N = 20 000 coordinates has standard error ≈ s/√(2N); we allow k = 4 SE.
    model = nn.Linear(199, 100)  # d = 20 000
    gen = torch.Generator().manual_seed(11)
    nu, b = 2.5, 8.0
    out = private_gradient(
        model,
        torch.zeros(0, 199),
        torch.zeros(0, dtype=torch.long),
        clip_norm=1.0,
        noise_std=nu,
        expected_batch_size=b,
        generator=gen,
    )
    assert out.batch_size == 0 and out.per_sample_norms.numel() == 0
    z = torch.cat([g.flatten() for g in out.grads.values()]).double()
    n = z.numel()
    se = (nu / b) / math.sqrt(2 * n)
    assert abs(float(z.std()) - nu / b) < 4 * se
    assert abs(float(z.mean())) < 4 * (nu / b) / math.sqrt(n)
    assert out.noise_norm == pytest.approx(float(z.norm()) * b, rel=1e-5)


def test_noise_stream_is_consumed_identically_whatever_the_noise_std():
    model = _mlp(seed=1)
    x, y = _data(5, 12, 4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    private_gradient(model, x, y, clip_norm=1.0, noise_std=0.0, expected_batch_size=5, generator=g1)
    private_gradient(model, x, y, clip_norm=math.inf, noise_std=4.0, expected_batch_size=5, generator=g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_engine_invalid_arguments():
    model = _mlp()
    x, y = _data(4, 12, 4)
    kw = dict(clip_norm=1.0, noise_std=0.0, expected_batch_size=4, generator=torch.Generator())
    for bad, name in [
        (dict(clip_norm=-1.0), "clip_norm"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(expected_batch_size=0), "expected_batch_size"),
        (dict(method="fast"), "method"),
    ]:
        with pytest.raises(ValueError, match=name):
            private_gradient(model, x, y, **{**kw, **bad})
    batchnorm = nn.Sequential(nn.Linear(12, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        private_gradient(batchnorm, x, y, method="bk", **kw)
    with pytest.raises(ValueError, match="'vmap' or 'loop'"):
        per_sample_gradients(model, x, y, method="bk")
    with pytest.raises(ValueError, match="clip_norm must be inf"):
        private_gradient(model, x, y, per_sample=False, **kw)
    with pytest.raises(ValueError, match="per_sample"):
        private_gradient(model, x, y, **{**kw, "clip_norm": math.inf}, per_sample=1)


# ------------------------------------------------------------------------------------------------
# Poisson sampling


def test_poisson_batch_size_is_binomial():
    n, q, draws = 200, 0.1, 3000
    gen = torch.Generator().manual_seed(12)
    sizes = np.array([poisson_batch(n=n, sample_rate=q, generator=gen).numel() for _ in range(draws)])
    mean, var = n * q, n * q * (1 - q)
    # sample mean: SE = √(var/draws); sample variance: SE ≈ var·√(2/(draws−1)) (+ excess kurtosis, tiny here)
    assert abs(sizes.mean() - mean) < 4 * math.sqrt(var / draws)
    assert abs(sizes.var(ddof=1) - var) < 4 * var * math.sqrt(2 / (draws - 1)) * 1.05
    # chi-square goodness of fit against Binomial(n, q), tail bins pooled so every expected count ≥ 5
    lo, hi = int(stats.binom.ppf(0.005, n, q)), int(stats.binom.ppf(0.995, n, q))
    edges = np.arange(lo, hi + 1)
    observed = np.array([(sizes < lo).sum()] + [(sizes == k).sum() for k in edges] + [(sizes > hi).sum()])
    probs = np.array(
        [stats.binom.cdf(lo - 1, n, q)] + [stats.binom.pmf(k, n, q) for k in edges] + [stats.binom.sf(hi, n, q)]
    )
    assert (probs * draws).min() >= 5
    assert stats.chisquare(observed, probs * draws).pvalue > 1e-3


def test_poisson_inclusion_is_uniform_and_independent_of_position():
    n, q, draws = 50, 0.3, 2000
    gen = torch.Generator().manual_seed(13)
    counts = np.zeros(n)
    for _ in range(draws):
        counts[poisson_batch(n=n, sample_rate=q, generator=gen).numpy()] += 1
    # each count ~ Binomial(draws, q): chi-square with n − 1 dof across examples
    assert stats.chisquare(counts, np.full(n, counts.sum() / n)).pvalue > 1e-3
    assert abs(counts.mean() / draws - q) < 4 * math.sqrt(q * (1 - q) / (draws * n))


def test_sampler_epochs_fresh_batches_and_empty_batches_possible():
    s = PoissonSampler(n=20, batch_size=1, generator=torch.Generator().manual_seed(0))
    batches = list(s) + list(s)
    assert len(batches) == 40 and s.sample_rate == 0.05
    assert any(b.numel() == 0 for b in batches)  # P(empty) = 0.95^20 ≈ 0.36 per step
    with pytest.raises(ValueError, match="batch_size"):
        PoissonSampler(n=5, batch_size=6, generator=torch.Generator())
    with pytest.raises(ValueError, match="sample_rate"):
        poisson_batch(n=5, sample_rate=1.5, generator=torch.Generator())


# ------------------------------------------------------------------------------------------------
# masks


@settings(max_examples=15, deadline=None)
@given(sparsity=st.floats(0.0, 0.99), scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 1000))
def test_magnitude_masks_keep_exactly_the_largest(sparsity, scope, seed):
    g = torch.Generator().manual_seed(seed)
    params = {
        "a.weight": torch.randn(7, 5, generator=g),
        "a.bias": torch.randn(7, generator=g),
        "b.weight": torch.randn(3, 7, generator=g) * 3,
    }
    masks = magnitude_masks(params, sparsity=sparsity, scope=scope)
    assert torch.all(masks["a.bias"] == 1)
    groups = [["a.weight", "b.weight"]] if scope == "global" else [["a.weight"], ["b.weight"]]
    for group in groups:
        w = torch.cat([params[k].flatten() for k in group]).abs()
        m = torch.cat([masks[k].flatten() for k in group])
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert int(m.sum()) == w.numel() - round(sparsity * w.numel())
        if 0 < m.sum() < w.numel():
            assert float(w[m == 1].min()) >= float(w[m == 0].max())


def test_masks_invalid_and_density():
    params = {"w": torch.randn(4, 4)}
    with pytest.raises(ValueError, match=r"sparsity.*1\.0"):
        magnitude_masks(params, sparsity=1.0)
    with pytest.raises(ValueError, match=r"scope.*'row'"):
        magnitude_masks(params, sparsity=0.5, scope="row")
    assert mask_density(magnitude_masks(params, sparsity=0.25)) == 0.75


# ------------------------------------------------------------------------------------------------
# Hessian tools


def _squared(out, target):
    return 0.5 * (out.squeeze(-1) - target) ** 2


def test_hessian_of_linear_regression_is_gram_matrix():
    # L(w) = (1/2n) Σ (wᵀx_i − y_i)²  ⇒  H = XᵀX / n exactly; a planted spectrum checks Lanczos
    from simulations.nn.hessian import effective_rank, make_hvp, subspace_fraction, top_eigenpairs

    d, n = 400, 800
    g = torch.Generator().manual_seed(20)
    scales = torch.ones(d, dtype=torch.float64) * 0.1
    scales[:5] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.5], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ q.T
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    hvp = make_hvp(model, x, y, loss_fn=_squared)
    h = (x.T @ x / n).numpy()
    exact_vals, exact_vecs = np.linalg.eigh(h)
    vals, vecs = top_eigenpairs(hvp, dim=d, k=4, seed=0, tol=1e-8, dense_below=0)  # force Lanczos
    assert np.allclose(vals, exact_vals[::-1][:4], rtol=1e-6)
    overlap = np.abs(np.sum(vecs * exact_vecs[:, ::-1][:, :4], axis=0))
    assert np.all(overlap > 1 - 1e-6)
    # projections: the top eigenvector lies in the top-4 subspace, a random vector has ≈ 4/d of its mass there
    assert subspace_fraction(exact_vecs[:, -1], vecs) == pytest.approx(1.0, abs=1e-8)
    rnd = np.random.default_rng(0).standard_normal((200, d))
    fr = np.mean([subspace_fraction(v, vecs) for v in rnd])
    # each fraction ~ Beta(2, (d−4)/2): mean 4/d, sd ≈ √(2·4)/d; 200 draws, k = 4 SE
    assert abs(fr - 4 / d) < 4 * math.sqrt(8) / d / math.sqrt(200)
    assert effective_rank([1.0, 1.0, 1.0, 0.0]) == pytest.approx(3.0)
    assert effective_rank(vals, method="threshold", fraction=0.5) == float(np.sum(vals >= 0.5 * vals[0]))


def test_hvp_matches_autograd_hessian_on_a_nonlinear_net_with_mask():
    from simulations.nn.hessian import flatten, make_hvp, top_eigenpairs

    model = _mlp(seed=21, d_in=3, width=4, classes=3, depth=1).double()
    x, y = _data(10, 3, 3, seed=22)
    x = x.double()
    names = list(trainable_parameters(model))
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.5)
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss_of_flat(w):
        parts = {k: c.reshape(s) for k, c, s in zip(names, torch.split(w, sizes), shapes)}
        out = torch.func.functional_call(model, parts, (x,))
        return nn.functional.cross_entropy(out, y)

    w0 = flatten([p.detach() for p in model.parameters()])
    h = torch.autograd.functional.hessian(loss_of_flat, w0)
    m = flatten(masks)
    h_masked = (m[:, None] * h * m[None, :]).numpy()
    hvp = make_hvp(model, x, y, masks=masks)
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert np.allclose(hvp(v).numpy(), h_masked @ v.numpy(), atol=1e-10)
    vals, _ = top_eigenpairs(hvp, dim=w0.numel(), k=3)  # dense path (d = 31)
    assert np.allclose(vals, np.linalg.eigvalsh(h_masked)[::-1][:3], atol=1e-10)


def test_lanczos_step_cap_warns():
    from simulations.nn.hessian import top_eigenpairs

    d = 500
    diag = torch.linspace(1.0, 1.001, d, dtype=torch.float64)  # clustered spectrum: hard for Lanczos
    with pytest.warns(RuntimeWarning, match="max_iter"):
        top_eigenpairs(lambda v: diag * v, dim=d, k=5, max_iter=1, tol=1e-14, dense_below=0)
    with pytest.raises(ValueError, match="k must be"):
        top_eigenpairs(lambda v: v, dim=3, k=4)


def test_diagnostics_equal_direct_computation_from_per_sample_gradients():
    from simulations.nn.diagnostics import bias_diagnostics, step_diagnostics

    model = _mlp(seed=30)
    x, y = _data(25, 12, 4, seed=31)
    g = per_sample_gradients(model, x, y, method="loop")
    flat = torch.cat([v.reshape(25, -1) for v in g.values()], 1).double()
    norms = flat.norm(dim=1)
    c, nu, b = float(norms.quantile(0.4)), 0.5, 20.0  # clip about 60 % of the samples
    pg = private_gradient(
        model,
        x,
        y,
        clip_norm=c,
        noise_std=nu,
        expected_batch_size=b,
        generator=torch.Generator().manual_seed(1),
        keep_sums=True,
    )
    phi = (c / (norms + CLIP_EPS)).clamp(max=1)
    mean = flat.mean(0)
    bias = (phi[:, None] * flat).mean(0) - mean
    priv = torch.cat([v.flatten() for v in pg.grads.values()]).double()
    d = {**step_diagnostics(pg, clip_norm=c), **bias_diagnostics(pg)}
    assert d["clip_fraction"] == pytest.approx(float((norms > c).double().mean()))
    assert d["mean_clip_factor"] == pytest.approx(float(phi.mean()), rel=1e-5)
    assert d["norm_q50"] == pytest.approx(float(norms.median()), rel=1e-5)
    assert d["clip_bias_norm"] == pytest.approx(float(bias.norm()), rel=1e-5)
    assert d["clip_bias_rel"] == pytest.approx(float(bias.norm() / mean.norm()), rel=1e-5)
    assert d["cosine"] == pytest.approx(float(priv @ mean / (priv.norm() * mean.norm())), rel=1e-5)
    assert 0 < d["clip_fraction"] < 1  # the clip is partly active: the checks are not vacuous
