"""Elliptical closure of the clipped step's stationary law (backs dptheory.clipped_elliptic).

Checked here, step by step:

1. the per-direction balance (I_i): for e_i' = (1 − ηfλ) e_i − η ξ_i with E[ξ_i | e] = 0,
   E[ξ_i² | e] = q_i + κ f²λ² e_i² (Poisson batches: Var(N)/B² = 1/B), E[e_i'² | e] = (1 − c) e_i² + η²q_i
   with c = ηfλ(2 − ηfλ(1 + κ)), so at stationarity E[c e_i²] = η² E[q_i];
2. the radial chain: for x' = D x + ζ (D = diag(d_j), Cov ζ = S) and x = ρu, u uniform on the sphere,
   E[‖x'‖² | ρ] = ρ² ⟨Σ d_j² u_j²⟩ + tr S = κ²ρ² + η²Kσ² with κ² = Σ d_j²/K, η²σ² = tr S/K (exact,
   K = 2 and 3 by integration over the sphere), hence stationarity of the chain's ρ² is Σ_i (I_i)/v_i;
3. the kernel: ‖κx + ησξ‖²/(ησ)² is noncentral χ'²_K(κ²ρ²/(ησ)²), and the density of the norm used by
   the code, f(y) = (y/σ²)(y/c)^{K/2−1} e^{−(y²+c²)/(2σ²)} I_{K/2−1}(yc/σ²), integrates to 1 and has
   E y² = c² + Kσ² (mpmath quadrature, K = 1, 2, 3, 5);
4. exactness for a linear drift: with v_j = η²q/c_j the coordinates of x = V^{−1/2}e are independent
   AR(1) with stationary variance 1, and the surrogate chain x' = κx + √(1−κ²) ξ has the same
   Gaussian law (its characteristic function is invariant);
5. the small-step limit: for drift −a_j x_j and diffusion D_j (diagonal), the generator on f(ρ) is
   −f' Σa_jx_j²/ρ + f'' ΣD_jx_j²/ρ² + f'(ΣD_j − ΣD_jx_j²/ρ²)/ρ (Cartesian check in r = 3), and the law
   p ∝ ρ^{K−1}/A exp(∫[(T/A − K)/ρ − F/A]) has zero radial flux (Ap)' = −Fp + (T − A)p/ρ;
   with T = KA (isotropic) it is the radial law of proofs/clipped_radial_closure.py;
6. the angular rule: for s = Σ_j w_j u_j², E[(Σ_j w_j z_j²)^n] = E[‖z‖^{2n}] E[s^n] (z ~ N(0, I_K),
   ‖z‖ independent of u) with E‖z‖^{2n} = Π_{i<n}(K + 2i) and the weighted χ² cumulants
   2^{j−1}(j−1)! Σ_j w_j^j; checked against integration over the circle (K = 2) for n ≤ 4, with the
   tilted law E[u_1² F(s)] = (1/K) E_{Dirichlet(3/2, 1/2)}[F(s)].
"""

from __future__ import annotations

import math

import mpmath as mp
import sympy as sp

from dptheory.records import Basin, Optimizer
from proofs.links import CodeLink

STATEMENT = (
    "E[c e_i²] = η²E[q_i], c = ηfλ(2 − ηfλ(1+κ)); radial chain E[ρ'²|ρ] = κ²ρ² + η²Kσ² (u-averaged); "
    "noncentral-χ kernel normalised; Gaussian law exact for linear drift; small-step zero-flux law; "
    "Dirichlet moments E s^n = E Y^n / E‖z‖^{2n}  [clipped_elliptic.elliptic_stationary_law]"
)

_eta, _f, _lam, _kappa = sp.symbols("eta f lambda kappa", positive=True)
CONTRACTION = _eta * _f * _lam * (2 - _eta * _f * _lam * (1 + _kappa))
_contraction = sp.lambdify((_eta, _f, _lam, _kappa), CONTRACTION, "math")


def second_moment_contraction(eta: float, f: float, lam: float, kappa: float) -> float:
    """c = ηfλ(2 − ηfλ(1 + κ)): the proven expression CONTRACTION, evaluated."""
    return _contraction(eta, f, lam, kappa)


def unclipped_second_moment(eta: float, lam: float, s: float, batch: float, nu: float, kappa: float = 0.0) -> float:
    """Exact stationary E e² of an unclipped direction: η q/c with c at f = 1, q = s²/B + ν²/B²."""
    q = s * s / batch + nu * nu / batch**2
    return eta * q / (lam * (2.0 - eta * lam * (1.0 + kappa)))


def two_group_variance(w1: float, w2: float, k1: float, k2: float) -> float:
    """Var s for s = w1 U + w2 (1 − U), U ~ Beta(k1/2, k2/2): (w1 − w2)² αβ/((α+β)²(α+β+1))."""
    a, b = k1 / 2.0, k2 / 2.0
    return (w1 - w2) ** 2 * a * b / ((a + b) ** 2 * (a + b + 1.0))


def rule_variance(result) -> float:
    """Variance of the law represented by a (points, probabilities) rule."""
    x, p = result
    mean = float(x @ p)
    return float(((x - mean) ** 2) @ p)


def _unclipped_args(eta, lam, s, batch, nu):
    return {
        "basin": Basin(dim=5, curvatures=(lam,), sample_std=s),
        "optimizer": Optimizer(lr=eta, batch_size=batch, clip_norm=1.0, noise_multiplier=nu, mode="noise"),
    }


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_elliptic.second_moment_contraction",
        closed_form=second_moment_contraction,
        symbols={"eta": (1e-3, 2.0), "f": (1e-3, 1.0), "lam": (1e-3, 2.0), "kappa": (0.0, 1.0)},
        arguments=lambda eta, f, lam, kappa: {"lr": eta, "factor": f, "curvature": lam, "multiplicative": kappa},
    ),
    CodeLink(
        function="dptheory.clipped_elliptic.elliptic_stationary_law",
        closed_form=unclipped_second_moment,
        symbols={"eta": (0.01, 1.0), "lam": (0.1, 1.5), "s": (0.0, 3.0), "batch": (1, 256), "nu": (0.0, 5.0)},
        integer=frozenset({"batch"}),
        arguments=_unclipped_args,
        output=lambda law: float(law.second[0]),
        note="unclipped (mode 'noise'): the elliptical law is the exact Gaussian one",
    ),
    CodeLink(
        function="dptheory.clipped_elliptic.dirichlet_quadrature",
        closed_form=two_group_variance,
        symbols={"w1": (0.0, 10.0), "w2": (0.0, 10.0), "k1": (1, 40), "k2": (1, 40)},
        integer=frozenset({"k1", "k2"}),
        arguments=lambda w1, w2, k1, k2: {"weights": [w1, w2], "counts": [k1, k2]},
        output=rule_variance,
        rtol=1e-9,
        atol=1e-12,
        note="the rule is built from the moments by Golub–Welsch (a Cholesky of the Hankel matrix)",
    ),
]


def verify() -> None:
    # 1. per-direction balance
    e, q = sp.symbols("e q", positive=True)
    mean_sq = (1 - _eta * _f * _lam) ** 2 * e**2 + _eta**2 * (q + _kappa * _f**2 * _lam**2 * e**2)
    assert sp.simplify(mean_sq - ((1 - CONTRACTION) * e**2 + _eta**2 * q)) == 0

    # 2. u-average of Σ d_j² u_j² over the sphere, K = 2 and 3 (E u_j² = 1/K)
    phi, th = sp.symbols("phi theta", real=True)
    d1, d2, d3 = sp.symbols("d1 d2 d3", real=True)
    circle = sp.integrate(d1**2 * sp.cos(phi) ** 2 + d2**2 * sp.sin(phi) ** 2, (phi, 0, 2 * sp.pi)) / (2 * sp.pi)
    assert sp.simplify(circle - (d1**2 + d2**2) / 2) == 0
    u = (sp.sin(th) * sp.cos(phi), sp.sin(th) * sp.sin(phi), sp.cos(th))
    sphere = sp.integrate(
        sp.integrate((d1**2 * u[0] ** 2 + d2**2 * u[1] ** 2 + d3**2 * u[2] ** 2) * sp.sin(th), (th, 0, sp.pi)),
        (phi, 0, 2 * sp.pi),
    ) / (4 * sp.pi)
    assert sp.simplify(sphere - (d1**2 + d2**2 + d3**2) / 3) == 0

    # 3. the norm kernel of the chain (the code's density): normalisation and second moment
    with mp.workdps(30):
        for k in (1, 2, 3, 5):
            c, sig = mp.mpf("1.3"), mp.mpf("0.7")
            order = mp.mpf(k) / 2 - 1

            def dens(y, c=c, sig=sig, order=order):
                return (
                    (y / sig**2)
                    * (y / c) ** order
                    * mp.exp(-(y * y + c * c) / (2 * sig**2))
                    * mp.besseli(order, y * c / sig**2)
                )

            total = mp.quad(dens, [0, c, mp.inf])
            second = mp.quad(lambda y, dens=dens: y * y * dens(y), [0, c, mp.inf])
            assert abs(total - 1) < 1e-20, (k, total)
            assert abs(second - (c * c + k * sig**2)) < 1e-18, (k, second)

    # 4. linear drift: per coordinate x' = (1 − h) x + √c ξ with c = h(2 − h) keeps variance 1, and the
    #    isotropic surrogate with κ² + η²σ² = 1 keeps N(0, I): E exp(i t x') = exp(−t²κ²/2 − t²(1−κ²)/2)
    hh, kap, t = sp.symbols("h kappa_s t", positive=True)
    assert sp.simplify((1 - hh) ** 2 + hh * (2 - hh) - 1) == 0
    char = sp.exp(-(t**2) * kap**2 / 2) * sp.exp(-(t**2) * (1 - kap**2) / 2)
    assert sp.simplify(char - sp.exp(-(t**2) / 2)) == 0

    # 5. small-step radial generator (r = 3, diagonal drift and diffusion) and the zero-flux law
    x1, x2, x3 = sp.symbols("x1 x2 x3", real=True)
    a1, a2, a3, dd1, dd2, dd3 = sp.symbols("a1 a2 a3 D1 D2 D3", positive=True)
    xs, avec, dvec = (x1, x2, x3), (a1, a2, a3), (dd1, dd2, dd3)
    rho = sp.sqrt(x1**2 + x2**2 + x3**2)
    fn = sp.Function("g")
    r_ = sp.symbols("r_", positive=True)
    f_of = fn(rho)
    gen = sum(-avec[j] * xs[j] * sp.diff(f_of, xs[j]) + dvec[j] * sp.diff(f_of, xs[j], 2) for j in range(3))
    g1, g2 = sp.Derivative(fn(r_), r_), sp.Derivative(fn(r_), r_, 2)
    sa = sum(avec[j] * xs[j] ** 2 for j in range(3))
    sd = sum(dvec[j] * xs[j] ** 2 for j in range(3))
    claim = -g1 * sa / r_ + g2 * sd / r_**2 + g1 * (dd1 + dd2 + dd3 - sd / r_**2) / r_
    gen_r = gen.subs(rho, r_).doit()
    diff = sp.simplify((gen_r - claim).subs(r_, rho).doit())
    assert diff == 0, diff
    big_f, big_a, big_t = sp.Function("F"), sp.Function("A"), sp.Function("T")
    kk, y = sp.symbols("K y", positive=True)
    logp = (
        (kk - 1) * sp.log(y)
        - sp.log(big_a(y))
        + sp.Integral((big_t(u_ := sp.Symbol("u")) / big_a(u_) - kk) / u_ - big_f(u_) / big_a(u_), (u_, 1, y))
    )
    p = sp.exp(logp)
    flux = sp.diff(big_a(y) * p, y) + big_f(y) * p - (big_t(y) - big_a(y)) * p / y
    assert sp.simplify(flux / p) == 0
    #    isotropic diffusion T = K A: the radial law ρ^{K−1}/A exp(−∫F/A) of the radial closure
    iso = logp.subs(big_t(u_), kk * big_a(u_)).doit()
    assert sp.simplify(sp.diff(iso, y) - sp.diff((kk - 1) * sp.log(y) - sp.log(big_a(y)), y) + big_f(y) / big_a(y)) == 0

    # 6. angular moments for K = 2 (u = (cos φ, sin φ): U = cos²φ ~ Beta(½, ½)), and the tilted law
    w1, w2 = sp.symbols("w1 w2", positive=True)

    def beta_moment(a, b, n):
        """E[(w1 U + w2 (1 − U))^n] for U ~ Beta(a, b), by E U^j (1 − U)^l = B(a+j, b+l)/B(a, b)."""
        total = 0
        for j in range(n + 1):
            ratio = (
                sp.gamma(a + j)
                * sp.gamma(b + n - j)
                * sp.gamma(a + b)
                / (sp.gamma(a) * sp.gamma(b) * sp.gamma(a + b + n))
            )
            total += sp.binomial(n, j) * w1**j * w2 ** (n - j) * ratio
        return sp.gammasimp(total)

    half = sp.Rational(1, 2)
    for n in range(1, 5):
        kap_ = [2 ** (j - 1) * sp.factorial(j - 1) * (w1**j + w2**j) for j in range(1, n + 1)]
        mu = [sp.Integer(1)]
        for m in range(1, n + 1):
            mu.append(sum(sp.binomial(m - 1, j - 1) * kap_[j - 1] * mu[m - j] for j in range(1, m + 1)))
        norm_moment = sp.prod([2 + 2 * i for i in range(n)])
        assert sp.simplify(beta_moment(half, half, n) - mu[n] / norm_moment) == 0, n
    #    E[u_1² F(s)] = (1/K) E_tilt F with the tilt Beta(3/2, 1/2); for F = s^n, n ≤ 3:
    #    E[U s^n] = w1-derivative identity ∂/∂w1 E[s^{n+1}]/(n+1), against ½ E_{Beta(3/2, 1/2)} s^n
    for n in range(1, 4):
        lhs = sp.diff(beta_moment(half, half, n + 1), w1) / (n + 1)
        assert sp.simplify(lhs - half * beta_moment(3 * half, half, n)) == 0, n
    phi = sp.symbols("phi", real=True)
    s_phi = w1 * sp.cos(phi) ** 2 + w2 * sp.sin(phi) ** 2
    #    the exported two-group variance equals the Beta variance of the circle case
    var_circle = sp.integrate((s_phi - (w1 + w2) / 2) ** 2, (phi, 0, 2 * sp.pi)) / (2 * sp.pi)
    assert sp.simplify(var_circle - (w1 - w2) ** 2 / 8) == 0
    assert math.isclose(two_group_variance(3.0, 1.0, 1, 1), 0.5, rel_tol=1e-15)
