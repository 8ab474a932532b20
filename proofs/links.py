"""Proof ↔ code links: each proof's closed form, wired to the ``dptheory`` function that implements it.

A proof module verifies a closed form symbolically (``verify()``) and exports it as a plain function
of the proof's symbols, together with one :class:`CodeLink` per ``dptheory`` function that computes
the same quantity. ``tests/test_proof_code_links.py`` draws the symbols at random inside the stated
bounds and asserts that the closed form and the function agree to the stated tolerance — so a formula
that changes in the code (or in the proof) fails in two places that point at each other.

A link states:

* ``function`` — the dotted name of the ``dptheory`` function (resolved at test time);
* ``closed_form(**symbols)`` — the proof's expression (``sympy.lambdify`` of the very expression
  ``verify()`` checks, wherever the result is symbolic);
* ``symbols`` — the proof symbols with the bounds they are drawn from (``integer`` lists the ones
  drawn as integers), and ``valid(**symbols)`` the region where the result holds;
* ``arguments(**symbols)`` — the symbol ↔ argument map: the keyword arguments of ``function``;
* ``output(result)`` — the number the function's result is compared on;
* ``rtol``/``atol`` — the agreement required (≈ 1e-12 for closed forms evaluated in floating point;
  looser only where the code evaluates a series or a quadrature, with the reason in ``note``).

Example:
    >>> import math
    >>> link = CodeLink(function="dptheory.quadratic.relaxation_time",
    ...                 closed_form=lambda eta, a: -1.0 / math.log(1.0 - eta * a),
    ...                 symbols={"eta": (0.01, 0.5), "a": (0.01, 1.0)},
    ...                 arguments=lambda eta, a: {"lr": eta, "drift": a})
    >>> resolve(link.function)(**link.arguments(eta=0.1, a=1.0)) == link.closed_form(eta=0.1, a=1.0)
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CodeLink", "resolve"]


def _always(**_: float) -> bool:
    return True


def _as_float(value: Any) -> float:
    return float(value)


@dataclass(frozen=True)
class CodeLink:
    """A proof's closed form and the ``dptheory`` function it backs (module docstring)."""

    function: str
    closed_form: Callable[..., float]
    symbols: Mapping[str, tuple[float, float]]
    arguments: Callable[..., Any]
    output: Callable[[Any], float] = _as_float
    valid: Callable[..., bool] = _always
    integer: frozenset[str] = field(default_factory=frozenset)
    rtol: float = 1e-12
    atol: float = 0.0
    note: str = ""


def resolve(dotted: str) -> Callable[..., Any]:
    """The object named by ``dotted`` (``package.module.attribute``)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
