"""Elliptical closure of the clipped step's stationary law: per-direction shape, radial law, clip statistics.

The clipped step of dptheory.clipped_step, conditional on the error e (m = ‖He‖), has the exact
per-direction second-moment balance at stationarity (fixed batches κ = 0, Poisson κ = 1/B)

    E[c_i(m) e_i²] = η² E[q_i(m)],   c_i(m) = 1 − (1 − η f_i(m) λ_i)² − η² κ f_i(m)² λ_i²,     (I_i)

f_i = γ (curved, and flat under ambient spread) or the plain mean clip factor E[min(1, C/‖g‖)]
(flat under basin spread), q_i the per-coordinate update noise of the mean-field step model. The
mean field evaluates both sides at the root-mean-square m; this closure instead assumes the
stationary law is *elliptical*,

    e = V^{1/2} x,   V = diag(v_i),   x = ρ u,   u uniform on the unit sphere of ℝ^K, independent of ρ,

(K = r, or d when λ_flat > 0), so m² = ρ² s(u) with s = Σ_g w_g U_g, w_g = λ_g² v_g, U ~
Dirichlet(k_g/2) over the groups g of k_g equal curvatures. The radial law of ρ is the stationary
law of the isotropic surrogate chain

    x' = κ(ρ) x + η σ(ρ) ξ,   κ² = 1 − ⟨Σ_j c_j(m) u_j²⟩,   σ² = ⟨Σ_j q_j(m)/v_j⟩/K,   ξ ~ N(0, I_K),   (R)

whose conditional mean of ρ'² equals the exact one averaged over u (so the chain's law satisfies
Σ_i (I_i)/v_i exactly); given ρ, ρ'²/(η²σ²) is noncentral χ'²_K(κ²ρ²/(η²σ²)). The shape v solves
the remaining balances (I_i) under that law (fixed point v_g ← v_g θ_g). When the chain would need
more than 4000 cells (per-step noise below ~1/2000 of the law's width: small steps) or K > 64, its
small-step limit is used instead: the Fokker–Planck law of the radial diffusion with drift
ρ⟨Σ_j a_j u_j²⟩, a_j = c_j/(2η), radial diffusion ½η⟨Σ_j q_j u_j²/v_j⟩ and trace ½η Σ_j⟨q_j/v_j⟩
(zero radial flux; proofs/clipped_elliptic_closure.py).

Exact: unclipped or linear drift at any step (the Gaussian law, v_i ∝ 1/c_i); equal curvatures with
isotropic Gaussian update noise at any step (the radial chain is then the exact chain of ‖e‖) and in
the small-step limit at any nonlinearity. Approximations, and which way they err against the exact
engines (tests/test_clipped_elliptic.py holds them to 1 % + 4 SE; the measured points are in
docs/findings-closure.md §2): (i) unequal curvatures — the true law is not elliptical; the loss is
high by up to ≈ 0.6 % in partly saturated states, at large and small steps, and low by ≈ 0.5 % in
saturated ones, the per-direction second moments individually off by up to ≈ 5 %, the saturated clip
fraction by ≤ 0.002;
(ii) Cov[clip g] is spread isotropically over the n noise coordinates and the update noise is taken
Gaussian (as in the mean-field model); (iii) the small-step branch errs by O(η) against the chain:
≤ 1e-4 where the cell limit selects it, ≤ 1e-3 for K > 64 (decreasing like 1/K). Where the drift
is unstable over part of the law (η f λ (1 + κ) ≥ 2) the balances have no positive solution: a
RuntimeWarning, and the mean-field law is returned.

Symbols → arguments: records.Basin (λ_i = ``curvatures``, s = ``sample_std``, λ_flat =
``flat_curvature``, ``spread``, d = ``dim``), records.Optimizer (η = ``lr``, B = ``batch_size``,
C = ``effective_clip_norm``, ν = ``noise_std``). Reference: derived here, proved in
proofs/clipped_elliptic_closure.py.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import integrate, interpolate, special
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from dptheory import clipping as _clipping
from dptheory.clipped_step import check_inputs, stationary_state
from dptheory.records import Basin, Optimizer

Rule = tuple[np.ndarray, np.ndarray]  # (points, probabilities) of an angular rule

__all__ = ["EllipticLaw", "dirichlet_quadrature", "elliptic_stationary_law", "second_moment_contraction"]

_RULE_NODES = 8  # Gauss nodes of the angular (Dirichlet) rules
_TABLE_NODES = 64  # exact clip-moment evaluations, uniform in asinh(m/w)
_DENSE_NODES = 8193  # the cubic spline through them, resampled for linear interpolation
_KINK_NODES = 41  # extra nodes across a sharp clipping transition (s√n ≪ C)
_FP_NODES = 4097  # Simpson nodes of the small-step radial law (odd)
_CHAIN_MAX_CELLS = 4000
_CELLS_PER_SIGMA = 2.0  # grid spacing = half the smallest per-step noise of the radial chain
_SUB_CELLS = 8  # midpoints per cell for the clip statistics (sharper in m than the law)
_CHAIN_MAX_DIM = 64
_TAIL = 40.0  # the range ends where the log-density is 40 below its peak
_MAX_ITER = 200
_TOL = 1e-9


def dirichlet_quadrature(
    *, weights: Any, counts: Any, tilt: int | None = None, nodes: int = _RULE_NODES
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule (points, probabilities) for the law of s = Σ_g w_g U_g, U ~ Dirichlet(k_g/2).

    s is the quadratic form Σ_j w_j u_j² of a uniform unit vector u in ℝ^K (K = Σ k_g) with k_g
    coordinates of weight w_g = ``weights[g]``, k_g = ``counts[g]``; ``tilt`` = h gives the law of s
    under u-weight U_h/E U_h, i.e. Dirichlet with k_h + 2 (so E[U_h F(s)] = (k_h/K)·E_tilt[F(s)]).
    Built by Golub–Welsch from the exact moments E(s − c)^j, j < 2N: with z ~ N(0, I_K),
    Σ_j (w_j − c) z_j² = ‖z‖² (s − c) and ‖z‖² is independent of u, so E(s − c)^j = E Y^j / E(χ²_K)^j
    with Y a weighted sum of χ² variables whose cumulants are 2^{j−1}(j−1)! Σ_g k_g (w_g − c)^j.
    The rule integrates polynomials of degree < 2N exactly (N = ``nodes``, fewer if the law has
    fewer support points); one point when all weights are equal. Reference: derived here, proved in
    proofs/clipped_elliptic_closure.py.

    Example:
        >>> x, p = dirichlet_quadrature(weights=[1.0, 3.0], counts=[1, 1])   # s = 1 + 2 sin²φ: mean 2
        >>> round(float(x @ p), 12), round(float((x - 2) ** 2 @ p), 12)     # variance 4 · Var(U) = 0.5
        (2.0, 0.5)
    """
    w = np.asarray(weights, dtype=float)
    k = np.asarray(counts, dtype=float).copy()
    if w.ndim != 1 or w.shape != k.shape or w.size == 0 or np.any(k <= 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights and counts must be finite 1-D arrays of equal length, counts > 0, got {weights!r}")
    if tilt is not None:
        k[tilt] += 2.0
    kk = float(k.sum())
    c = float(np.dot(k, w) / kk)
    spread = float(np.ptp(w))
    if spread == 0.0 or spread <= 1e-14 * max(abs(c), 1e-300):
        return np.array([c]), np.array([1.0])
    y = (w - c) / spread
    nmax = 2 * nodes
    kap = [2.0 ** (j - 1) * math.factorial(j - 1) * float(np.dot(k, (y / kk) ** j)) for j in range(1, nmax + 1)]
    mu = [1.0]
    for j in range(1, nmax + 1):
        mu.append(sum(math.comb(j - 1, i - 1) * kap[i - 1] * mu[j - i] for i in range(1, j + 1)))
    den = np.cumprod(np.concatenate(([1.0], 1.0 + 2.0 * np.arange(nmax) / kk)))
    mom = np.asarray(mu) / den  # E[((s − c)/spread)^j]
    sd = math.sqrt(mom[2])
    z = mom / sd ** np.arange(nmax + 1)
    lo, hi = (float(w.min()) - c) / spread / sd, (float(w.max()) - c) / spread / sd
    for n in range(nodes, 0, -1):
        hank = np.array([[z[i + j] for j in range(n + 1)] for i in range(n + 1)])
        try:
            r = np.linalg.cholesky(hank).T
        except np.linalg.LinAlgError:
            continue
        d = np.diag(r)
        alpha = np.array([r[j, j + 1] / d[j] - (r[j - 1, j] / d[j - 1] if j else 0.0) for j in range(n)])
        beta = d[1:n] / d[: n - 1]
        x, vec = np.linalg.eigh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
        p = vec[0] ** 2
        slack = 1e-9 * (hi - lo)
        if np.all(p > 0) and x.min() >= lo - slack and x.max() <= hi + slack:
            pts = c + spread * sd * np.clip(x, lo, hi)
            return pts, p / p.sum()
    return np.array([c]), np.array([1.0])  # pragma: no cover - n = 1 always succeeds


def second_moment_contraction(*, lr: Any, factor: Any, curvature: Any, multiplicative: float = 0.0) -> Any:
    """Per-step loss c of a direction's second moment: E e'² = (1 − c) e² + η² q given e (balance (I_i)).

        c = 1 − (1 − η f λ)² − η² κ f² λ² = η f λ (2 − η f λ (1 + κ)),

    η = ``lr``, f = ``factor`` (γ(m), or the plain mean clip factor for flat coordinates under basin
    spread), λ = ``curvature``, κ = ``multiplicative`` (1/B for Poisson batches, else 0); arrays
    broadcast. Exact for the step conditional on e. Reference: derived here, proved in
    proofs/clipped_elliptic_closure.py.

    Example:
        >>> second_moment_contraction(lr=1.0, factor=0.5, curvature=1.0)      # 1 − (1 − 0.5)²
        0.75
    """
    h = np.multiply(np.multiply(lr, factor), curvature)
    out = h * (2.0 - h * (1.0 + multiplicative))
    return float(out) if np.ndim(out) == 0 else out


class _ClipTable:
    """γ(m), plain mean clip factor φ̄(m), spread noise q(m), clip probability P(m) on m ∈ [0, m_max].

    Exact evaluations (``dptheory.clipping``) on 64 nodes uniform in y = asinh(m/w), refined across a
    sharp clipping transition, a cubic spline in y through them, resampled on 8193 points for linear
    interpolation (relative error ≲ 1e-6 where the moments vary on the scale of m; tested against
    the exact functions); s = 0 in closed form.
    """

    def __init__(self, basin: Basin, opt: Optimizer, m_max: float, scale: float) -> None:
        self.n, self.s, self.c = basin.noise_dim, basin.sample_std, opt.effective_clip_norm
        self.b, self.dp = opt.batch_size, opt.noise_std**2 / opt.batch_size**2
        self.m_max = m_max
        if self.s == 0.0:
            return
        self.w = scale
        ymax = math.asinh(m_max / scale)
        y = np.linspace(0.0, ymax, _TABLE_NODES)
        knee2 = self.c * self.c - self.n * self.s * self.s
        if knee2 > 0:
            mc = math.sqrt(knee2)
            extra = np.linspace(max(0.0, mc - 12.0 * self.s), min(m_max, mc + 12.0 * self.s), _KINK_NODES)
            y = np.unique(np.concatenate((y, np.arcsinh(extra / scale))))
        m = scale * np.sinh(y)
        n, s, c = self.n, self.s, self.c
        gam = np.asarray(_clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        sec = np.asarray(_clipping.clipped_gaussian_second_moment(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        phi = np.asarray(_clipping.gaussian_mean_clip_factor(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        prob = np.asarray(_clipping.clip_probability(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        q = np.maximum(sec - gam * gam * m * m, 0.0) / (n * self.b) + self.dp
        self.y = np.linspace(0.0, ymax, _DENSE_NODES)
        self.dense = {
            key: interpolate.CubicSpline(y, val)(self.y)
            for key, val in (("gamma", gam), ("phi", phi), ("q", q), ("prob", prob))
        }

    def __call__(self, key: str, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=float)
        if self.s == 0.0:
            with np.errstate(divide="ignore"):
                ratio = np.where(m > self.c, self.c / np.where(m > 0, m, 1.0), 1.0)
            if key in ("gamma", "phi"):
                return ratio
            if key == "q":
                return np.full_like(m, self.dp)
            return (m > self.c).astype(float)
        if np.max(m, initial=0.0) > self.m_max * (1.0 + 1e-9):
            raise _RangeError
        out = np.interp(np.arcsinh(m / self.w), self.y, self.dense[key])
        res: np.ndarray = np.clip(out, 0.0, 1.0) if key != "q" else np.maximum(out, self.dp)
        return res


class _RangeError(Exception):
    """The law reached beyond the clip table: rebuild it wider."""


class _NoShape(Exception):
    """The per-direction balances have no positive solution under the elliptical law."""


@dataclass(frozen=True)
class EllipticLaw:
    """Stationary law of the elliptical closure (:func:`elliptic_stationary_law`).

    ``second`` = E e_i² on the r curved axes; ``flat_second`` = E e_j² per flat coordinate (the
    mean-field value when λ_flat = 0: the flat coordinates then do not feed back); ``gradient_norm_sq``
    = E‖He‖²; ``clip_fraction`` = E P(‖g‖ > C); ``mean_clip_factor`` = E min(1, C/‖g‖) (both
    averaged over the law of m); ``method`` = "exact" (unclipped, linear or noise-free: the
    mean-field Gaussian law), "chain" (the discrete radial chain) or "fokker-planck" (its small-step
    limit); ``iterations`` of the shape fixed point.
    """

    second: np.ndarray
    flat_second: float
    gradient_norm_sq: float
    clip_fraction: float
    mean_clip_factor: float
    method: str
    iterations: int


@dataclass
class _Groups:
    lam: np.ndarray  # λ_g
    count: np.ndarray  # k_g
    flat_kind: np.ndarray  # bool: the flat group under basin spread (plain clip factor, DP noise only)
    index: np.ndarray  # group of each curved direction
    has_flat: bool


def _groups(basin: Basin) -> _Groups:
    vals, inv, cnt = np.unique(basin.curvature_array, return_inverse=True, return_counts=True)
    lam, count, kind = list(vals), list(cnt.astype(float)), [False] * vals.size
    has_flat = basin.flat_curvature > 0 and basin.flat_dim > 0
    if has_flat:
        lam.append(basin.flat_curvature)
        count.append(float(basin.flat_dim))
        kind.append(basin.spread == "basin")
    return _Groups(np.array(lam), np.array(count), np.array(kind), inv, has_flat)


class _Model:
    """Per-group contraction c_g(m) and noise q_g(m) on (ρ grid) × (angular nodes)."""

    def __init__(self, groups: _Groups, table: _ClipTable, lr: float, kappa: float) -> None:
        self.g, self.t, self.lr, self.kappa = groups, table, lr, kappa

    def contraction(self, gi: int, m: np.ndarray) -> np.ndarray:
        factor = self.t("phi" if self.g.flat_kind[gi] else "gamma", m)
        out: np.ndarray = second_moment_contraction(
            lr=self.lr, factor=factor, curvature=self.g.lam[gi], multiplicative=self.kappa
        )
        return out

    def noise(self, gi: int, m: np.ndarray) -> np.ndarray:
        return np.full_like(m, self.t.dp) if self.g.flat_kind[gi] else self.t("q", m)


def _rules(model: _Model, v: np.ndarray) -> list[Rule]:
    """Angular rules for s = Σ_g λ_g² v_g U_g: [plain, tilted by group 0, 1, …]."""
    g = model.g
    w = g.lam**2 * v
    return [dirichlet_quadrature(weights=w, counts=g.count, tilt=t) for t in (None, *range(g.lam.size))]


def _coefficients(
    model: _Model, rules: list[Rule], v: np.ndarray, rho: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Rule]:
    """u-averaged (1 − κ², σ², radial noise, E[Q_g | ρ], E_tilt[c_g | ρ]) on the ρ grid."""
    g = model.g
    kk = float(g.count.sum())
    plain = rules[0]
    mp_ = rho[:, None] * np.sqrt(plain[0])[None, :]
    q_g = np.stack([model.noise(i, mp_) @ plain[1] for i in range(g.lam.size)])
    c_list, q_t = [], []
    for i in range(g.lam.size):
        pts, wts = rules[i + 1]
        mt = rho[:, None] * np.sqrt(pts)[None, :]
        c_list.append(model.contraction(i, mt) @ wts)
        q_t.append(model.noise(i, mt) @ wts)
    c_g = np.stack(c_list)
    share = (g.count / kk)[:, None]
    one_minus_k2 = np.sum(share * c_g, axis=0)
    sigma2 = np.sum(g.count[:, None] * q_g / v[:, None], axis=0) / kk
    radial = np.sum(share * np.stack(q_t) / v[:, None], axis=0)
    return one_minus_k2, sigma2, radial, q_g, c_g, plain


def _fp_law(
    model: _Model, rules: list[Rule], v: np.ndarray, hi: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Rule]:
    """Small-step radial law on [0, hi]: Simpson nodes and normalised weights (zero radial flux)."""
    kk = float(model.g.count.sum())
    eta = model.lr
    rho = np.linspace(0.0, hi, _FP_NODES)
    one_minus_k2, sigma2, radial, q_g, c_g, plain = _coefficients(model, rules, v, rho)
    drift = rho * one_minus_k2 / (2.0 * eta)  # ρ ⟨Σ a_j u_j²⟩, a = c/(2η)
    a_rad = 0.5 * eta * radial  # radial diffusion ½η⟨uᵀQ̃u⟩
    trace = 0.5 * eta * kk * sigma2  # ½η tr Q̃
    with np.errstate(divide="ignore", invalid="ignore"):
        integrand = np.where(rho > 0, (trace / a_rad - kk) / rho, 0.0) - drift / a_rad
    logp = special.xlogy(kk - 1.0, rho) - np.log(a_rad) + integrate.cumulative_simpson(integrand, x=rho, initial=0.0)
    simpson = np.ones(_FP_NODES)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    p = np.exp(logp - logp.max()) * simpson
    return rho, p / p.sum(), logp, q_g, c_g, plain


def _chain_law(
    model: _Model, rules: list[Rule], v: np.ndarray, hi: float, cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Rule]:
    """Stationary law of the radial chain (R) on ``cells`` midpoints of [0, hi] (sparse direct solve)."""
    kk = float(model.g.count.sum())
    eta = model.lr
    h = hi / cells
    rho = (np.arange(cells) + 0.5) * h
    one_minus_k2, sigma2, _, q_g, c_g, plain = _coefficients(model, rules, v, rho)
    centre = np.sqrt(np.maximum(1.0 - one_minus_k2, 0.0)) * rho
    sig2 = eta * eta * sigma2
    sig = np.sqrt(sig2)
    hi_i = np.minimum(cells - 1, np.ceil((centre + (12.0 + math.sqrt(kk)) * sig) / h).astype(int))
    lo_i = np.minimum(np.maximum(0, np.floor((centre - 12.0 * sig) / h).astype(int)), hi_i)
    width = hi_i - lo_i + 1
    src = np.repeat(np.arange(cells), width)
    tgt = np.repeat(lo_i - np.cumsum(np.concatenate(([0], width[:-1]))), width) + np.arange(width.sum())
    x, cj, s2 = rho[tgt], centre[src], sig2[src]
    order = kk / 2.0 - 1.0
    z = x * cj / s2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nc = (
            np.log(x)
            - np.log(s2)
            + order * (np.log(x) - np.log(cj))
            - (x - cj) ** 2 / (2.0 * s2)
            + np.log(special.ive(order, z))
        )
        central = (
            (kk - 1.0) * np.log(x) - x * x / (2.0 * s2) - (kk / 2.0) * np.log(2.0 * s2) - special.gammaln(kk / 2.0)
        )
        logf = np.where(z > 1e-8, nc, central + math.log(2.0))
    logf = np.where(np.isnan(logf), -np.inf, logf)
    starts = np.concatenate(([0], np.cumsum(width)[:-1]))
    f = np.exp(logf - np.maximum.reduceat(logf, starts)[src])  # per source column: no underflow
    colsum = np.bincount(src, weights=f, minlength=cells)
    f = f / colsum[src]
    keep = tgt != cells - 1  # the last equation becomes the normalisation Σ p = 1
    rows = np.concatenate((tgt[keep], np.arange(cells - 1), np.full(cells, cells - 1)))
    cols = np.concatenate((src[keep], np.arange(cells - 1), np.arange(cells)))
    vals = np.concatenate((f[keep], -np.ones(cells - 1), np.ones(cells)))
    mat = coo_matrix((vals, (rows, cols)), shape=(cells, cells)).tocsc()
    rhs = np.zeros(cells)
    rhs[-1] = 1.0
    p = np.maximum(spsolve(mat, rhs), 0.0)
    return rho, p / p.sum(), q_g, c_g, plain


def _fit_range(model: _Model, rules: list[Rule], v: np.ndarray, hi: float) -> float:
    """Widen [0, hi] until the small-step log-density at hi is ≥ 40 below its peak, then trim to it."""
    for _ in range(30):
        rho, _, logp, *_ = _fp_law(model, rules, v, hi)
        top = float(np.max(logp))
        if logp[-1] < top - _TAIL:
            inside = np.flatnonzero(logp >= top - _TAIL)
            return float(rho[min(inside[-1] + 2, rho.size - 1)])
        hi *= 1.5
    warnings.warn(
        "elliptic closure: the radial law did not fit in range; result may be inaccurate", RuntimeWarning, stacklevel=3
    )
    return hi


def _balance(
    model: _Model, v: np.ndarray, rho: np.ndarray, p: np.ndarray, q_g: np.ndarray, c_g: np.ndarray
) -> np.ndarray:
    """θ_g = η² K E[q_g] / (v_g E[ρ² E_tilt c_g]), normalised by the automatic weighted balance."""
    kk = float(model.g.count.sum())
    eq = q_g @ p
    ec = (c_g * rho**2) @ p
    theta = model.lr**2 * kk * eq / (v * ec)
    weight = model.g.count * ec
    out: np.ndarray = theta / (np.dot(weight, theta) / weight.sum())
    return out


@functools.lru_cache(maxsize=1024)
def _solve(basin: Basin, opt: Optimizer, poisson: bool) -> EllipticLaw:
    state = stationary_state(basin=basin, optimizer=opt, poisson=poisson)
    m2 = state.gradient_norm_sq
    c, s, n = opt.effective_clip_norm, basin.sample_std, basin.noise_dim
    g = _groups(basin)

    def exact(second: Any, flat_second: float, msq: float) -> EllipticLaw:
        m = math.sqrt(msq) if math.isfinite(msq) else math.inf
        if math.isinf(c) or not math.isfinite(m):
            prob, phi = (0.0, 1.0) if math.isinf(c) else (1.0, 0.0)
        else:
            prob = float(_clipping.clip_probability(dim=n, mean_norm=m, std=s, clip_norm=c))
            phi = float(_clipping.gaussian_mean_clip_factor(dim=n, mean_norm=m, std=s, clip_norm=c))
        return EllipticLaw(np.asarray(second, float), float(flat_second), float(msq), prob, phi, "exact", 0)

    if not math.isfinite(m2):
        return exact(np.full(basin.rank, math.inf), math.inf, math.inf)
    if not opt.mode.clipped or math.isinf(c) or m2 == 0.0:
        return exact(state.second, state.flat_second, m2)
    kk = float(g.count.sum())
    n_curved = g.lam.size - (1 if g.has_flat else 0)
    v = np.array([float(state.second[g.index == i][0]) for i in range(n_curved)])
    if g.has_flat:
        v = np.append(v, state.flat_second)
    m_top = math.sqrt(m2) * (kk + 45.0) / math.sqrt(kk * (kk + 1.0))
    if float(_clipping.clip_probability(dim=n, mean_norm=3.0 * m_top, std=s, clip_norm=c)) < 1e-13:
        return exact(state.second, state.flat_second, m2)  # clipping never acts where the law has mass
    kappa = 1.0 / opt.batch_size if poisson else 0.0
    scale = min(max(c, s * math.sqrt(n)), math.sqrt(m2))
    m_max = 4.0 * m_top
    for _ in range(6):
        model = _Model(g, _ClipTable(basin, opt, m_max, scale), opt.lr, kappa)
        try:
            law = _iterate(model, v, kk)
            break
        except _RangeError:
            m_max *= 4.0
        except _NoShape:
            warnings.warn(
                "elliptic closure: the per-direction balances have no positive solution (the drift is "
                "unstable, η γ λ (1 + κ) ≥ 2, where the law has mass); returning the mean-field law",
                RuntimeWarning,
                stacklevel=3,
            )
            out = exact(state.second, state.flat_second, m2)
            return EllipticLaw(
                out.second,
                out.flat_second,
                out.gradient_norm_sq,
                out.clip_fraction,
                out.mean_clip_factor,
                "mean-field",
                0,
            )
    else:  # pragma: no cover - the table range grows geometrically
        raise RuntimeError("elliptic closure: clip table range could not be fitted")
    v_fit, rho, p, plain, er2, method, iterations = law
    second_g = v_fit * er2 / kk
    second = second_g[g.index]
    flat_second = float(second_g[-1]) if g.has_flat else float(state.flat_second)
    msq = float((rho**2 * float(plain[0] @ plain[1])) @ p)
    if method == "chain":  # p is a cell mass: average the (possibly step-like) clip statistics over the cell
        h = rho[1] - rho[0]
        sub = (np.arange(_SUB_CELLS) + 0.5) / _SUB_CELLS - 0.5
        nodes, mass = (rho[:, None] + h * sub[None, :]).ravel(), np.repeat(p / _SUB_CELLS, _SUB_CELLS)
    else:
        nodes, mass = rho, p
    mm = nodes[:, None] * np.sqrt(plain[0])[None, :]
    prob = min(1.0, max(0.0, float((model.t("prob", mm) @ plain[1]) @ mass)))
    phi = min(1.0, max(0.0, float((model.t("phi", mm) @ plain[1]) @ mass)))
    return EllipticLaw(second, flat_second, msq, prob, phi, method, iterations)


def _iterate(
    model: _Model, v: np.ndarray, kk: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Rule, float, str, int]:
    """Shape fixed point v_g ← v_g θ_g: on the small-step law first, then on the chain where it applies.

    Anderson acceleration (depth 3) on x = log v − mean(log v) (θ does not depend on the scale of v,
    which only sets the units of ρ; the scale is kept so that E ρ² ≈ K). Returns (v, ρ nodes,
    probabilities, angular rule, E ρ², method, iterations) of the last law.
    """
    hi = (kk + 45.0) / math.sqrt(kk + 1.0)
    iterations = 0
    result: tuple[np.ndarray, np.ndarray, np.ndarray, Rule, float, str, int] | None = None
    scale = float(np.exp(np.mean(np.log(v))))
    x = np.log(v) - math.log(scale)
    for phase in ("fokker-planck", "chain"):
        cells = 0
        if phase == "chain":
            if kk > _CHAIN_MAX_DIM:
                break
            v = scale * np.exp(x)
            sig2 = _coefficients(model, _rules(model, v), v, np.linspace(0.0, hi, 65))[1]
            cells = max(200, math.ceil(_CELLS_PER_SIGMA * hi / float(np.min(model.lr * np.sqrt(sig2)))))
            if cells > _CHAIN_MAX_CELLS:
                break
        xs: list[np.ndarray] = []
        gs: list[np.ndarray] = []
        for _ in range(_MAX_ITER):
            iterations += 1
            v = scale * np.exp(x)
            rules = _rules(model, v)
            hi = _fit_range(model, rules, v, hi)
            if phase == "chain":
                rho, p, q_g, c_g, plain = _chain_law(model, rules, v, hi, cells)
            else:
                rho, p, _, q_g, c_g, plain = _fp_law(model, rules, v, hi)
            er2 = float(rho**2 @ p)
            result = (v, rho, p, plain, er2, phase, iterations)
            scale *= er2 / kk  # keep E ρ² ≈ K at the next law
            hi *= math.sqrt(kk / er2)
            if model.g.lam.size == 1:
                break
            theta = _balance(model, v, rho, p, q_g, c_g)
            if not (np.all(np.isfinite(theta)) and np.all(theta > 0)):
                raise _NoShape
            if np.max(np.abs(theta - 1.0)) < _TOL:
                break
            log_t = np.log(theta)
            g_x = x + log_t - np.mean(log_t)
            xs.append(x)
            gs.append(g_x)
            xs, gs = xs[-4:], gs[-4:]
            x = _anderson(xs, gs)
        else:
            warnings.warn(
                f"elliptic closure: shape fixed point stopped after {_MAX_ITER} iterations",
                RuntimeWarning,
                stacklevel=3,
            )
    assert result is not None  # the first phase always runs at least once
    return result


def _anderson(xs: list[np.ndarray], gs: list[np.ndarray]) -> np.ndarray:
    """Anderson-mixed next iterate from the history of (x, g(x)); plain iteration while it is short."""
    f = [g - x for x, g in zip(xs, gs)]
    if len(f) < 2:
        return gs[-1]
    df = np.stack([f[i + 1] - f[i] for i in range(len(f) - 1)], axis=1)
    dg = np.stack([gs[i + 1] - gs[i] for i in range(len(gs) - 1)], axis=1)
    try:
        coef, *_ = np.linalg.lstsq(df, f[-1], rcond=None)
    except np.linalg.LinAlgError:  # pragma: no cover - degenerate history
        return gs[-1]
    out = gs[-1] - dg @ coef
    return out if np.all(np.isfinite(out)) else gs[-1]


def elliptic_stationary_law(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> EllipticLaw:
    """Stationary law of the clipped step under the elliptical closure (module docstring).

    Returns an :class:`EllipticLaw`: per-direction second moments, E‖He‖², and the clip fraction and
    mean clip factor averaged over the law of m = ‖He‖ (not at its root mean square).
    ``sampling``: "fixed" or "poisson" (κ = 1/B). Unclipped modes, noise-free steps and states where
    clipping never acts return the mean-field law, which is exact there. Memoised on its (frozen)
    arguments. Raises ValueError for invalid arguments. Reference: derived here, proved in
    proofs/clipped_elliptic_closure.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0, spread="basin")
        >>> o = Optimizer(lr=0.02, batch_size=4, clip_norm=0.1, noise_multiplier=200.0)
        >>> law = elliptic_stationary_law(basin=b, optimizer=o)      # saturated: E e² ≈ 2θ², θ = ην²/(2CB²)
        >>> round(float(law.second[0]) / (2 * (0.02 * 20.0**2 / (2 * 0.1 * 16)) ** 2), 2)
        1.0
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    return _solve(basin, optimizer, poisson)
