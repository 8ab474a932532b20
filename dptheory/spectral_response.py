"""Linear response of the per-sample clip operator near a minimum, per Hessian direction.

Near a minimum w* the per-example gradients are modelled as g_i(w* + e) = g_i + H e (the
per-example Hessians H_i replaced by their mean H, unless measured per-example curvatures are
given). Linearising clip_C(x) = φ(‖x‖) x, φ(R) = min(1, C/R), about g_i (Jacobian
J_i = φ_i I − 1{‖g_i‖>C} (C/‖g_i‖) ĝ_i ĝ_iᵀ, proofs/spectral_linear_response.py),

    mean_i clip_C(g_i + H e) ≈ m_c + J H e,   m_c = mean_i φ_i g_i,   J = mean_i J_i,

and in the eigenbasis of H (eigenvector u_j, eigenvalue λ_j, p_ij = u_jᵀ g_i, R_i = ‖g_i‖) the
diagonal of J is the per-direction shrinkage

    γ_j = mean_i [ φ_i − 1{R_i>C} (C/R_i) p_ij²/R_i² ],

with drift a_j = γ_j λ_j. The per-example variance of the clipped gradient along u_j (what
mini-batch sampling turns into noise) is V_j = mean_i φ_i² p_ij² − (m_c)_j².

Bulk directions (not resolved individually) carry the per-example bulk energy
E_i = R_i² − Σ_{j≤k} p_ij², spread over them with per-direction shares π_l (Σ_l w_l π_l = 1):
p_il² ≈ π_l E_i, so γ_l = mean_i [φ_i − 1{R_i>C} (C/R_i) π_l E_i/R_i²], V_l = π_l mean_i φ_i² E_i,
and (m_c)_l = 0 unless a bulk sketch is measured: the bulk part of the clipping bias is not determined
by norms and top projections, so without a sketch it is left out (the bias loss errs low). With a
sketch y_i = Ω (I − U_k U_kᵀ) g_i (Ω: s × d with orthonormal rows spanning the bulk, exact, or
i.i.d. N(0, 1/s) entries, an unbiased estimate with relative error ≈ √(2/s)) the bulk bias energy is
M_b = ‖mean_i φ_i y_i‖² ≈ ‖P_bulk m_c‖², spread like the energy: |(m_c)_l| = √(π_l M_b) (its sign
pattern is not measured; only (m_c)_l² enters the loss).

Neglected (and which way it errs): (i) the off-diagonal of J in the eigenbasis (couples
directions; second order in J_jl/J_jj, no fixed sign); (ii) the spread of the per-example Hessians
H_i about H (their correlation with φ_i changes the drift to mean_i J_i H_i; for examples whose
Hessian acts along their own gradient, as in least squares with H_i = a_i a_iᵀ, a clipped example
has no linear response at all, so the mean-Hessian γ overestimates the drift — pass the measured
``top_curvatures`` / ``top_radial_curvatures`` to use mean_i J_i H_i on the top directions instead);
(iii) the dependence of V_j on e (the multiplicative part of the sampling noise beyond the mean
term, which errs low).

*Mean-field shift* (``shift_sq`` = m² > 0): the clip law is evaluated at gradients g_i + h with an
independent shift h of second moments s_j per direction (Σ_dir s = m², the stationary ‖He‖²),
using ‖g_i + h‖² ≈ R_i² + m² (the cross term g_iᵀh averaged out) and (u_jᵀ(g_i + h))² ≈ p_ij² + s_j:

    φ_i = min(1, C/R̃_i),  R̃_i² = R_i² + m²,  γ_j = mean_i [φ_i − 1{R̃_i>C} (C/R̃_i)(p_ij² + s_j)/R̃_i²],
    V_j = mean_i φ_i² (p_ij² + s_j) − (m_c)_j² − γ_j² s_j.

For the isotropic Gaussian law (:func:`gaussian_clip_response`) the same quantities are evaluated
exactly (noncentral chi-square series of dptheory.clipping), which is the mean-field closure of
dptheory.clipped_dynamics.
Reference: derived here, proved in proofs/spectral_linear_response.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from dptheory import clipping

__all__ = ["ClipResponse", "SortedGradientSums", "empirical_clip_response", "gaussian_clip_response"]

_BLOCK = 512  # rows per block of the sorted prefix sums (a clip norm inside a block costs ≤ 512 rows)


@dataclass(frozen=True, eq=False)
class ClipResponse:
    """The clip law's per-direction response, top-k directions first, then one entry per bulk node.

    ``shrinkage`` γ_j (for directions with λ_j > 0 and measured per-example curvatures it is the
    measured drift divided by λ_j), ``drift`` a_j = γ_j λ_j, ``clipped_mean`` (m_c)_j,
    ``sample_var`` V_j, ``clip_fraction`` P(‖g_i(+h)‖ > C) and ``mean_clip_factor`` mean_i φ_i.
    """

    shrinkage: np.ndarray
    drift: np.ndarray
    clipped_mean: np.ndarray
    sample_var: np.ndarray
    clip_fraction: float
    mean_clip_factor: float


class SortedGradientSums:
    """The per-example statistics sorted by norm, with block prefix sums of every clip-weighted moment.

    The clip weights of example i depend on it only through R_i: φ_i = 1 and κ_i = 0 while R_i ≤ C,
    φ_i = C/R_i and κ_i = C/R_i³ beyond. So for any C every sum Σ_i w(R_i) x_i of the module
    docstring splits at s = #{R_i ≤ C} into Σ_{i<s} x_i + C^p Σ_{i≥s} x_i/R_i^p over the sorted
    examples; the sums over whole blocks of 512 come from prefix sums computed once (O(n k)), the rest
    from at most one block: O(512 k) per clip norm instead of O(n k). Columns: p, p², p/R, p²/R²,
    p²/R³ (k each), 1, 1/R, 1/R², 1/R³, E, E/R², E/R³, with per-example curvatures h, h/R, x/R, and with
    a bulk sketch Ωg, Ωg/R.
    A mean-field shift (R_i² → R_i² + m²) breaks the factorisation; :meth:`reductions` then sums the
    clipped examples directly (the unclipped ones still from the prefix sums). Raises ``ValueError`` if
    only one of ``top_curvatures`` and ``top_radial_curvatures`` is given.

    Example:
        >>> s = SortedGradientSums(norms=np.array([2.0, 1.0]), projections=np.array([[2.0], [1.0]]),
        ...                        bulk_energy=np.zeros(2))
        >>> s.reductions(clip_norm=1.5)["phi_p"].tolist()        # 1·1 + (1.5/2)·2
        [2.5]
    """

    def __init__(
        self,
        *,
        norms: np.ndarray,
        projections: np.ndarray,
        bulk_energy: np.ndarray,
        top_curvatures: np.ndarray | None = None,
        top_radial_curvatures: np.ndarray | None = None,
        bulk_sketch: np.ndarray | None = None,
    ) -> None:
        if (top_curvatures is None) != (top_radial_curvatures is None):
            raise ValueError("top_curvatures and top_radial_curvatures go together (both or neither)")
        order = np.argsort(norms, kind="stable")
        self.norms = np.ascontiguousarray(norms[order])
        self.projections = np.ascontiguousarray(projections[order])
        self.bulk_energy = np.ascontiguousarray(bulk_energy[order])
        self.curvatures: np.ndarray | None = None
        self.radial: np.ndarray | None = None
        if top_curvatures is not None and top_radial_curvatures is not None:
            self.curvatures = np.ascontiguousarray(top_curvatures[order])
            self.radial = np.ascontiguousarray(top_radial_curvatures[order])
        self.sketch = None if bulk_sketch is None else np.ascontiguousarray(bulk_sketch[order])
        self.n, self.k = self.projections.shape
        width = self._columns(0, 0).shape[1]
        starts = np.arange(0, self.n, _BLOCK)
        self.prefix = np.zeros((starts.size + 1, width))
        for b, lo in enumerate(starts.tolist()):  # block sums, then cumulative: one pass, O(block · width) memory
            self.prefix[b + 1] = self.prefix[b] + self._columns(lo, min(lo + _BLOCK, self.n)).sum(axis=0)

    def _columns(self, lo: int, hi: int) -> np.ndarray:
        """The summed columns of rows lo … hi−1 (1/R^p set to 0 where R = 0: such rows are never clipped)."""
        r = self.norms[lo:hi, None]
        with np.errstate(divide="ignore"):
            inv = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
        p = self.projections[lo:hi]
        p2 = p * p
        e = self.bulk_energy[lo:hi, None]
        cols = [
            p,
            p2,
            p * inv,
            p2 * inv**2,
            p2 * inv**3,
            np.ones_like(r),
            inv,
            inv**2,
            inv**3,
            e,
            e * inv**2,
            e * inv**3,
        ]
        if self.curvatures is not None:
            assert self.radial is not None  # set together in __init__
            cols += [self.curvatures[lo:hi], self.curvatures[lo:hi] * inv, self.radial[lo:hi] * inv]
        if self.sketch is not None:
            cols += [self.sketch[lo:hi], self.sketch[lo:hi] * inv]
        return np.concatenate(cols, axis=1)

    def _split(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(Σ over the s smallest norms, Σ over all) of every column."""
        b = s // _BLOCK
        below = self.prefix[b] + (self._columns(b * _BLOCK, s).sum(axis=0) if s > b * _BLOCK else 0.0)
        return below, self.prefix[-1]

    def _unpack(self, v: np.ndarray) -> dict[str, np.ndarray]:
        k = self.k
        names = ("p", "p2", "p_r", "p2_r2", "p2_r3")
        out = {name: v[i * k : (i + 1) * k] for i, name in enumerate(names)}
        for j, name in enumerate(("one", "r1", "r2", "r3", "e", "e_r2", "e_r3")):
            out[name] = v[5 * k + j]
        base = 5 * k + 7
        if self.curvatures is not None:
            out["h"], out["h_r"], out["x_r"] = (
                v[base : base + k],
                v[base + k : base + 2 * k],
                v[base + 2 * k : base + 3 * k],
            )
            base += 3 * k
        if self.sketch is not None:
            w = self.sketch.shape[1]
            out["sk"], out["sk_r"] = v[base : base + w], v[base + w : base + 2 * w]
        return out

    def reductions(self, *, clip_norm: float, shift_sq: float = 0.0) -> dict[str, Any]:
        """Σ_i of φ p, κ p², φ² p², φ, κ, φ², κ E, φ² E (and φ h, 1{R̃>C}(C/R̃) x, φ Ωg), and the clipped count.

        φ_i = min(1, C/R̃_i), κ_i = 1{R̃_i>C} C/R̃_i³, R̃_i² = R_i² + ``shift_sq`` (C = ``clip_norm``).
        """
        c = float(clip_norm)
        if math.isinf(c):
            s = self.n
        elif shift_sq >= c * c:
            s = 0
        else:
            s = int(np.searchsorted(self.norms, math.sqrt(c * c - shift_sq), side="right"))
        below, total = self._split(s)
        u = self._unpack(below)
        out: dict[str, Any] = {"clipped": self.n - s}
        if shift_sq == 0.0 or s == self.n:
            t = self._unpack(total - below)  # the clipped rows' sums of x / R^p
            out.update(
                phi_p=u["p"] + c * t["p_r"] if s < self.n else u["p"],
                kap_p2=c * t["p2_r3"] if s < self.n else np.zeros(self.k),
                phi2_p2=u["p2"] + c * c * t["p2_r2"] if s < self.n else u["p2"],
                phi=u["one"] + (c * t["r1"] if s < self.n else 0.0),
                kap=c * t["r3"] if s < self.n else 0.0,
                phi2=u["one"] + (c * c * t["r2"] if s < self.n else 0.0),
                kap_e=c * t["e_r3"] if s < self.n else 0.0,
                phi2_e=u["e"] + (c * c * t["e_r2"] if s < self.n else 0.0),
            )
            if self.curvatures is not None:
                out["phi_h"] = u["h"] + (c * t["h_r"] if s < self.n else 0.0)
                out["rad_x"] = c * t["x_r"] if s < self.n else np.zeros(self.k)
            if self.sketch is not None:
                out["phi_sk"] = u["sk"] + (c * t["sk_r"] if s < self.n else 0.0)
            return out
        rt = np.sqrt(self.norms[s:] ** 2 + shift_sq)  # clipped rows under the shift: direct sums
        phi, kap = c / rt, c / rt**3
        p = self.projections[s:]
        p2 = p * p
        e = self.bulk_energy[s:]
        out.update(
            phi_p=u["p"] + phi @ p,
            kap_p2=kap @ p2,
            phi2_p2=u["p2"] + (phi * phi) @ p2,
            phi=u["one"] + float(phi.sum()),
            kap=float(kap.sum()),
            phi2=u["one"] + float((phi * phi).sum()),
            kap_e=float(kap @ e),
            phi2_e=u["e"] + float((phi * phi) @ e),
        )
        if self.curvatures is not None:
            assert self.radial is not None  # set together in __init__
            out["phi_h"] = u["h"] + phi @ self.curvatures[s:]
            out["rad_x"] = phi @ self.radial[s:]
        if self.sketch is not None:
            out["phi_sk"] = u["sk"] + phi @ self.sketch[s:]
        return out


def empirical_clip_response(
    *,
    sums: SortedGradientSums,
    bulk_shares: np.ndarray,
    curvatures: np.ndarray,
    clip_norm: float,
    shift_sq: float = 0.0,
    direction_shift_sq: np.ndarray | None = None,
    bulk_weights: np.ndarray | None = None,
) -> ClipResponse:
    """Per-direction shrinkage, clipped mean and per-example variance of the empirical clip law.

    Formulas in the module docstring, with the sums of ``sums`` (a :class:`SortedGradientSums` of the
    n examples' norms R_i, top projections p_ij, bulk energies E_i and optional per-example
    curvatures), ``bulk_shares`` π_l (m,), ``curvatures`` λ (k + m,), ``clip_norm`` C (``inf``: no
    clipping), ``shift_sq`` m² with ``direction_shift_sq`` s (k + m,) (None: zeros, the linear
    response at w*), ``bulk_weights`` w_l (m,) (for the clip fraction under a shift). With per-example
    curvatures (u_jᵀH_iu_j and (u_jᵀĝ_i)(ĝ_iᵀH_iu_j)) the top drift is their clip-weighted mean
    mean_i [φ_i u_jᵀH_iu_j − 1{R_i>C}(C/R_i)(u_jᵀĝ_i)(ĝ_iᵀH_iu_j)], the diagonal of mean_i J_i H_i.
    The clip fraction under a shift is the Gaussian smoothing mean_i Φ((R_i² + m² − C²)/(2σ_i)),
    σ_i² = Σ_dir p_i,dir² s_dir (the variance of g_iᵀh). Cost: O(512 k) at m = 0, one pass over the
    clipped examples under a shift. Reference: derived here, proved in proofs/spectral_linear_response.py.

    Example:
        >>> p = np.array([[1.0], [-1.0]])
        >>> sums = SortedGradientSums(norms=np.array([1.0, 1.0]), projections=p, bulk_energy=np.zeros(2))
        >>> r = empirical_clip_response(sums=sums, bulk_shares=np.zeros(0), curvatures=np.array([1.0]), clip_norm=0.5)
        >>> r.shrinkage.tolist(), r.sample_var.tolist()      # clipped along their own direction: no response
        ([0.0], [0.25])
    """
    n, k = sums.n, sums.k
    c = float(clip_norm)
    s = np.zeros(curvatures.shape[0]) if direction_shift_sq is None else np.asarray(direction_shift_sq, float)
    s_top, s_bulk = s[:k], s[k:]
    red = sums.reductions(clip_norm=c, shift_sq=shift_sq)
    phi_bar, kap_bar, phi2_bar = red["phi"] / n, red["kap"] / n, red["phi2"] / n
    mean_top = red["phi_p"] / n
    gamma_top = phi_bar - red["kap_p2"] / n - kap_bar * s_top
    var_top = red["phi2_p2"] / n + phi2_bar * s_top - mean_top**2 - gamma_top**2 * s_top
    lam_top = curvatures[:k]
    drift_top = gamma_top * lam_top
    if "phi_h" in red:
        drift_top = (red["phi_h"] - red["rad_x"]) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma_top = np.where(lam_top > 0, drift_top / np.where(lam_top > 0, lam_top, 1.0), gamma_top)
    gamma_bulk = phi_bar - bulk_shares * red["kap_e"] / n - kap_bar * s_bulk
    mean_bulk = np.zeros(s_bulk.shape[0])
    if "phi_sk" in red:  # ‖P_bulk m_c‖² from the sketch, spread like the bulk energy (magnitudes: signs unknown)
        mean_bulk = np.sqrt(bulk_shares * float(np.sum((red["phi_sk"] / n) ** 2)))
    var_bulk = bulk_shares * red["phi2_e"] / n + (phi2_bar - gamma_bulk**2) * s_bulk - mean_bulk**2
    if math.isinf(c):
        fraction = 0.0
    elif shift_sq > 0 and np.any(s > 0):
        w = np.ones(0) if bulk_weights is None else bulk_weights
        r2 = sums.norms**2 + shift_sq
        p2 = sums.projections**2
        sig = np.sqrt(np.maximum(p2 @ s_top + sums.bulk_energy * float(np.sum(w * bulk_shares * s_bulk)), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            arg = np.where(sig > 0, (r2 - c * c) / (2.0 * np.where(sig > 0, sig, 1.0)), np.sign(r2 - c * c) * np.inf)
        fraction = float(np.mean(special.ndtr(arg)))
    else:
        fraction = red["clipped"] / n
    return ClipResponse(
        shrinkage=np.concatenate([gamma_top, gamma_bulk]),
        drift=np.concatenate([drift_top, gamma_bulk * curvatures[k:]]),
        clipped_mean=np.concatenate([mean_top, mean_bulk]),
        sample_var=np.maximum(np.concatenate([var_top, var_bulk]), 0.0),
        clip_fraction=float(fraction),
        mean_clip_factor=float(phi_bar),
    )


def gaussian_clip_response(
    *, noise_dim: int, std: float, in_support: np.ndarray, curvatures: np.ndarray, clip_norm: float, shift_sq: float
) -> ClipResponse:
    """Exact clip response of isotropic Gaussian per-sample gradients g = H e + s ζ, ζ ~ N(0, I_n).

    At a shift ‖He‖ = m (``shift_sq`` = m²), by rotation invariance E clip_C(He + sζ) = γ He with
    γ = ``clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=C)`` on the n
    directions the noise spans (``in_support``), and the plain mean clip factor E[min(1, C/‖g‖)]
    (``clipping.gaussian_mean_clip_factor``) on directions outside it (their gradient is
    deterministic, no Stein correction); the clipped per-sample covariance is spread evenly:
    V = (E‖clip_C g‖² − γ² m²)/n inside the support, 0 outside; m_c = 0 (symmetric law); clip
    fraction ``clipping.clip_probability``. At m = 0, γ is the linear-response shrinkage α₀
    (``clipping.linear_response_shrinkage``). n = ``noise_dim``, s = ``std``, λ = ``curvatures``.
    This is the per-step model of dptheory.clipped_dynamics (mean-field closure) in the spectral
    basis. Reference: Stein/Bock identity (Bock 1975, Ann. Stat. 3(1), Theorem A) as in dptheory.clipping;
    proofs/clipped_gaussian_mean.py and proofs/linear_response_shrinkage.py.

    Example:
        >>> r = gaussian_clip_response(noise_dim=100, std=1.0, in_support=np.array([True]),
        ...                            curvatures=np.array([1.0]), clip_norm=1.0, shift_sq=0.0)
        >>> round(float(r.shrinkage[0]), 6) == round(clipping.linear_response_shrinkage(dim=100, std=1.0, clip_norm=1.0), 6)
        True
    """
    c, m = float(clip_norm), math.sqrt(max(shift_sq, 0.0))
    if math.isinf(c):
        gamma, out_gamma, var, frac = 1.0, 1.0, std * std, 0.0
    else:
        gamma = float(clipping.clipped_gaussian_mean_factor(dim=noise_dim, mean_norm=m, std=std, clip_norm=c))
        second = float(clipping.clipped_gaussian_second_moment(dim=noise_dim, mean_norm=m, std=std, clip_norm=c))
        var = max(second - gamma * gamma * shift_sq, 0.0) / noise_dim
        out_gamma = gamma
        if not np.all(in_support):
            out_gamma = float(clipping.gaussian_mean_clip_factor(dim=noise_dim, mean_norm=m, std=std, clip_norm=c))
        frac = float(clipping.clip_probability(dim=noise_dim, mean_norm=m, std=std, clip_norm=c))
    shrink = np.where(in_support, gamma, out_gamma)
    mean_factor = 1.0
    if not math.isinf(c):
        mean_factor = float(clipping.gaussian_mean_clip_factor(dim=noise_dim, mean_norm=m, std=std, clip_norm=c))
    return ClipResponse(
        shrinkage=shrink,
        drift=shrink * curvatures,
        clipped_mean=np.zeros(curvatures.shape[0]),
        sample_var=np.where(in_support, var, 0.0),
        clip_fraction=frac,
        mean_clip_factor=mean_factor,
    )
