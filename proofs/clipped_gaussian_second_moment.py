"""Second moment of a clipped Gaussian vector (backs ``clipping.clipped_gaussian_second_moment``).

‖clip_C(g)‖² = min(‖g‖², C²) and ‖g‖²/s² = W₀ ~ χ'²_d(λ), λ = m²/s², c = C/s, so

    E‖clip_C(g)‖² = s² ( E[W₀ 1{W₀ ≤ c²}] + c² S_{χ'²_d(λ)}(c²) )
                  = s² ( d F_{χ'²_{d+2}(λ)}(c²) + λ F_{χ'²_{d+4}(λ)}(c²) + c² S_{χ'²_d(λ)}(c²) ).

Steps verified: (1) v f_k(v) = k f_{k+2}(v) (central chi-square), so E[V 1{V ≤ t}] = k F_{k+2}(t);
(2) with Poisson(λ/2) weights P_j, 2j P_j = λ P_{j−1}; (3) hence on truncated sums
Σ_j P_j (d + 2j) F_{d+2+2j} = d Σ_j P_j F_{d+2+2j} + λ Σ_j P_j F_{d+4+2j}; (4) C → ∞ gives
s²(d + λ) = d s² + m²; (5) a 25-digit check of the decomposition against direct integration of the Bessel-form
density f(x) = ½ e^{−(x+λ)/2} (x/λ)^{d/4−1/2} I_{d/2−1}(√(λx)).
"""

from __future__ import annotations

import mpmath as mp
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "E||clip_C(g)||^2 = s^2[d F_(d+2,lam)(c^2) + lam F_(d+4,lam)(c^2) + c^2 S_(d,lam)(c^2)]  "
    "[clipping.clipped_gaussian_second_moment]"
)


def _zero(expr, what: str) -> None:
    r = sp.simplify(sp.gammasimp(expr))
    assert r == 0, f"{what}: residual {r}"


def chi2_pdf(k, v):
    return v ** (k / 2 - 1) * sp.exp(-v / 2) / (2 ** (k / 2) * sp.gamma(k / 2))


def verify() -> None:
    v, lam, d, s = sp.symbols("v lambda d s", positive=True)
    k = sp.symbols("k", positive=True)
    j = sp.symbols("j", integer=True, positive=True)

    # 1. v f_k(v) = k f_{k+2}(v)
    _zero(sp.powsimp(v * chi2_pdf(k, v) - k * chi2_pdf(k + 2, v), force=True), "v f_k = k f_{k+2}")

    # 2. 2 j P_j(λ/2) = λ P_{j-1}(λ/2)
    def P(i):
        return sp.exp(-lam / 2) * (lam / 2) ** i / sp.gamma(i + 1)

    _zero(2 * j * P(j) - lam * P(j - 1), "2j P_j = λ P_{j-1}")

    # 3. re-indexing on a truncated sum with generic CDF values F_i := F_{d+2+2i}
    n = 8
    F = sp.symbols(f"F0:{n + 2}")
    lhs = sum(P(i) * (d + 2 * i) * F[i] for i in range(n + 1))
    rhs = d * sum(P(i) * F[i] for i in range(n + 1)) + lam * sum(P(i) * F[i + 1] for i in range(n))
    _zero(sp.expand(lhs - rhs), "Σ P_j (d+2j) F_{d+2+2j} = d Σ P_j F_{d+2+2j} + λ Σ P_j F_{d+4+2j}")

    # 4. C → ∞: all CDFs → 1, survival → 0 (c² S(c²) → 0 since E W₀ < ∞)
    m = sp.symbols("m", positive=True)
    _zero(s**2 * (d + (m / s) ** 2) - (d * s**2 + m**2), "C → ∞ limit = d s² + m²")

    # 5. 30-digit check of the decomposition for one (d, λ, c) by direct integration
    with mp.workdps(35):
        dd, lm, c = 3, mp.mpf("1.7"), mp.mpf("1.3")
        w = [mp.exp(-lm / 2) * (lm / 2) ** i / mp.factorial(i) for i in range(80)]  # tail < 1e-90

        def ncx2_pdf(x, df):  # Bessel form, independent of the Poisson mixture
            return (
                mp.exp(-(x + lm) / 2)
                * (x / lm) ** (mp.mpf(df) / 4 - mp.mpf(1) / 2)
                * mp.besseli(mp.mpf(df) / 2 - 1, mp.sqrt(lm * x))
                / 2
            )

        def ncx2_cdf(t, df):
            return sum(w[i] * mp.gammainc(mp.mpf(df) / 2 + i, 0, t / 2, regularized=True) for i in range(80))

        direct = mp.quad(lambda x: min(x, c * c) * ncx2_pdf(x, dd), [0, c * c, 40, mp.inf])
        formula = dd * ncx2_cdf(c * c, dd + 2) + lm * ncx2_cdf(c * c, dd + 4) + c * c * (1 - ncx2_cdf(c * c, dd))
        assert abs(direct - formula) < mp.mpf(10) ** -25, f"decomposition vs integral: {direct - formula}"


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def _ncx2_cdf(t, df, lam):
    """F_{χ'²_df(λ)}(t) as the Poisson mixture of central chi-square CDFs (mpmath, until the tail is < 1e-30)."""
    total, j = mp.mpf(0), 0
    while True:
        w = mp.exp(-lam / 2) * (lam / 2) ** j / mp.factorial(j)
        total += w * mp.gammainc(mp.mpf(df) / 2 + j, 0, t / 2, regularized=True)
        if j > lam and w < mp.mpf(10) ** -30:
            return total
        j += 1


def clipped_second_moment_closed_form(*, d, m, s, C):
    """E‖clip_C(g)‖² = s²[d F_{χ'²_{d+2}(λ)}(c²) + λ F_{χ'²_{d+4}(λ)}(c²) + c² S_{χ'²_d(λ)}(c²)], in 30-digit mpmath."""
    with mp.workdps(30):
        s_, lam, c2 = mp.mpf(s), (mp.mpf(m) / mp.mpf(s)) ** 2, (mp.mpf(C) / mp.mpf(s)) ** 2
        val = d * _ncx2_cdf(c2, d + 2, lam) + lam * _ncx2_cdf(c2, d + 4, lam) + c2 * (1 - _ncx2_cdf(c2, d, lam))
        return float(s_**2 * val)


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping.clipped_gaussian_second_moment",
        closed_form=clipped_second_moment_closed_form,
        symbols={"d": (1, 200), "m": (0.0, 10.0), "s": (0.05, 2.0), "C": (0.05, 20.0)},
        integer=frozenset({"d"}),
        valid=lambda d, m, s, C: (m / s) ** 2 < 2000,
        arguments=lambda d, m, s, C: {"dim": d, "mean_norm": m, "std": s, "clip_norm": C},
        rtol=1e-10,
        note="double-precision Poisson series in the code vs 30-digit mpmath here",
    )
]
