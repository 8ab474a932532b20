"""Irreducible clipping bias of order min(σ, σ²/C) (backs ``clipping_bias.stochastic_bias_example``).

f(x) = x²/2, stochastic gradient x + ξ, ξ = +A w.p. p, −B w.p. 1 − p with A = σ√((1−p)/p),
B = σ√(p/(1−p)). Clipped SGD with small steps settles at the root x* of
h(x) = p clamp_C(x + A) + (1 − p) clamp_C(x − B). Verified:
1. E ξ = 0, E ξ² = σ²;
2. C < σ, p = 1/4: x* = σ/√3 − C/3 solves ¼C + ¾(x − σ/√3) = 0 (large atom clamped, small not);
3. C ≥ σ, p = σ²/(4C²): x* = (σ√(p(1−p)) − pC)/(1−p) = (σ²/4C)·g(p), g(p) = (2√(1−p) − 1)/(1 − p),
   g'(p) = (√(1−p) − 1)/(1−p)² < 0, g(1/4)·(1/4) = (√3 − 1)/3, g(p) = 1 − p²/4 + O(p³);
4. the two branches agree at C = σ; lower bound (√3 − 1)/3 · min(σ, σ²/C);
5. upper bound for any mean-zero noise: (u − C)₊ ≤ u²/(4C) because u² − 4C(u − C) = (u − 2C)².
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "two-point noise on x^2/2: fixed point |x*| >= (sqrt3-1)/3 min(sigma, sigma^2/C), and |x*| <= (x*^2+sigma^2)/(4C) "
    "for any noise  [clipping_bias.stochastic_bias_example]"
)


def _zero(expr, what: str) -> None:
    r = sp.simplify(expr)
    assert r == 0, f"{what}: residual {r}"


def verify() -> None:
    s, C, p, x, u = sp.symbols("sigma C p x u", positive=True)
    A = s * sp.sqrt((1 - p) / p)
    B = s * sp.sqrt(p / (1 - p))
    # 1. moments (p < 1)
    _zero((p * A - (1 - p) * B).subs(p, sp.Rational(1, 3)), "mean zero at p = 1/3")
    q = sp.symbols("q", positive=True)  # q = √(p/(1−p)) parametrisation makes it symbolic
    Aq, Bq, pq = s / q, s * q, q**2 / (1 + q**2)
    _zero(pq * Aq - (1 - pq) * Bq, "E ξ = 0")
    _zero(pq * Aq**2 + (1 - pq) * Bq**2 - s**2, "E ξ² = σ²")
    _zero(pq / (1 - pq) - q**2, "q² = p/(1 − p)")

    # 2. C < σ, p = 1/4
    quarter = sp.Rational(1, 4)
    sol = sp.solve(sp.Eq(quarter * C + (1 - quarter) * (x - B.subs(p, quarter)), 0), x)[0]
    _zero(sol - (s / sp.sqrt(3) - C / 3), "x* = σ/√3 − C/3")

    # 3. C ≥ σ branch
    xs = (s * sp.sqrt(p * (1 - p)) - p * C) / (1 - p)
    # root of the linear piece, for all p via p = q²/(1+q²): √(p(1−p)) = q/(1+q²), B = σq
    xq = (s * q / (1 + q**2) - pq * C) / (1 - pq)
    _zero(pq * C + (1 - pq) * (xq - Bq), "p C + (1−p)(x* − B) = 0")
    _zero((p * C + (1 - p) * (xs - B)).subs(p, sp.Rational(1, 9)), "same, directly at p = 1/9")
    g = (2 * sp.sqrt(1 - p) - 1) / (1 - p)
    _zero(xs.subs(C, s / (2 * sp.sqrt(p))) - s**2 / (4 * s / (2 * sp.sqrt(p))) * g, "x* = σ²/(4C) g(p)")
    _zero(sp.diff(g, p) - (sp.sqrt(1 - p) - 1) / (1 - p) ** 2, "g'(p)")
    _zero(g.subs(p, quarter) / 4 - (sp.sqrt(3) - 1) / 3, "g(1/4)/4 = (√3 − 1)/3")
    ser = sp.series(g, p, 0, 3).removeO()
    _zero(ser - (1 - p**2 / 4), "g = 1 − p²/4 + O(p³)")

    # 4. branches meet at C = σ
    _zero((s / sp.sqrt(3) - C / 3).subs(C, s) - (sp.sqrt(3) - 1) / 3 * s, "C = σ, small-C branch")

    # 5. (u − C)₊ ≤ u²/(4C)
    _zero(u**2 - 4 * C * (u - C) - (u - 2 * C) ** 2, "u² − 4C(u − C) = (u − 2C)²")


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)


def fixed_point_closed_form(*, sigma, C):
    """|x*| of the two-point example: σ/√3 − C/3 for C < σ (p = ¼); (σ√(p(1−p)) − pC)/(1−p), p = σ²/(4C²), for C ≥ σ."""
    if sigma > C:
        return sigma / 3**0.5 - C / 3
    p = sigma**2 / (4 * C**2)
    return (sigma * (p * (1 - p)) ** 0.5 - p * C) / (1 - p)


def lower_bound_closed_form(*, sigma, C):
    """(√3 − 1)/3 · min(σ, σ²/C)."""
    return (3**0.5 - 1) / 3 * min(sigma, sigma**2 / C)


_BIAS_SYMBOLS = {"sigma": (0.01, 10.0), "C": (0.01, 10.0)}
CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping_bias.stochastic_bias_example",
        closed_form=fixed_point_closed_form,
        symbols=_BIAS_SYMBOLS,
        arguments=lambda sigma, C: {"sample_std": sigma, "clip_norm": C},
        output=lambda e: e.bias,
        rtol=1e-12,
        atol=1e-14,
    ),
    CodeLink(
        function="dptheory.clipping_bias.stochastic_bias_example",
        closed_form=lower_bound_closed_form,
        symbols=_BIAS_SYMBOLS,
        arguments=lambda sigma, C: {"sample_std": sigma, "clip_norm": C},
        output=lambda e: e.lower_bound,
    ),
]
