"""Large-d approximation of the clipped mean shrinkage and its error at the kink (backs clipping.large_dim_shrinkage).

γ = E[min(1, c/√W)], W ~ χ'²_{d+2}(λ), c = C/s, is approximated by min(1, C/√(m² + d s²)): ‖g‖ replaced
by its root mean square. The error is worst at the kink C = s√d with m = 0, where the approximation
says "no clipping" (1) while half of the samples are clipped:

    approx/exact − 1 = 1/γ − 1,   1 − γ = E[(1 − c/√W)₊],   W ~ χ²_{d+2},  c² = d,

and with √W = √(d+2) + Z/√2 + O(1/√d) (Z ~ N(0, 1)), c/√W = 1 − Z/√(2d) + O(1/d), so

    1 − γ = E[Z₊]/√(2d) + O(1/d) = 1/(2√(π d)) + O(1/d),   E[Z₊] = 1/√(2π),

i.e. approx/exact − 1 = 1/(2√(πd)) + O(1/d) ≈ 0.28/√d (overestimates γ). Checked here: E[Z₊] and the
expansion of c/√W symbolically; and the exact γ(m = 0) at the kink in 30-digit arithmetic (the
series F_{χ²_{d+2}}(d) + √d Γ((d+1)/2)/(√2 Γ(d/2+1)) S_{χ²_{d+1}}(d)) for d = 10² … 10⁶, where
√d (approx/exact − 1) approaches 1/(2√π) with a remainder below 1/√d.
"""

from __future__ import annotations

import math

import mpmath as mp
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "large d: γ ≈ min(1, C/√(m² + d s²)); at the kink C = s√d, m = 0: approx/exact − 1 = 1/(2√(πd)) + O(1/d)  "
    "[clipping.large_dim_shrinkage]"
)


def large_dim_shrinkage(d: int, m: float, s: float, C: float) -> float:
    """min(1, C/√(m² + d s²))."""
    rms = math.sqrt(m * m + d * s * s)
    return 1.0 if rms <= C else C / rms


def kink_error(d: float) -> float:
    """The leading term 1/(2√(πd)) of approx/exact − 1 at the kink (asymptotic, not exact)."""
    return 1.0 / (2.0 * math.sqrt(math.pi * d))


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping.large_dim_shrinkage",
        closed_form=large_dim_shrinkage,
        symbols={"d": (1, 10**6), "m": (0.0, 100.0), "s": (0.0, 10.0), "C": (1e-3, 1e3)},
        integer=frozenset({"d"}),
        arguments=lambda d, m, s, C: {"dim": d, "mean_norm": m, "std": s, "clip_norm": C},
        rtol=1e-15,
        note="the exact expression; its kink error 1/(2√(πd)) is asymptotic and checked in verify()",
    ),
]


def _exact_kink_gamma(d: int) -> mp.mpf:
    """γ(m = 0) at C = s√d: F_{χ²_{d+2}}(d) + √d Γ((d+1)/2)/(√2 Γ(d/2 + 1)) S_{χ²_{d+1}}(d)."""
    k = mp.mpf(d) + 2
    cdf = mp.gammainc(k / 2, 0, mp.mpf(d) / 2, regularized=True)
    ratio = mp.exp(mp.loggamma((k - 1) / 2) - mp.loggamma(k / 2))
    tail = mp.sqrt(d) * ratio / mp.sqrt(2) * mp.gammainc((k - 1) / 2, mp.mpf(d) / 2, mp.inf, regularized=True)
    return cdf + tail


def verify() -> None:
    z = sp.symbols("z", real=True)
    pdf = sp.exp(-(z**2) / 2) / sp.sqrt(2 * sp.pi)
    assert sp.simplify(sp.integrate(z * pdf, (z, 0, sp.oo)) - 1 / sp.sqrt(2 * sp.pi)) == 0
    # √W = √(d+2) + Z/√2 + …: c/√W with c = √d, expanded in ε = 1/√d
    eps = sp.symbols("epsilon", positive=True)
    d_ = 1 / eps**2
    sqrt_w = sp.sqrt(d_ + 2) + z / sp.sqrt(2)
    series = sp.series(sp.sqrt(d_) / sqrt_w, eps, 0, 2).removeO()
    assert sp.simplify(series - (1 - z * eps / sp.sqrt(2))) == 0
    # E[(Z ε/√2)₊] = ε/(2√π) = 1/(2√(πd))
    assert sp.simplify(eps / sp.sqrt(2) / sp.sqrt(2 * sp.pi) - eps / (2 * sp.sqrt(sp.pi))) == 0
    with mp.workdps(30):
        for d in (10**2, 10**3, 10**4, 10**5, 10**6):
            err = 1 / _exact_kink_gamma(d) - 1  # the approximation is 1 at the kink
            scaled = float(err * mp.sqrt(d))
            assert abs(scaled - 1 / (2 * math.sqrt(math.pi))) < 1.0 / math.sqrt(d), (d, scaled)
            assert err > 0  # it overestimates γ
    assert math.isclose(kink_error(1e4), 1 / (2 * math.sqrt(math.pi) * 100), rel_tol=1e-15)
