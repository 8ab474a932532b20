"""Stationary loss of noisy GD on a quadratic and its equipartition form (backs
``dptheory.quadratic.stationary_loss``).

For |ρ| < 1 (0 < ηa < 2) the variance ρ^{2t} m0 + η²τ²(1 − ρ^{2t})/(1 − ρ²) tends to
v = ητ²/(a(2 − ηa)), the unique fixed point of m ↦ ρ²m + η²τ². The loss direction i contributes
½ λ_i v_i; with a_i = λ_i this is ητ²/(2(2 − ηλ_i)) — independent of λ_i at first order — so

    Σ_i ½ λ_i v_i = (ητ²/2) Σ_i 1/(2 − ηλ_i) ≈ ητ² r/4   (equipartition: r, not d or λ).

The approximation errs low: exact − approx = ητ² · ηλ/(4(2 − ηλ)) ≥ 0 per direction, and the
first-order Taylor coefficient in η matches.
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "lim E e^2 = eta tau^2/(a(2 - eta a)); with a = lambda: (1/2) lambda v = eta tau^2/(2(2 - eta lambda)) "
    ">= eta tau^2/4  [quadratic.stationary_loss]"
)


def verify() -> None:
    t = sp.symbols("t", integer=True, nonnegative=True)
    eta, a, lam, tau, m0, gam = sp.symbols("eta a lambda tau m0 gamma", positive=True)
    x = sp.symbols("x", positive=True)  # x = η a
    rho = 1 - eta * a
    v = eta * tau**2 / (a * (2 - eta * a))

    assert sp.simplify(v - STATIONARY_SECOND_MOMENT) == 0, "exported closed form"
    # the stationary value is the fixed point of the recursion …
    assert sp.simplify(rho**2 * v + eta**2 * tau**2 - v) == 0, "v is not the fixed point"
    # … and the limit of the closed form: the transient is (m0 − v) ρ^{2t}, which → 0 for |ρ| < 1
    closed = rho ** (2 * t) * m0 + eta * tau**2 * (1 - rho ** (2 * t)) / (a * (2 - eta * a))
    assert sp.simplify(closed - (v + (m0 - v) * rho ** (2 * t))) == 0, "closed form = v + transient"
    y = sp.symbols("y", positive=True)  # any 0 < ρ² < 1 is 1/(1 + y) with y > 0
    tc = sp.symbols("t_c", positive=True)
    assert sp.limit((1 + y) ** (-tc), tc, sp.oo) == 0, "rho^(2t) -> 0 for rho^2 < 1"
    # |ρ| < 1 exactly when 0 < ηa < 2
    sols = sp.solve_univariate_inequality((1 - x) ** 2 < 1, x, relational=False)
    assert sols == sp.Interval.open(0, 2), f"stability interval {sols}"

    # loss contribution with a = λ (unclipped) is ητ²/(2(2 − ηλ)): the λ cancels
    contrib = sp.Rational(1, 2) * lam * v.subs(a, lam)
    assert sp.simplify(contrib - eta * tau**2 / (2 * (2 - eta * lam))) == 0, "equipartition"
    # small-ηλ form ητ²/4: the first-order Taylor term in η, and the error is ≥ 0 (approx errs low)
    series = sp.series(contrib, eta, 0, 3).removeO()
    assert sp.simplify(series.coeff(eta, 1) - tau**2 / 4) == 0, "first-order term"
    err = sp.simplify(contrib - eta * tau**2 / 4)
    assert sp.simplify(err - eta * tau**2 * eta * lam / (4 * (2 - eta * lam))) == 0, "approximation error"
    # general drift a = γλ (clipping): ½ λ v = ητ²/(2γ(2 − ηγλ)), so the approx ητ²/(4γ) also errs low
    gen = sp.Rational(1, 2) * lam * v.subs(a, gam * lam)
    assert sp.simplify(gen - eta * tau**2 / (2 * gam * (2 - eta * gam * lam))) == 0, "clipped-drift form"
    assert sp.simplify(gen / (eta * tau**2 / (4 * gam)) - 2 / (2 - eta * gam * lam)) == 0, "exact/approx ratio"


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)

_eta, _a, _tau, _lam = sp.symbols("eta a tau lambda", positive=True)
STATIONARY_SECOND_MOMENT = _eta * _tau**2 / (_a * (2 - _eta * _a))  # v = ητ²/(a(2 − ηa))
stationary_second_moment = sp.lambdify((_eta, _a, _tau), STATIONARY_SECOND_MOMENT, "math")


def stationary_loss_two_directions(*, eta, a1, a2, tau1, tau2, lam1, lam2):
    """½ Σ_i λ_i v_i over two curved directions with drifts a_i, noise τ_i and loss curvatures λ_i."""
    return 0.5 * (lam1 * stationary_second_moment(eta, a1, tau1) + lam2 * stationary_second_moment(eta, a2, tau2))


def _dynamics(eta, a1, a2, tau1, tau2):
    from dptheory.records import LinearDynamics

    return LinearDynamics(lr=eta, drift=(a1, a2), noise_var=(tau1**2, tau2**2))


CODE_LINKS = [
    CodeLink(
        function="dptheory.quadratic.stationary_loss",
        closed_form=stationary_loss_two_directions,
        symbols={
            "eta": (1e-3, 1.0),
            "a1": (0.01, 1.9),
            "a2": (0.01, 1.9),
            "tau1": (0.0, 3.0),
            "tau2": (0.0, 3.0),
            "lam1": (0.0, 2.0),
            "lam2": (0.0, 2.0),
        },
        valid=lambda eta, a1, a2, **_: eta * max(a1, a2) < 1.99,
        arguments=lambda eta, a1, a2, tau1, tau2, lam1, lam2: {
            "dynamics": _dynamics(eta, a1, a2, tau1, tau2),
            "curvatures": (lam1, lam2),
        },
    ),
    CodeLink(
        function="dptheory.quadratic.stationary_second_moments",
        closed_form=lambda eta, a, tau: stationary_second_moment(eta, a, tau),
        symbols={"eta": (1e-3, 1.0), "a": (0.01, 1.9), "tau": (0.01, 3.0)},
        valid=lambda eta, a, tau: eta * a < 1.99,
        arguments=lambda eta, a, tau: {"dynamics": _dynamics(eta, a, a, tau, tau)},
        output=lambda v: float(v[0]),
    ),
]
