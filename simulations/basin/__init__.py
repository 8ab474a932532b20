"""Synthetic basins for the Monte Carlo engines, by name.

=================  ===========================================================================
name                what ``make_basin(name, **kwargs)`` returns
=================  ===========================================================================
``streaming``       ``dptheory.records.Basin`` — low-rank quadratic, fresh per-sample noise
                    (``simulations.basin.streaming.streaming_basin``; run it with
                    ``simulations.basin.engine.simulate``)
``least_squares``   ``LeastSquaresData`` — finite-sum least squares with low-rank data
                    (``simulations.basin.least_squares.make_data``; run it with
                    ``simulate_least_squares``)
=================  ===========================================================================

Pruning masks and rotated bases are pure functions of the theory layer (``dptheory.pruning``).

Example:
    >>> b = make_basin("streaming", dim=1000, rank=10, sample_std=1.0, spectrum="power")
    >>> b.rank
    10
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulations.basin import least_squares, streaming

__all__ = ["BASINS", "least_squares", "make_basin", "streaming"]


def _least_squares(**kwargs: Any) -> least_squares.LeastSquaresData:
    return least_squares.make_data(least_squares.LeastSquaresProblem(**kwargs))


BASINS: dict[str, Callable[..., Any]] = {
    "streaming": streaming.streaming_basin,
    "least_squares": _least_squares,
}


def make_basin(name: str, **kwargs: Any) -> Any:
    """Build the basin registered under ``name`` from keyword arguments (table above)."""
    if name not in BASINS:
        raise ValueError(f"basin must be one of {', '.join(sorted(BASINS))}, got {name!r}")
    return BASINS[name](**kwargs)
