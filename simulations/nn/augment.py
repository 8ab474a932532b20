"""Data augmentation for augmentation multiplicity (De et al. 2022, arXiv 2204.13650v2 §3.2).

For a batch of images x of shape (B, C, H, W), :func:`augment_batch` returns K augmented copies of
every example, example-major: row i·K + k of the result (B·K, C, H, W) is the k-th copy of example i.
A copy is the image translated by (dy, dx), each drawn uniformly from {−s, …, s} (s = ``shift``),
with the border pixels replicated into the space the shift opens (for digits the background, so a
shifted digit stays on a clean background), then, with ``flip``, mirrored left–right with
probability 1/2 (natural images; not digits, where a mirrored 2 is no digit).

DP-SGD with augmentation multiplicity averages the gradients of each example's K copies and clips
that mean (``simulations.nn.engine.private_gradient(multiplicity=K)``): one example still moves the
clipped sum by at most C, so the sampler and the accountant are those of plain DP-SGD. The
augmentation is a function of the example and of its own random stream only (``generator``), so it
releases nothing about other examples.

Example:
    >>> import torch
    >>> x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    >>> out = augment_batch(x, multiplicity=4, shift=1, generator=torch.Generator().manual_seed(0))
    >>> tuple(out.shape)
    (8, 1, 3, 3)
    >>> same = augment_batch(x, multiplicity=2, shift=0, generator=torch.Generator())
    >>> bool((same == x.repeat_interleave(2, 0)).all())
    True
"""

from __future__ import annotations

import torch

__all__ = ["AUGMENTATIONS", "augment_batch"]

AUGMENTATIONS = ("none", "shift", "shift_flip")


def augment_batch(
    x: torch.Tensor, *, multiplicity: int, shift: int, flip: bool = False, generator: torch.Generator
) -> torch.Tensor:
    """K = ``multiplicity`` random translations (± ``shift`` pixels, edges replicated) of every image of
    ``x`` (B, C, H, W), example-major (module docstring); ``flip``: mirror each copy with probability 1/2.
    The offsets are drawn on the CPU from ``generator`` (the same stream on every device)."""
    if x.dim() != 4:
        raise ValueError(f"augmentation needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
    if multiplicity < 1 or shift < 0:
        raise ValueError(f"multiplicity must be >= 1 and shift >= 0, got {multiplicity} and {shift}")
    h, w = x.shape[2], x.shape[3]
    rows = x.repeat_interleave(multiplicity, dim=0)
    n = rows.shape[0]
    offsets = torch.randint(-shift, shift + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    if shift == 0 and not flip:
        return rows
    dy, dx = offsets[:, 0].to(x.device), offsets[:, 1].to(x.device)
    iy = (torch.arange(h, device=x.device)[None, :] - dy[:, None]).clamp(0, h - 1)  # (n, H): source row
    ix = (torch.arange(w, device=x.device)[None, :] - dx[:, None]).clamp(0, w - 1)  # (n, W): source column
    ix = torch.where(flips.to(x.device)[:, None], ix.flip(1), ix)
    index = torch.arange(n, device=x.device)[:, None, None]
    out = rows.permute(0, 2, 3, 1)[index, iy[:, :, None], ix[:, None, :]]  # (n, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
