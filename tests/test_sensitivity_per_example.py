"""The sensitivity bound of the clipped sum, measured honestly for every per-sample method and every forced
book-keeping branch, tight from both sides (``tests/test_sensitivity.py`` checks the upper bound from outside
the engine on the built models).

For a batch S and each example i ∈ S, the contribution of i is Δ_i = Σ_S φ_j m⊙g_j − Σ_{S∖i} φ_j m⊙g_j,
computed from two engine calls (with and without x_i): exactly what add/remove-one adjacency changes
before the noise. DP-SGD's guarantee needs ‖Δ_i‖ ≤ C for every i, model and method. The clip norm is
set below every per-sample norm, so every example is clipped and ‖Δ_i‖ = C exactly for a correct
engine: the check is tight from both sides (an engine that clips rows instead of examples, or that
loses part of a gradient, fails it).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simulations.nn import engine
from simulations.nn import persample as ps
from simulations.nn.engine import CLIP_EPS, private_gradient
from simulations.nn.masks import apply_masks, magnitude_masks
from simulations.nn.models import build_model

torch.set_num_threads(1)
N = 4  # examples per batch


class Rows(nn.Module):
    """(B, L, F) → (B·L, F) → Linear → (B, L·H) → Linear: rows of the first layer are positions."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Linear(5 * 4, 3)

    def forward(self, x):
        b, l, f = x.shape
        h = torch.tanh(self.fc(x.reshape(b * l, f)))
        return self.head(h.reshape(b, l * 4))


class BatchCentred(nn.Module):
    """Subtracts the batch mean: mixes examples (the proof refuses it)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x - x.mean(0, keepdim=True))


class Shared(nn.Module):
    """One Linear called twice, one conv called twice, and weights tied across two Linear modules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 3, padding=1)
        self.a = nn.Linear(12, 12)
        self.b = nn.Linear(12, 12)
        self.b.weight = self.a.weight
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(torch.tanh(self.conv(x)))).flatten(1)
        h = torch.tanh(self.a(torch.tanh(self.a(h))))
        return self.head(torch.tanh(self.b(h)))


def _sequence_linear():
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.LayerNorm(5), nn.Flatten(), nn.Linear(6 * 5, 3))


def _sequence_conv():
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding="same"), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3)
    )


MODELS = {
    # name: (factory, per-example input shape, provable by the engine)
    "mlp": (lambda: build_model("mlp", input_shape=(12,), num_classes=3, width=8, depth=2, seed=1), (12,), True),
    "cnn1d": (lambda: build_model("cnn", input_shape=(16,), num_classes=3, width=4, depth=2, seed=1), (16,), True),
    "cnn2d": (
        lambda: build_model("cnn", input_shape=(1, 8, 8), num_classes=3, width=4, depth=2, seed=1),
        (1, 8, 8),
        True,
    ),
    "wrn": (
        lambda: build_model("wrn", input_shape=(1, 8, 8), num_classes=3, width=1, depth=10, seed=1),
        (1, 8, 8),
        True,
    ),
    "wrn_ws": (
        lambda: build_model("wrn_ws", input_shape=(1, 8, 8), num_classes=3, width=1, depth=10, seed=1),
        (1, 8, 8),
        True,
    ),
    "dpcnn": (
        lambda: build_model("dpcnn", input_shape=(1, 14, 14), num_classes=3, width=1, depth=1, seed=1),
        (1, 14, 14),
        True,
    ),
    "sequence_linear": (_sequence_linear, (6, 3), True),
    "sequence_conv1d": (_sequence_conv, (3, 6), True),
    "shared_weights": (Shared, (2, 6), True),
    "reshape_rows": (Rows, (5, 3), False),
    "batch_mixing": (BatchCentred, (6,), False),
}


def _flat(d):
    return torch.cat([v.reshape(-1) for v in d.values()]).double()


def _clipped_sum(model, x, y, *, clip, method, masks, rule="flat"):
    out = private_gradient(
        model,
        x,
        y,
        clip_norm=clip,
        noise_std=0.0,
        expected_batch_size=1.0,
        generator=torch.Generator(),
        keep_sums=True,
        masks=masks,
        method=method,
        clip_rule=rule,
    )
    return out


def _setup(name, masked, dtype=torch.float64):
    torch.manual_seed(7)
    factory, shape, provable = MODELS[name]
    model = factory().to(dtype)
    masks = None
    if masked:
        masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.5, scope="layer")
        apply_masks(model, masks)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(N, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (N,), generator=g)
    return model, masks, x, y, provable


def _check_contributions(name, masked, dtype, tol, methods=None):
    model, masks, x, y, provable = _setup(name, masked, dtype)
    norms = _clipped_sum(model, x, y, clip=math.inf, method="loop", masks=masks).per_sample_norms
    clip = 0.5 * float(norms.min())  # every example clipped: a correct engine gives ‖Δ_i‖ = C
    if methods is None:
        methods = ["auto", "vmap", "loop"] + (["bk"] if provable else [])
    full = {}
    for method in methods:
        whole = _clipped_sum(model, x, y, clip=clip, method=method, masks=masks)
        assert whole.method == ("bk" if provable else "vmap") if method == "auto" else whole.method == method
        full[method] = _flat(whole.clipped_sum)
        for i in range(N):
            rest = [j for j in range(N) if j != i]
            without = _clipped_sum(model, x[rest], y[rest], clip=clip, method=method, masks=masks)
            contribution = float((full[method] - _flat(without.clipped_sum)).norm())
            assert contribution <= clip * (1 + tol), (method, i, contribution / clip)
            exact = clip * float(norms[i]) / (float(norms[i]) + CLIP_EPS)  # φ_i‖g_i‖, Opacus' 1e-6 in φ
            assert contribution >= exact * (1 - 10 * tol), (method, i, contribution / exact)  # tight from below
    return full, clip


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_example_contributes_at_most_clip_norm_and_methods_agree(name, masked):
    # float64: the bound to 1e-9 and all methods equal to 1e-8
    full, clip = _check_contributions(name, masked, torch.float64, 1e-9)
    for method, total in full.items():
        assert torch.allclose(total, full["auto"], rtol=1e-8, atol=1e-10 * clip), method


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_bound_holds_in_float32(name):
    # float32, the precision of training runs: the bound to float32 rounding (methods then differ by the
    # models' own float32 conditioning, e.g. GroupNorm over near-constant groups; not compared here)
    _check_contributions(name, False, torch.float32, 1e-5)


@pytest.mark.parametrize("name", ["reshape_rows", "batch_mixing"])
def test_forcing_book_keeping_on_an_unprovable_model_is_refused(name):
    model, _, x, y, _ = _setup(name, False)
    with pytest.raises(ValueError, match="per-example model structure"):
        _clipped_sum(model, x, y, clip=1.0, method="bk", masks=None)


BRANCHES = {
    # book-keeping's per-layer choices, each forced on every layer: ghost norms everywhere (masked layers
    # still instantiate), instantiation with the per-sample gradients kept (sum = φ·G), instantiation
    # with the gradients dropped (sum = a weight-gradient pass of φ∘δ after the backward)
    "ghost": (True, 0.0),
    "instantiate_keep": (False, math.inf),
    "instantiate_factored": (False, 0.0),
}


CHOOSING = ("cnn1d", "cnn2d", "dpcnn", "sequence_conv1d", "wrn", "wrn_ws")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("branch", sorted(BRANCHES))
@pytest.mark.parametrize("name", sorted(k for k, v in MODELS.items() if v[2]))
def test_the_bound_holds_on_every_forced_book_keeping_branch(name, branch, masked, monkeypatch):
    # the automatic choice picks one branch per layer by its shapes; forcing each branch on every layer
    # checks the clipping bound (and its tightness) of every code path a larger model could take
    ghost, keep = BRANCHES[branch]
    calls = []

    def choose(*args, **kwargs):
        calls.append(args)
        return ghost

    monkeypatch.setattr(ps, "conv_uses_ghost", choose)
    monkeypatch.setattr(ps, "linear_uses_ghost", choose)
    monkeypatch.setattr(engine, "KEEP_FACTOR", keep)
    full, clip = _check_contributions(name, masked, torch.float64, 1e-9, methods=["bk"])
    reference = _check_contributions(name, masked, torch.float64, 1e-9, methods=["loop"])[0]["loop"]
    assert torch.allclose(full["bk"], reference, rtol=1e-8, atol=1e-10 * clip)
    # models with a conv weight used once, or an unmasked Linear over positions (masked Linear layers,
    # shared weights and one-position Linear layers have a single path, taken by every branch)
    if name in CHOOSING or (name == "sequence_linear" and not masked):
        assert calls, "the forced choice was never consulted"


@pytest.mark.parametrize("name", sorted(k for k, v in MODELS.items() if v[2]))
def test_normalised_clipping_contributes_exactly_c_norm_over_norm_plus_gamma(name):
    # the normalised rule rescales every example, also those far below C (phi_i > 1): contribution
    # C*|g_i|/(|g_i| + gamma) < C exactly, for every method; C above every norm, where flat clipping is idle
    model, masks, x, y, _ = _setup(name, True)
    norms = _clipped_sum(model, x, y, clip=math.inf, method="loop", masks=masks).per_sample_norms
    clip = 3.0 * float(norms.max())
    for method in ("bk", "vmap", "loop"):
        whole = _flat(_clipped_sum(model, x, y, clip=clip, method=method, masks=masks, rule="normalised").clipped_sum)
        for i in range(N):
            rest = [j for j in range(N) if j != i]
            without = _clipped_sum(model, x[rest], y[rest], clip=clip, method=method, masks=masks, rule="normalised")
            contribution = float((whole - _flat(without.clipped_sum)).norm())
            exact = clip * float(norms[i]) / (float(norms[i]) + engine.NORMALISED_GAMMA)
            assert contribution == pytest.approx(exact, rel=1e-9), (method, i)
            assert contribution < clip


def test_normalised_clipping_needs_a_finite_clip_norm():
    model, _, x, y, _ = _setup("mlp", False)
    with pytest.raises(ValueError, match="clip_norm must be finite"):
        _clipped_sum(model, x, y, clip=math.inf, method="auto", masks=None, rule="normalised")
    with pytest.raises(ValueError, match="clip_rule must be one of"):
        _clipped_sum(model, x, y, clip=1.0, method="auto", masks=None, rule="auto-v")
