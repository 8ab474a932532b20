"""Linear response of the clipped mean at μ = 0 (backs ``clipping.linear_response_shrinkage``).

E[clip_C(μ + ζ')] = α₀ μ + O(‖μ‖³), ζ' = s ζ ~ N(0, s² I_d), with α₀ = E[J(ζ')] / I the averaged
Jacobian of x ↦ clip_C(x):  J = I for ‖x‖ < C, J = (C/‖x‖)(I − x̂x̂ᵀ) for ‖x‖ > C. By isotropy
E[x̂x̂ᵀ | ‖x‖] = I/d, so

    α₀ = E[φ(R)(1 − 1{R>C}/d)] = F_d(c²) + (1 − 1/d) c r(d) S_{d−1}(c²),
    r(k) = Γ((k−1)/2)/(√2 Γ(k/2)),  R = ‖ζ'‖,  c = C/s.

It equals γ(m = 0) = F_{d+2}(c²) + c r(d+2) S_{d+1}(c²). Verified:
1. the Jacobian of clip in d = 3 (explicit coordinates) and its trace (d − 1) C/‖x‖;
2. trace(J)/d equals φ(R)(1 − 1{R>C}/d) on both branches (symbolic d);
3. chi-square recurrences F_{k+2} = F_k − 2 f_{k+2}, S_{k+2} = S_k + 2 f_{k+2} (by differentiation,
   both sides vanishing at 0);
4. (1 − 1/d) r(d) = r(d+2) and 2 f_{d+2}(c²) = 2 c r(d+2) f_{d+1}(c²), hence α₀ − γ(0) = 0 for d ≥ 2;
5. d = 1: α₀ = F_1(c²) and γ(0) = F_3(c²) + c r(3) S_2(c²) agree (erf / exp closed forms).
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "alpha0 = E[phi(R)(1 - 1{R>C}/d)] = F_d(c^2) + (1-1/d) c r(d) S_(d-1)(c^2) = gamma(m=0)  "
    "[clipping.linear_response_shrinkage]"
)


def _zero(expr, what: str) -> None:
    r = sp.simplify(sp.gammasimp(sp.powsimp(expr, force=True)))
    assert r == 0, f"{what}: residual {r}"


def _ratio_one(num, den, what: str) -> None:
    r = sp.simplify(sp.gammasimp(sp.powsimp(num / den, force=True)))
    assert r == 1, f"{what}: ratio {r}"


def f(k, v):
    """Central chi-square density."""
    return v ** (k / 2 - 1) * sp.exp(-v / 2) / (2 ** (k / 2) * sp.gamma(k / 2))


def r(k):
    return sp.gamma((k - 1) / 2) / (sp.sqrt(2) * sp.gamma(k / 2))


def verify() -> None:
    # 1. Jacobian of clip beyond the threshold, d = 3
    xs = sp.symbols("x1:4", real=True)
    C = sp.symbols("C", positive=True)
    x = sp.Matrix(xs)
    nrm = sp.sqrt(sum(xi**2 for xi in xs))
    J = (C * x / nrm).jacobian(x)
    expected = (C / nrm) * (sp.eye(3) - x * x.T / nrm**2)
    assert sp.simplify(J - expected) == sp.zeros(3, 3), "Jacobian of C x/‖x‖"
    _zero(J.trace() - 2 * C / nrm, "trace J = (d-1) C/‖x‖ for d = 3")

    # 2. trace(J)/d = φ(R)(1 − 1{R>C}/d) on each branch
    d, R = sp.symbols("d R", positive=True)
    _zero(d / d - 1 * (1 - 0 / d), "inside branch")
    _zero((C / R) * (d - 1) / d - (C / R) * (1 - 1 / d), "outside branch")

    # 3. recurrences via derivatives (F_k − F_{k+2} and 2 f_{k+2} both vanish at v = 0 for k > 0)
    v, k = sp.symbols("v k", positive=True)
    _zero(sp.diff(2 * f(k + 2, v), v) - (f(k, v) - f(k + 2, v)), "d/dv 2f_{k+2} = f_k − f_{k+2}")
    assert sp.limit(2 * f(k + 2, v), v, 0) == 0, "2 f_{k+2}(0) = 0"

    # 4. α₀ − γ(0) = 0 with F_{d+2} = F_d − 2f_{d+2}, S_{d+1} = S_{d−1} + 2f_{d+1}
    c = sp.symbols("c", positive=True)
    Fd, Sdm1 = sp.symbols("F_d S_dm1")
    _ratio_one((1 - 1 / d) * r(d), r(d + 2), "(1 − 1/d) r(d) = r(d+2)")
    _ratio_one(2 * f(d + 2, c**2), 2 * c * r(d + 2) * f(d + 1, c**2), "2 f_{d+2}(c²) = 2c r(d+2) f_{d+1}(c²)")
    # assemble with the two ratios just proved: r(d+2) = (1 − 1/d) r(d), 2c r(d+2) f_{d+1} = 2 f_{d+2}
    rd, f2 = sp.symbols("r_d f_dp2")
    alpha0 = Fd + (1 - 1 / d) * c * rd * Sdm1
    gamma0 = (Fd - f2) + c * (1 - 1 / d) * rd * Sdm1 + f2
    _zero(alpha0 - gamma0, "α₀ = γ(0), d ≥ 2")

    # 5. d = 1 with explicit CDFs: F_1(x) = erf(√(x/2)), F_3(x) = erf(√(x/2)) − √(2x/π) e^{−x/2},
    #    S_2(x) = e^{−x/2}; checked against the lower incomplete gamma definition first.
    F = lambda kk, t: sp.lowergamma(sp.Rational(kk, 2), t / 2) / sp.gamma(sp.Rational(kk, 2))  # noqa: E731
    _zero(sp.expand_func(F(1, c**2)) - sp.erf(c / sp.sqrt(2)), "F_1")
    _zero(sp.expand_func(F(3, c**2)) - (sp.erf(c / sp.sqrt(2)) - sp.sqrt(2 / sp.pi) * c * sp.exp(-(c**2) / 2)), "F_3")
    gamma0_d1 = sp.expand_func(F(3, c**2)) + c * r(sp.Integer(3)) * sp.exp(-(c**2) / 2)
    _zero(gamma0_d1 - sp.erf(c / sp.sqrt(2)), "d = 1: γ(0) = F_1(c²) = α₀")


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def linear_response_closed_form(*, d, s, C):
    """α₀ = F_d(c²) + (1 − 1/d) c r(d) S_{d−1}(c²), r(k) = Γ((k−1)/2)/(√2 Γ(k/2)), c = C/s (mpmath, 30 digits);
    d = 1: α₀ = F_1(c²)."""
    import mpmath as mp

    with mp.workdps(30):
        c = mp.mpf(C) / mp.mpf(s)
        f = mp.gammainc(mp.mpf(d) / 2, 0, c * c / 2, regularized=True)
        if d == 1:
            return float(f)
        r = mp.gamma(mp.mpf(d - 1) / 2) / (mp.sqrt(2) * mp.gamma(mp.mpf(d) / 2))
        surv = mp.gammainc(mp.mpf(d - 1) / 2, c * c / 2, mp.inf, regularized=True)
        return float(f + (1 - mp.mpf(1) / d) * c * r * surv)


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping.linear_response_shrinkage",
        closed_form=linear_response_closed_form,
        symbols={"d": (1, 2000), "s": (0.05, 2.0), "C": (0.01, 50.0)},
        integer=frozenset({"d"}),
        arguments=lambda d, s, C: {"dim": d, "std": s, "clip_norm": C},
        rtol=1e-11,
        note="double precision in the code (scipy's regularised gammas) vs 30-digit mpmath here",
    )
]
