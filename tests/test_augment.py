"""Augmentation multiplicity: the copies are translations of their own example, the engine averages each
example's copies before clipping (exact against a loop; sensitivity still C), and a training run with
augmentation keeps every other random stream and its privacy label."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from simulations.nn.augment import augment_batch
from simulations.nn.engine import CLIP_EPS, per_sample_gradients, private_gradient
from simulations.nn.models import build_model
from simulations.nn.train import TrainConfig, train, training_cost

torch.set_num_threads(1)


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C, H, W) translated by (dy, dx) with edges replicated, written as an explicit double loop."""
    _, h, w = img.shape
    out = torch.empty_like(img)
    for yy in range(h):
        for xx in range(w):
            out[:, yy, xx] = img[:, min(max(yy - dy, 0), h - 1), min(max(xx - dx, 0), w - 1)]
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_every_copy_is_a_translation_of_its_own_example(flip):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 5, 6, generator=g)
    out = augment_batch(x, multiplicity=4, shift=2, flip=flip, generator=torch.Generator().manual_seed(1))
    assert out.shape == (12, 2, 5, 6)
    seen = set()
    for row in range(12):
        src = x[row // 4]  # example-major: rows i*K .. i*K+K-1 are example i
        candidates = [
            (dy, dx, f)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for f in ((False, True) if flip else (False,))
            if torch.equal(out[row], _shifted(src, dy, dx).flip(-1) if f else _shifted(src, dy, dx))
        ]
        assert candidates, row
        seen.add(candidates[0])
    assert len(seen) > 3  # the offsets vary
    again = augment_batch(x, multiplicity=4, shift=2, flip=flip, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # the same stream, the same copies


def test_non_images_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="image batches"):
        augment_batch(torch.zeros(4, 40), multiplicity=2, shift=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="multiplicity"):
        augment_batch(torch.zeros(4, 1, 3, 3), multiplicity=0, shift=1, generator=torch.Generator())


def _batch(k, dtype=torch.float64, model_name="cnn"):
    torch.manual_seed(5)
    model = build_model(model_name, input_shape=(1, 8, 8), num_classes=3, width=3, depth=2, seed=2).to(dtype)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (4,), generator=g)
    xa = augment_batch(x, multiplicity=k, shift=2, generator=torch.Generator().manual_seed(9))
    return model, xa, y.repeat_interleave(k)


def _flat(d):
    return torch.cat([v.reshape(-1) for v in d.values()])


@pytest.mark.parametrize(
    ("model_name", "method", "used"),
    [
        ("cnn", "vmap", "vmap"),
        ("cnn", "loop", "loop"),
        ("cnn", "auto", "vmap"),
        ("mlp", "auto", "bk"),
        ("mlp", "bk", "bk"),
    ],
)
def test_engine_clips_the_mean_of_each_examples_copies(model_name, method, used):
    # book-keeping groups an example's copies as positions of its Linear layers (MLP); conv models use vmap
    k = 3
    model, x, y = _batch(k, model_name=model_name)
    rows = per_sample_gradients(model, x, y, method="loop")  # one gradient per augmented copy
    mean = {n: g.reshape(4, k, *g.shape[1:]).mean(1) for n, g in rows.items()}
    norms = torch.stack([_flat({n: g[i] for n, g in mean.items()}).norm() for i in range(4)])
    clip = 0.5 * float(norms.min())
    out = private_gradient(
        model, x, y, clip_norm=clip, noise_std=0.0, expected_batch_size=1.0,
        generator=torch.Generator(), keep_sums=True, method=method, multiplicity=k, chunk_size=5,
    )  # fmt: skip
    assert out.method == used and out.batch_size == 4
    assert torch.allclose(out.per_sample_norms, norms, rtol=1e-10)
    expected = sum(float(clip / (norms[i] + CLIP_EPS)) * _flat({n: g[i] for n, g in mean.items()}) for i in range(4))
    assert torch.allclose(_flat(out.clipped_sum), expected, rtol=1e-9, atol=1e-12)
    # sensitivity: removing one example (all its copies) moves the clipped sum by phi_i*|g_i| = C (all clipped)
    for i in range(4):
        keep = [r for r in range(4 * k) if r // k != i]
        without = private_gradient(
            model, x[keep], y[keep], clip_norm=clip, noise_std=0.0, expected_batch_size=1.0,
            generator=torch.Generator(), keep_sums=True, method=method, multiplicity=k,
        )  # fmt: skip
        assert without.method == used
        moved = float((_flat(out.clipped_sum) - _flat(without.clipped_sum)).norm())
        assert moved <= clip * (1 + 1e-9) and moved >= clip * float(norms[i]) / float(norms[i] + CLIP_EPS) * (1 - 1e-8)


def test_engine_multiplicity_guards_and_the_unclipped_shortcut():
    model, x, y = _batch(2)
    kw = dict(noise_std=0.0, expected_batch_size=1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="must divide"):
        private_gradient(model, x[:7], y[:7], clip_norm=1.0, multiplicity=2, **kw)
    with pytest.raises(ValueError, match="book-kept for Linear layers only, not Conv2d"):
        private_gradient(model, x, y, clip_norm=1.0, multiplicity=2, method="bk", **kw)
    fast = private_gradient(model, x, y, clip_norm=math.inf, multiplicity=2, per_sample=False, **kw)
    slow = private_gradient(model, x, y, clip_norm=math.inf, multiplicity=2, method="loop", **kw)
    assert fast.batch_size == slow.batch_size == 4
    assert torch.allclose(_flat(fast.grads), _flat(slow.grads), rtol=1e-9, atol=1e-12)


BASE = TrainConfig(
    dataset="digits", n_train=200, n_test=100, model="cnn", width=4, depth=2, epochs=2, batch_size=40,
    lr=0.5, noise_multiplier=1.5, quiet=True, accountants=("rdp",),
)  # fmt: skip


def test_training_with_augmentation_keeps_the_other_streams_and_the_label():
    plain = train(BASE)
    # shift 0, K = 1: the copies are the examples, so the run must be the plain run bit for bit
    # (the augmentation stream is separate from the sampler and noise streams)
    idle = train(replace(BASE, augment="shift", augment_shift=0))
    assert [r["train_loss"] for r in idle["history"]] == [r["train_loss"] for r in plain["history"]]
    aug = train(replace(BASE, augment="shift", augment_shift=1, augment_multiplicity=4))
    assert aug["privacy"]["label"] == plain["privacy"]["label"] == "private"
    assert aug["history"][-1]["epsilon_rdp"] == plain["history"][-1]["epsilon_rdp"]  # the same accounting
    assert aug["history"][-1]["train_loss"] != plain["history"][-1]["train_loss"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(augment_multiplicity=4), "needs augment"),
        (dict(augment="rotate"), "augment must be one of"),
        (dict(augment="shift", augment_multiplicity=1000), "augment_multiplicity must be <= 64"),
    ],
)
def test_bad_augmentation_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        replace(BASE, **changes)


def test_augmentation_needs_images_and_costs_k_times_the_rows():
    with pytest.raises(ValueError, match="needs image inputs"):
        training_cost(replace(BASE, dataset="mnist1d", model="mlp", augment="shift"))
    one = training_cost(replace(BASE, augment="shift"))
    four = training_cost(replace(BASE, augment="shift", augment_multiplicity=4))
    assert four.work > 3 * one.work


def test_book_keeping_with_copies_and_masks_equals_the_loop():
    from simulations.nn.masks import apply_masks, magnitude_masks

    model, x, y = _batch(2, model_name="mlp")
    masks = magnitude_masks(dict(model.named_parameters()), sparsity=0.5, scope="layer")
    apply_masks(model, masks)
    kw = dict(clip_norm=0.05, noise_std=0.0, expected_batch_size=1.0, keep_sums=True, masks=masks, multiplicity=2)
    bk = private_gradient(model, x, y, generator=torch.Generator(), method="bk", **kw)
    loop = private_gradient(model, x, y, generator=torch.Generator(), method="loop", **kw)
    assert bk.method == "bk" and torch.allclose(bk.per_sample_norms, loop.per_sample_norms, rtol=1e-10)
    assert torch.allclose(_flat(bk.clipped_sum), _flat(loop.clipped_sum), rtol=1e-9, atol=1e-12)
    assert torch.allclose(_flat(bk.unclipped_sum), _flat(loop.unclipped_sum), rtol=1e-9, atol=1e-12)
