"""The best keep count with clip noise is k* = B/σ², not r (backs ``dptheory.pruning.pruning_helps``).

Prune a rank-r basin to k kept coordinates with per-sample spread s on all of them (ambient spread)
and clip every per-sample gradient (C ≤ s√k, fully clipped). In the small-step closed form of the
clipped stationary loss (``clipped_dynamics.stationary_excess_loss(approx=True)``) each curved
direction contributes η q₀/(4γ₀) with

    γ₀ = C/(s√k)                       (the clip shrinkage of a norm-s√k gradient),
    q₀ = C²/(k B) + σ²C²/B²            (clipped per-coordinate variance + DP noise on the sum),

so the stationary loss is

    L(k) = r η C s (1/(√k B) + σ² √k / B²) / 4.

We verify symbolically that (1) η q₀/(4γ₀) summed over r directions is L(k); (2) dL/dk = 0 exactly
at k* = B/σ²; (3) d²L/dk² > 0 there, so k* is the minimum over k > 0, and L(k*) = r η C s σ/(2 B^{3/2});
(4) the two terms are equal at k*: pruning below k* kept weights raises the clip-noise term faster than
it lowers the DP-noise term, whatever the pruning bias.
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "fully clipped, k kept: L(k) = r eta C s (1/(sqrt(k) B) + sigma^2 sqrt(k)/B^2)/4, minimal at k* = B/sigma^2  "
    "[pruning.pruning_helps; clipped_dynamics.stationary_excess_loss(approx=True)]"
)

_r, _eta, _C, _s, _sigma, _B, _k = sp.symbols("r eta C s sigma B k", positive=True)
PRUNED_LOSS = _r * _eta * _C * _s * (1 / (sp.sqrt(_k) * _B) + _sigma**2 * sp.sqrt(_k) / _B**2) / 4
OPTIMAL_KEEP = _B / _sigma**2
pruned_loss = sp.lambdify((_r, _eta, _C, _s, _sigma, _B, _k), PRUNED_LOSS, "math")


def verify() -> None:
    gamma0 = _C / (_s * sp.sqrt(_k))
    q0 = _C**2 / (_k * _B) + _sigma**2 * _C**2 / _B**2
    assert sp.simplify(_r * _eta * q0 / (4 * gamma0) - PRUNED_LOSS) == 0, "L(k) from the per-direction form"
    dl = sp.diff(PRUNED_LOSS, _k)
    roots = sp.solve(sp.Eq(dl, 0), _k)
    assert len(roots) == 1 and sp.simplify(roots[0] - OPTIMAL_KEEP) == 0, f"stationary point {roots}"
    second = sp.simplify(sp.diff(PRUNED_LOSS, _k, 2).subs(_k, OPTIMAL_KEEP))
    assert second.is_positive, f"second derivative at k*: {second}"
    best = sp.simplify(PRUNED_LOSS.subs(_k, OPTIMAL_KEEP))
    assert sp.simplify(best - _r * _eta * _C * _s * _sigma / (2 * _B ** sp.Rational(3, 2))) == 0, "L(k*)"
    clip_term = 1 / (sp.sqrt(_k) * _B)
    dp_term = _sigma**2 * sp.sqrt(_k) / _B**2
    assert sp.simplify((clip_term - dp_term).subs(_k, OPTIMAL_KEEP)) == 0, "terms balance at k*"


def _basin_args(r, k, eta, C, s, sigma, B):
    from dptheory.records import Basin, Optimizer

    return {
        "basin": Basin(dim=k, curvatures=(1.0,) * r, sample_std=s),
        "optimizer": Optimizer(lr=eta, batch_size=B, clip_norm=C, noise_multiplier=sigma),
        "approx": True,
    }


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_dynamics.stationary_excess_loss",
        closed_form=lambda r, k, eta, C, s, sigma, B: pruned_loss(r, eta, C, s, sigma, B, k),
        symbols={
            "r": (1, 20),
            "k": (20, 10**6),
            "eta": (1e-3, 1.0),
            "C": (0.01, 1.0),
            "s": (0.1, 3.0),
            "sigma": (0.1, 10.0),
            "B": (1, 4096),
        },
        integer=frozenset({"r", "k", "B"}),
        valid=lambda r, k, C, s, **_: r <= k and k * s * s >= C * C,
        arguments=_basin_args,
    )
]
