"""Mean of a clipped Gaussian vector (backs ``dptheory.clipping.clipped_gaussian_mean_factor``).

For X ~ N(θ, I_p), λ = ‖θ‖², any h with finite moments (Bock 1975, Theorem A; Stein's identity):

    E[X h(‖X‖²)] = θ E[h(χ'²_{p+2}(λ))].

With g = s X, μ = s θ and h(w) = min(1, c/√w), c = C/s, this is E[clip_C(g)] = γ μ with
γ = E[min(1, c/√W)], W ~ χ'²_{d+2}(λ). We verify the identity directly and step by step:

0. directly, for the Laplace family h_t(w) = e^{−tw} (t > 0), which determines both sides as
   measures in ‖X‖² (uniqueness of Laplace transforms): by sympy integration in d = 1,
   E[X₁ e^{−tX₁²}] = θ₁ (1+2t)^{−3/2} e^{−θ₁²t/(1+2t)}, and E e^{−tX_i²} = (1+2t)^{−1/2} e^{−θ_i²t/(1+2t)},
   so E[X₁ e^{−t‖X‖²}] = θ₁ M_{p+2}(t; λ) with M_k(t; λ) = (1+2t)^{−k/2} e^{−λt/(1+2t)} the Laplace
   transform of χ'²_k(λ) — for symbolic p;

1. Stein: ∂_θ φ(x − θ) = (x − θ) φ(x − θ), so E[(X − θ) h] = ∇_θ E[h] = 2θ ∂_λ E[h(χ'²_p(λ))];
2. Poisson mixture: E h(χ'²_p(λ)) = Σ_j P_j(λ/2) a_j, a_j = E h(χ²_{p+2j}), and
   ∂_λ P_j(λ/2) = ½ (P_{j−1} − P_j) (P_{−1} = 0);
3. telescoping: Σ_j P_j a_j + Σ_j (P_{j−1} − P_j) a_j = Σ_j P_j a_{j+1} (exact on truncated sums),
   i.e. E[X h] = θ E h(χ'²_{p+2}(λ));
4. per-term integral: v^{-1/2} f_k(v) = Γ((k−1)/2)/(√2 Γ(k/2)) f_{k−1}(v), so
   E[min(1, c/√V)] = F_k(c²) + c Γ((k−1)/2)/(√2 Γ(k/2)) S_{k−1}(c²) for V ~ χ²_k;
5. d = 1 cross-check at 30 digits: the series equals E[clamp(g, −C, C)]/m from normal CDFs.
"""

from __future__ import annotations

import mpmath as mp
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "E clip_C(g) = gamma mu, gamma = sum_j Pois(j; lam/2)[F_k(c^2) + c G((k-1)/2)/(sqrt2 G(k/2)) S_(k-1)(c^2)], "
    "k = d+2+2j  [clipping.clipped_gaussian_mean_factor]"
)


def chi2_pdf(k, v):
    """Central chi-square density f_k(v)."""
    return v ** (k / 2 - 1) * sp.exp(-v / 2) / (2 ** (k / 2) * sp.gamma(k / 2))


def _zero(expr, what: str) -> None:
    r = sp.simplify(sp.gammasimp(expr))
    assert r == 0, f"{what}: residual {r}"


def clipped_mean_factor_series(d, m, s, C, tol=None):
    """γ = Σ_j Pois(j; λ/2)[F_k(c²) + c Γ((k−1)/2)/(√2 Γ(k/2)) S_{k−1}(c²)], k = d+2+2j, λ = m²/s², c = C/s,
    summed in mpmath at the working precision until the Poisson weights pass their mode and fall below ``tol``."""
    tol = mp.mpf(10) ** -40 if tol is None else tol
    m, s, C = mp.mpf(m), mp.mpf(s), mp.mpf(C)
    lam, c = (m / s) ** 2, C / s
    total, j = mp.mpf(0), 0
    while True:
        k = d + 2 + 2 * j
        w = mp.exp(-lam / 2) * (lam / 2) ** j / mp.factorial(j)
        f = mp.gammainc(mp.mpf(k) / 2, 0, c * c / 2, regularized=True)
        tail = c * mp.gamma(mp.mpf(k - 1) / 2) / (mp.sqrt(2) * mp.gamma(mp.mpf(k) / 2))
        tail *= mp.gammainc(mp.mpf(k - 1) / 2, c * c / 2, mp.inf, regularized=True)
        total += w * (f + tail)
        if j > lam and w < tol:
            return total
        j += 1


def _series_d1(m, s, C, tol=None):
    return clipped_mean_factor_series(1, m, s, C, tol)


def _gamma_reference(*, d, m, s, C):
    with mp.workdps(30):
        return float(clipped_mean_factor_series(int(d), m, s, C, tol=mp.mpf(10) ** -25))


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping.clipped_gaussian_mean_factor",
        closed_form=_gamma_reference,
        symbols={"d": (1, 200), "m": (0.0, 10.0), "s": (0.05, 2.0), "C": (0.05, 20.0)},
        integer=frozenset({"d"}),
        valid=lambda d, m, s, C: (m / s) ** 2 < 2000,
        arguments=lambda d, m, s, C: {"dim": d, "mean_norm": m, "std": s, "clip_norm": C},
        rtol=1e-10,
        note="the code sums the same Poisson series in double precision (scipy's regularised gammas, tail mass "
        "≤ 1e-16 each side); the reference is the series in 30-digit mpmath",
    )
]


def verify() -> None:
    x, th = sp.symbols("x theta", real=True)
    lam, v = sp.symbols("lambda v", positive=True)
    k = sp.symbols("k", positive=True)
    j = sp.symbols("j", integer=True, positive=True)

    # 0. Bock's identity for h_t(w) = e^{-tw}, any dimension p
    t, p = sp.symbols("t p", positive=True)
    gauss = sp.exp(-((x - th) ** 2) / 2) / sp.sqrt(2 * sp.pi)

    def laplace(kk, nc):  # E e^{-tW}, W ~ χ'²_kk(nc)
        return (1 + 2 * t) ** (-kk / 2) * sp.exp(-nc * t / (1 + 2 * t))

    first = sp.integrate(x * sp.exp(-t * x**2) * gauss, (x, -sp.oo, sp.oo))
    one = sp.integrate(sp.exp(-t * x**2) * gauss, (x, -sp.oo, sp.oo))
    _zero(one - laplace(1, th**2), "E e^{-tX²} = M_1(t; θ²)")
    rest = laplace(p - 1, lam - th**2)  # the other p − 1 coordinates, Σ_{i≥2} θ_i² = λ − θ₁²
    _zero(first * rest - th * laplace(p + 2, lam), "E[X₁ e^{-t‖X‖²}] = θ₁ M_{p+2}(t; λ)")

    # 1. Gaussian score (Stein)
    phi = sp.exp(-((x - th) ** 2) / 2) / sp.sqrt(2 * sp.pi)
    _zero(sp.diff(phi, th) - (x - th) * phi, "Stein score identity")

    # 2. derivative of the Poisson(λ/2) weights
    def P(i):
        return sp.exp(-lam / 2) * (lam / 2) ** i / sp.gamma(i + 1)

    _zero(sp.diff(P(j), lam) - (P(j - 1) - P(j)) / 2, "dP_j/dλ = (P_{j-1} - P_j)/2")
    _zero(sp.diff(P(0), lam) + P(0) / 2, "dP_0/dλ = -P_0/2")

    # 3. telescoping on truncated sums (P_{-1} = 0), with generic a_j
    n = 7
    a = sp.symbols(f"a0:{n + 1}")
    p = sp.symbols(f"p0:{n + 1}")
    lhs = sum(p[i] * a[i] for i in range(n + 1)) + sum(((p[i - 1] if i else 0) - p[i]) * a[i] for i in range(n + 1))
    rhs = sum(p[i] * a[i + 1] for i in range(n))
    _zero(sp.expand(lhs - rhs), "telescoping Σ P_j a_j + Σ (P_{j-1}-P_j) a_j = Σ P_j a_{j+1}")
    # and: E[X h] = θ E h + ∇_θ E h = θ (Σ P a + 2 ∂_λ Σ P a) uses λ = ‖θ‖², ∂λ/∂θ = 2θ
    t1, t2 = sp.symbols("t1 t2", real=True)
    _zero(sp.diff(t1**2 + t2**2, t1) - 2 * t1, "∂‖θ‖²/∂θ₁ = 2θ₁")

    # 4. per-term density ratio
    ratio = sp.gammasimp(sp.powsimp(v ** sp.Rational(-1, 2) * chi2_pdf(k, v) / chi2_pdf(k - 1, v), force=True))
    const = sp.gamma((k - 1) / 2) / (sp.sqrt(2) * sp.gamma(k / 2))
    _zero(sp.simplify(ratio - const), "v^{-1/2} f_k = Γ((k-1)/2)/(√2Γ(k/2)) f_{k-1}")

    # 5. d = 1: series vs closed form E clamp(g)/m at 30 digits, three parameter sets
    with mp.workdps(40):
        for m, s, C in [(1, 1, "0.5"), ("0.3", 2, 1), (3, 1, 2)]:
            m, s, C = mp.mpf(m), mp.mpf(s), mp.mpf(C)
            al, be = (-C - m) / s, (C - m) / s
            inside = m * (mp.ncdf(be) - mp.ncdf(al)) - s * (mp.npdf(be) - mp.npdf(al))
            closed = (C * (1 - mp.ncdf(be)) - C * mp.ncdf(al) + inside) / m
            assert abs(_series_d1(m, s, C) - closed) < mp.mpf(10) ** -30, "d = 1 series vs closed form"
