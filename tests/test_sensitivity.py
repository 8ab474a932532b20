"""The DP guarantee's premise, checked from outside the engine: adding one example to a batch changes the
clipped gradient sum by at most C, for every per-sample method on every model kind it supports, with
and without pruning masks.

The contribution of example i is measured as B · (ĝ(S) − ĝ(S \\ {i})) with no noise — the difference
of two engine calls, not the engine's own per-sample norms — so a method that mis-scales, misses a
layer or leaks one example's gradient into another's clip factor fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulations.nn.engine import METHODS, bk_applicable, private_gradient, trainable_parameters
from simulations.nn.masks import random_masks
from simulations.nn.models import build_model

torch.set_num_threads(1)

KINDS = {  # model kind -> (input shape, depth, width): the smallest of each that the engine supports
    "mlp": ((12,), 2, 16),
    "cnn": ((1, 8, 8), 2, 4),
    "wrn": ((3, 8, 8), 10, 1),
}
N = 5


def _batch(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn((N, *shape), generator=g)  # large inputs: most per-sample norms exceed C
    y = torch.randint(0, 4, (N,), generator=g)
    return x, y


def _sum(model, x, y, *, method, clip, masks):
    out = private_gradient(
        model,
        x,
        y,
        clip_norm=clip,
        noise_std=0.0,
        expected_batch_size=float(N),
        generator=torch.Generator().manual_seed(0),
        method=method,
        masks=masks,
    )
    return {k: v.double() * N for k, v in out.grads.items()}, out


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_example_moves_the_clipped_sum_by_at_most_c(kind, method, masked):
    shape, depth, width = KINDS[kind]
    model = build_model(kind, input_shape=shape, num_classes=4, width=width, depth=depth, seed=3)
    if method == "bk" and not bk_applicable(model):
        x, y = _batch(shape, 1)
        with pytest.raises(ValueError, match="bk"):
            _sum(model, x, y, method=method, clip=1.0, masks=None)
        return  # not a supported combination: refused, never run
    params = {k: v.detach() for k, v in trainable_parameters(model).items()}
    masks = random_masks(params, sparsity=0.5, seed=7) if masked else None
    x, y = _batch(shape, 1)
    for clip in (1e-3, 0.5):
        full, out = _sum(model, x, y, method=method, clip=clip, masks=masks)
        assert int((out.per_sample_norms > clip).sum()) >= 1  # clipping is exercised
        for i in range(N):
            keep = [j for j in range(N) if j != i]
            rest, _ = _sum(model, x[keep], y[keep], method=method, clip=clip, masks=masks)
            contribution = math.sqrt(sum(float((full[k] - rest[k]).pow(2).sum()) for k in full))
            assert contribution <= clip * (1 + 1e-4) + 1e-7, (kind, method, masked, clip, i, contribution)
            if masks is not None:  # pruned coordinates receive nothing from any example
                for k, m in masks.items():
                    assert torch.all((full[k] - rest[k])[m == 0] == 0)
