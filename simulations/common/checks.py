"""Validation shared by the synthetic-basin command lines (basin_dim, recovery, switch, prune).

:func:`validate_basin_config` checks the fields these configs share — sizes, the physical scales of
the basin and of the step, seeds and threads — with the ranges the models can represent: every
physical scale within 10⁻³⁰ … 10³⁰ (``dptheory.validate.check_scale``; beyond, squares and products
overflow float64 before the value means anything), the rank at most d, σ at most 10⁶ and a batch
size at most 10⁹. A config calls it first in ``__post_init__`` and then checks its own fields and
its resources (``simulations.common.resources``), before any record or array is built.
"""

from __future__ import annotations

from typing import Any

from dptheory.validate import check_choice, check_int, check_nonnegative, check_probability, check_scale
from simulations.common.resources import check_threads

__all__ = ["MAX_BATCH_SIZE", "MAX_NOISE_MULTIPLIER", "validate_basin_config"]

MAX_NOISE_MULTIPLIER = 1e6
MAX_BATCH_SIZE = 10**9
MAX_POWER = 100.0


def validate_basin_config(config: Any, *, spectrum: bool = False, heldout: bool = False) -> None:
    """Check the shared fields of a synthetic-basin config (module docstring); ValueError names the field.

    Fields read (those present): ``d``, ``rank``, ``steps``, ``replicas``, ``seed``, ``threads``,
    ``batch_size``, ``curvature``, ``sample_std``, ``clip_norm``, ``noise_multiplier``, ``lr``,
    ``spread``; with ``spectrum`` also ``spectrum``, ``power``, ``split``, ``low_curvature`` (each is
    checked whatever the spectrum, so a nonsense value is never silently ignored); with ``heldout``
    ``heldout_flat_curvature``.
    """
    d = check_int("d", config.d, minimum=1)
    rank = check_int("rank", config.rank, minimum=1)
    if rank > d:
        raise ValueError(f"rank must be <= d, got rank={rank} > d={d}")
    check_int("steps", config.steps, minimum=1)
    check_int("replicas", config.replicas, minimum=2)
    check_int("seed", config.seed, minimum=0, maximum=2**63 - 1)
    check_int("batch_size", config.batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
    if hasattr(config, "threads"):
        check_threads("threads", config.threads)
    for name in ("curvature", "sample_std", "clip_norm", "lr"):
        check_scale(name, getattr(config, name))
    check_nonnegative("noise_multiplier", config.noise_multiplier, maximum=MAX_NOISE_MULTIPLIER)
    if 0 < config.noise_multiplier < 1e-30:
        raise ValueError(f"noise_multiplier must be 0 or >= 1e-30, got {config.noise_multiplier!r}")
    if hasattr(config, "spread"):
        check_choice("spread", config.spread, ("ambient", "basin"))
    if spectrum:
        from simulations.basin.streaming import SPECTRA

        check_choice("spectrum", config.spectrum, SPECTRA)
        check_nonnegative("power", config.power, maximum=MAX_POWER)
        check_probability("split", config.split, open_left=True)
        low = check_scale("low_curvature", config.low_curvature)
        if low > config.curvature:
            raise ValueError(
                f"low_curvature must be <= curvature (λ_max = {config.curvature!r}), got {config.low_curvature!r}"
            )
    if heldout:
        check_scale("heldout_flat_curvature", config.heldout_flat_curvature, zero=True)
