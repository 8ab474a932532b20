"""Magnitude-pruning masks for networks: keep the largest |w|, freeze the rest at exactly zero.

For a sparsity s ∈ [0, 1) and a group G of prunable parameters with n_G scalars, the mask keeps
the k_G = n_G − round(s·n_G) entries of largest |w| (ties broken by position, deterministic):

* ``scope="global"``: one group — all prunable tensors together (layers compete; wide layers lose
  more);
* ``scope="layer"``: one group per tensor (every layer keeps the fraction 1 − s).

Prunable by default: tensors with ≥ 2 dimensions (Linear / Conv weights); biases and normalisation
parameters are always kept (mask of ones). The training loop multiplies gradients and noise by the
mask and re-applies it to the weights after every optimizer step, so pruned weights stay exactly
zero and noise-free (``simulations.nn.engine``). Where the magnitudes come from — ``init`` or ``random``
(free), ``public`` (a run on the disjoint public split), ``private`` (an earlier DP run, whose ε must
be composed) or ``oracle`` (non-private training) — is decided and labelled by
``simulations.nn.train``; this module only ranks numbers (or draws them, for ``random``).

Reference: magnitude pruning as used under DP by Adamczewski & Park 2023 (arXiv 2303.04612v1).

Example:
    >>> import torch
    >>> w = {"fc.weight": torch.tensor([[0.1, -3.0], [2.0, 0.5]]), "fc.bias": torch.tensor([0.0, 1.0])}
    >>> m = magnitude_masks(w, sparsity=0.5, scope="global")
    >>> m["fc.weight"].tolist(), m["fc.bias"].tolist()
    ([[0.0, 1.0], [1.0, 0.0]], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from dptheory.validate import check_finite

__all__ = ["SCOPES", "apply_masks", "default_prunable", "magnitude_masks", "mask_density", "random_masks"]

SCOPES = ("global", "layer")


def default_prunable(name: str, tensor: torch.Tensor) -> bool:
    """Weights of Linear/Conv layers (≥ 2 dimensions) are prunable; biases and norm scales are not."""
    return tensor.dim() >= 2


def _keep_top(values: torch.Tensor, keep: int) -> torch.Tensor:
    flat = values.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        order = torch.argsort(flat.abs(), descending=True, stable=True)
        mask[order[:keep]] = True
    return mask


def magnitude_masks(
    params: Mapping[str, torch.Tensor],
    *,
    sparsity: float,
    scope: str = "global",
    prunable: Callable[[str, torch.Tensor], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """0/1 masks (same shape and dtype as each tensor) keeping the largest magnitudes (module docstring).

    ``params``: name → tensor (e.g. ``dict(model.named_parameters())`` or a state dict),
    ``sparsity`` = s ∈ [0, 1) the fraction of prunable scalars set to zero, ``scope`` ∈ SCOPES,
    ``prunable(name, tensor)`` selects the tensors that may be pruned (default: ≥ 2-D).
    """
    s = check_finite("sparsity", sparsity)
    if not 0 <= s < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    prunable = prunable or default_prunable
    masks = {k: torch.ones_like(v.detach()) for k, v in params.items()}
    names = [k for k, v in params.items() if prunable(k, v)]
    if not names:
        return masks
    if scope == "layer":
        for k in names:
            v = params[k].detach()
            keep = v.numel() - round(s * v.numel())
            masks[k] = _keep_top(v, keep).reshape(v.shape).to(v.dtype)
        return masks
    flat = torch.cat([params[k].detach().reshape(-1).float() for k in names])
    keep = flat.numel() - round(s * flat.numel())
    kept = _keep_top(flat, keep)
    start = 0
    for k in names:
        v = params[k]
        masks[k] = kept[start : start + v.numel()].reshape(v.shape).to(v.dtype)
        start += v.numel()
    return masks


def random_masks(
    params: Mapping[str, torch.Tensor],
    *,
    sparsity: float,
    seed: int,
    scope: str = "layer",
    prunable: Callable[[str, torch.Tensor], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """0/1 masks keeping uniformly random entries: the data-independent baseline of magnitude pruning.

    Exactly the counts of :func:`magnitude_masks` with the same ``scope`` (layer: every prunable
    tensor keeps n_G − round(s·n_G); global: one random subset of the pooled scalars), the kept set
    drawn by ranking i.i.d. uniform scores from a CPU generator seeded with ``seed`` (the weights'
    values are never read, so the mask costs no privacy). Random selection is the baseline against
    which magnitude selection under DP is judged (Adamczewski & Park 2023, arXiv 2303.04612v1).
    """
    gen = torch.Generator().manual_seed(int(seed))
    scores = {k: torch.rand(v.shape, generator=gen).to(v.device) for k, v in params.items()}
    masks = magnitude_masks(
        scores, sparsity=sparsity, scope=scope, prunable=lambda k, v: (prunable or default_prunable)(k, params[k])
    )
    return {k: m.to(params[k].dtype) for k, m in masks.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """w ← m ⊙ w in place for every masked parameter of ``model`` (pruned weights become exactly 0)."""
    named = dict(model.named_parameters())
    for k, m in masks.items():
        if k not in named:
            raise ValueError(f"mask name {k!r} is not a parameter of the model")
        named[k].mul_(m.to(named[k].device))


def mask_density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of scalars kept over all masked tensors (1 − overall sparsity, biases included)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(float(m.sum()) for m in masks.values())
    return kept / total if total else 1.0
