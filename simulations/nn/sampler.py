"""Poisson subsampling of a training set: the batch distribution the privacy accountant assumes.

At every step each of the n examples joins the batch independently with probability q
(``sample_rate``), so the realised batch size is |S| ~ Binomial(n, q) with mean B = qn (the
*expected* batch size that the DP-SGD gradient divides by) and variance nq(1 − q); an empty batch
is possible and is a valid step (noise only). This is exactly the ``PoissonSampledDpEvent`` that
``dptheory.privacy`` accounts for (Abadi et al. 2016, arXiv 1607.00133v2; Zhu & Wang 2019,
arXiv 1908.10530v1 use the same add/remove-one Poisson model). Shuffled fixed-size batches would
NOT match the accountant.

Randomness comes only from the ``torch.Generator`` passed in (a CPU generator, so that the index
stream is identical on CPU and CUDA runs); its state is saved in checkpoints.

Example:
    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> idx = poisson_batch(n=1000, sample_rate=0.05, generator=gen)
    >>> idx.dtype, bool((idx[1:] > idx[:-1]).all())
    (torch.int64, True)
"""

from __future__ import annotations

import torch

from dptheory.validate import check_int, check_probability

__all__ = ["PoissonSampler", "poisson_batch", "steps_per_epoch"]


def poisson_batch(*, n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices i ∈ {0, …, n−1} with i ∈ S independently with probability q = ``sample_rate``.

    Consumes exactly n uniforms from ``generator`` per call, whatever the outcome (so streams
    stay aligned across runs that differ only in what they do with the batch).
    """
    n = check_int("n", n, minimum=1)
    q = check_probability("sample_rate", sample_rate, open_left=True)
    u = torch.rand(n, generator=generator, device=generator.device)
    return torch.nonzero(u < q, as_tuple=False).flatten().cpu()


def steps_per_epoch(*, n: int, batch_size: int) -> int:
    """Steps per "epoch" = round(n / B), at least 1 (one epoch = n examples seen in expectation)."""
    n = check_int("n", n, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n (the training set size {n}), got {batch_size}")
    return max(1, round(n / batch_size))


class PoissonSampler:
    """Iterates over the Poisson batches of one epoch: ``steps`` index tensors, fresh each step.

    ``n`` = training-set size, ``batch_size`` = expected batch size B (q = B / n), ``generator`` =
    a CPU ``torch.Generator``; ``steps`` defaults to :func:`steps_per_epoch`.

    Example:
        >>> import torch
        >>> s = PoissonSampler(n=100, batch_size=10, generator=torch.Generator().manual_seed(1))
        >>> s.sample_rate, len(list(s))
        (0.1, 10)
    """

    def __init__(self, *, n: int, batch_size: int, generator: torch.Generator, steps: int | None = None):
        self.n = check_int("n", n, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if self.batch_size > self.n:
            raise ValueError(f"batch_size must be <= n ({self.n}), got {batch_size}")
        self.sample_rate = self.batch_size / self.n
        self.steps = (
            steps_per_epoch(n=self.n, batch_size=self.batch_size)
            if steps is None
            else check_int("steps", steps, minimum=1)
        )
        self.generator = generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield poisson_batch(n=self.n, sample_rate=self.sample_rate, generator=self.generator)
