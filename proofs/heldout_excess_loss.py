"""Held-out loss with the curved directions at stationarity (backs dptheory.clipped_dynamics.heldout_excess_loss).

The held-out loss adds curvature κ on the training-flat directions, L_test(e) = L(e) + ½ κ ‖e_flat‖²
(records.py), so E L_test(t) = ½ Σ_i λ_i E e_i² + ½ (λ_flat + κ) E‖e_flat(t)‖². The d − r flat
coordinates share drift a_f = γλ_flat (or the plain mean clip factor × λ_flat under basin spread) and
noise q_f, so their summed second moment obeys F(t+1) = R F(t) + (d − r) η² q_f, R = (1 − ηa_f)² +
η²κ_P a_f², solved by

    F(t) = R^t F(0) + (d − r) η² q_f (1 − R^t)/(1 − R)    (λ_flat = 0, R = 1: F(0) + (d − r) η² q_f t).

With the curved coordinates at stationarity (v_i∞ = η q/(a_i(2 − η a_i(1 + κ_P)))) the held-out loss is

    E L_test(t) = ½ Σ_i λ_i v_i∞ + ½ (λ_flat + κ) F(t).

Checked here symbolically: the decomposition, the flat recursion's solution and its R → 1 limit.
"""

from __future__ import annotations

import sympy as sp

from dptheory.records import Basin, Optimizer
from proofs.links import CodeLink

STATEMENT = (
    "E L_test(t) = ½Σλ_i v_i∞ + ½(λ_flat + κ)F(t), F(t) = R^t F(0) + (d−r)η²q_f(1−R^t)/(1−R) "
    "(R = 1: F(0) + (d−r)η²q_f t)  [clipped_dynamics.heldout_excess_loss]"
)


def heldout_unclipped(
    t: int, eta: float, lam: float, s: float, B: int, nu: float, kappa: float, f0: float, d: int, lam_f: float
) -> float:
    """E L_test(t) of an unclipped fixed-batch step, ambient spread, one curved direction, flat curvature λ_f."""
    q = s * s / B + nu * nu / B**2
    curved = 0.5 * lam * eta * q / (lam * (2.0 - eta * lam))
    r = (1.0 - eta * lam_f) ** 2
    if lam_f == 0.0:
        flat = f0 + (d - 1) * eta * eta * q * t
    else:
        rt = r**t
        flat = rt * f0 + (d - 1) * eta * eta * q * (1.0 - rt) / (1.0 - r)
    return curved + 0.5 * (lam_f + kappa) * flat


def first(result) -> float:
    """The held-out loss at the (single) requested step."""
    return float(result[0])


def _args(t, eta, lam, s, B, nu, kappa, f0, d, lam_f=0.0):
    return {
        "basin": Basin(dim=d, curvatures=(lam,), sample_std=s, flat_curvature=lam_f, heldout_flat_curvature=kappa),
        "optimizer": Optimizer(lr=eta, batch_size=B, clip_norm=1.0, noise_multiplier=nu, mode="noise"),
        "steps": [t],
        "init_flat_sq": f0,
    }


_SYMBOLS = {
    "t": (0, 10_000),
    "eta": (0.01, 1.0),
    "lam": (0.05, 1.5),
    "s": (0.0, 3.0),
    "B": (1, 256),
    "nu": (0.0, 5.0),
    "kappa": (0.0, 3.0),
    "f0": (0.0, 10.0),
    "d": (2, 5000),
}

CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_dynamics.heldout_excess_loss",
        closed_form=lambda **v: heldout_unclipped(**v, lam_f=0.0),
        symbols=_SYMBOLS,
        integer=frozenset({"t", "B", "d"}),
        arguments=_args,
        output=first,
        note="unclipped, λ_flat = 0: the flat random walk",
    ),
    CodeLink(
        function="dptheory.clipped_dynamics.heldout_excess_loss",
        closed_form=heldout_unclipped,
        symbols={**_SYMBOLS, "t": (0, 300), "lam_f": (0.01, 1.0)},
        integer=frozenset({"t", "B", "d"}),
        arguments=_args,
        output=first,
        rtol=1e-11,
        note="unclipped, λ_flat > 0: the flat coordinates relax (R^t)",
    ),
]


def verify() -> None:
    # decomposition: L_test = ½Σλ e_c² + ½λ_f‖e_f‖² + ½κ‖e_f‖², expectations term by term
    lam, lam_f, kap, ec2, ef2 = sp.symbols("lambda lambda_f kappa E_c E_f", positive=True)
    l_test = sp.Rational(1, 2) * lam * ec2 + sp.Rational(1, 2) * lam_f * ef2 + sp.Rational(1, 2) * kap * ef2
    assert sp.simplify(l_test - (sp.Rational(1, 2) * lam * ec2 + sp.Rational(1, 2) * (lam_f + kap) * ef2)) == 0
    # flat recursion F(t+1) = R F(t) + m η² q_f and its solution
    big_r, f0, m, eta, qf, t = sp.symbols("R F0 m eta q_f t", positive=True)
    sol = big_r**t * f0 + m * eta**2 * qf * (1 - big_r**t) / (1 - big_r)
    assert sp.simplify(sol.subs(t, t + 1) - (big_r * sol + m * eta**2 * qf)) == 0
    assert sp.simplify(sol.subs(t, 0) - f0) == 0
    assert sp.limit(sol, big_r, 1) == f0 + m * eta**2 * qf * t
    # R for the flat drift a_f and Poisson κ_P: (1 − ηa_f)² + η²κ_P a_f², = 1 at a_f = 0
    a_f, kp = sp.symbols("a_f kappa_P", nonnegative=True)
    r_expr = (1 - eta * a_f) ** 2 + eta**2 * kp * a_f**2
    assert r_expr.subs(a_f, 0) == 1
    # the curved stationary term: ½ λ η q/(λ(2 − ηλ)) = η q/(2(2 − ηλ))
    q = sp.symbols("q", positive=True)
    assert (
        sp.simplify(sp.Rational(1, 2) * lam * eta * q / (lam * (2 - eta * lam)) - eta * q / (2 * (2 - eta * lam))) == 0
    )
