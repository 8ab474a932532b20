"""Exact moments of the noisy linear recursion (backs ``dptheory.quadratic.noise_only_dynamics``,
``error_moments``, ``flat_error_sq`` and ``recovery_time``).

Per direction, e(t+1) = ρ e(t) + η τ ξ(t), ρ = 1 − η a, ξ(t) ~ N(0, 1) independent of e(t). Then
E e(t+1) = ρ E e(t) and E e(t+1)² = ρ² E e(t)² + η² τ² (the cross term has mean 0). We

1. derive the update-noise variance of one unclipped step with a fixed batch of B samples:
   Var[(1/B)(s Σ_j ζ_j + ν ξ)] = s²/B + ν²/B² (expectation over independent N(0, 1) variables,
   moments from sympy.stats, B = 1 … 6; and the general-B sum of independent variances);
2. solve both recurrences with ``rsolve`` and check the closed forms
   E e(t) = ρ^t e0,  E e(t)² = ρ^{2t} m0 + η²τ² (1 − ρ^{2t})/(1 − ρ²)
   = ρ^{2t} m0 + ητ²(1 − ρ^{2t})/(a(2 − ηa)), which satisfy the recursion and the initial value;
3. take a → 0: the random walk m0 + η²τ² t (flat directions, times d − r for the squared norm);
4. recovery: from the stationary variance v plus a displacement δ, E e(t)² = v + ρ^{2t} δ².
"""

from __future__ import annotations

import sympy as sp
from sympy import stats

STATEMENT = (
    "E e(t)^2 = rho^(2t) m0 + eta tau^2 (1 - rho^(2t)) / (a (2 - eta a)), rho = 1 - eta a; "
    "tau^2 = s^2/B + nu^2/B^2  [quadratic.error_moments, noise_only_dynamics]"
)


def _check_zero(expr, what: str) -> None:
    assert sp.simplify(expr) == 0, f"{what}: residual {sp.simplify(expr)}"


def verify() -> None:
    t = sp.symbols("t", integer=True, nonnegative=True)
    eta, a, tau, m0, e0, s, nu = sp.symbols("eta a tau m0 e0 s nu", positive=True)
    rho = sp.symbols("rho", real=True)
    m = sp.Function("m")

    # 1. update-noise variance of one unclipped step, fixed batch of B samples
    normal = stats.Normal("X", 0, 1)
    moment = {p: stats.E(normal**p) for p in range(3)}  # 1, 0, 1

    def expect(expr, xs):  # E of a polynomial in independent N(0, 1) variables xs
        total = sp.Integer(0)
        for powers, coeff in sp.Poly(sp.expand(expr), *xs).terms():
            total += coeff * sp.Mul(*(moment[p] for p in powers))
        return total

    for b in range(1, 7):
        xs = sp.symbols(f"z0:{b + 1}")  # ζ_1 … ζ_B and ξ
        noise = (s * sum(xs[:b]) + nu * xs[b]) / b
        var = expect(noise**2, xs) - expect(noise, xs) ** 2
        _check_zero(var - (s**2 / b + nu**2 / b**2), f"noise variance, B={b}")
    bsym = sp.symbols("B", positive=True, integer=True)
    j = sp.symbols("j", integer=True)
    var_sum = sp.Sum((s / bsym) ** 2, (j, 1, bsym)).doit() + (nu / bsym) ** 2  # independent terms add
    _check_zero(var_sum - (s**2 / bsym + nu**2 / bsym**2), "noise variance, symbolic B")

    # 2a. mean recursion
    mean = sp.rsolve(m(t + 1) - rho * m(t), m(t), {m(0): e0})
    _check_zero(mean - rho**t * e0, "mean closed form")

    # 2b. second-moment recursion, solved by rsolve, against the closed form
    sol = sp.rsolve(m(t + 1) - rho**2 * m(t) - eta**2 * tau**2, m(t), {m(0): m0})
    closed = rho ** (2 * t) * m0 + eta**2 * tau**2 * (1 - rho ** (2 * t)) / (1 - rho**2)
    _check_zero(sol - closed, "rsolve vs closed form")
    _check_zero(closed.subs(t, t + 1) - rho**2 * closed - eta**2 * tau**2, "closed form obeys recursion")
    _check_zero(closed.subs(t, 0) - m0, "closed form initial value")
    # the form used in dptheory (1 − ρ² = ηa(2 − ηa))
    q = 1 - eta * a
    code_form = q ** (2 * t) * m0 + eta * tau**2 * (1 - q ** (2 * t)) / (a * (2 - eta * a))
    _check_zero(closed.subs(rho, q) - code_form, "closed form in terms of a")
    _check_zero(1 - q**2 - eta * a * (2 - eta * a), "u = 1 - rho^2 = eta a (2 - eta a)")

    # 3. random walk limit a → 0 (flat directions); the squared norm over d − r of them adds up
    _check_zero(sp.limit(code_form, a, 0) - (m0 + eta**2 * tau**2 * t), "random walk limit")

    # 4. recovery: stationary variance v plus displacement δ decays back as v + ρ^{2t} δ²
    delta = sp.symbols("delta", real=True)
    v = eta**2 * tau**2 / (1 - rho**2)
    after = closed.subs(m0, v + delta**2)
    _check_zero(after - (v + rho ** (2 * t) * delta**2), "recovery excess")
