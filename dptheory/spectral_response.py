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
and (m_c)_l = 0: the bulk part of the clipping bias is not determined by norms and top projections
(its sign pattern is unknown), so it is left out (the bias loss errs low).

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

import numpy as np
from scipy import special

from dptheory import clipping

__all__ = ["ClipResponse", "empirical_clip_response", "gaussian_clip_response"]


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


def empirical_clip_response(
    *,
    norms: np.ndarray,
    projections: np.ndarray,
    projections_sq: np.ndarray,
    bulk_energy: np.ndarray,
    bulk_shares: np.ndarray,
    curvatures: np.ndarray,
    clip_norm: float,
    shift_sq: float = 0.0,
    direction_shift_sq: np.ndarray | None = None,
    bulk_weights: np.ndarray | None = None,
    top_curvatures: np.ndarray | None = None,
    top_radial_curvatures: np.ndarray | None = None,
) -> ClipResponse:
    """Per-direction shrinkage, clipped mean and per-example variance of the empirical clip law.

    Formulas in the module docstring. Arguments (n examples, k top directions, m bulk nodes):
    ``norms`` R_i (n,), ``projections`` p_ij (n, k), ``projections_sq`` p_ij² (n, k),
    ``bulk_energy`` E_i (n,), ``bulk_shares`` π_l (m,), ``curvatures`` λ (k + m,), ``clip_norm`` C
    (``inf``: no clipping), ``shift_sq`` m² with ``direction_shift_sq`` s (k + m,) (None: zeros, the
    linear response at w*), ``bulk_weights`` w_l (m,) (only for the clip fraction under a shift),
    ``top_curvatures`` u_jᵀH_iu_j and ``top_radial_curvatures`` (u_jᵀĝ_i)(ĝ_iᵀH_iu_j) (n, k) — when
    given, the top drift is mean_i [φ_i u_jᵀH_iu_j − 1{R_i>C}(C/R_i)(u_jᵀĝ_i)(ĝ_iᵀH_iu_j)], the
    diagonal of mean_i J_i H_i. The clip fraction under a shift is the Gaussian smoothing
    mean_i Φ((R_i² + m² − C²)/(2 σ_i)), σ_i² = Σ_dir p_i,dir² s_dir (the variance of g_iᵀh).
    Cost: three (n × k) matrix-vector products. Reference: derived here, proved in
    proofs/spectral_linear_response.py.

    Example:
        >>> p = np.array([[1.0], [-1.0]])
        >>> r = empirical_clip_response(norms=np.array([1.0, 1.0]), projections=p, projections_sq=p**2,
        ...     bulk_energy=np.zeros(2), bulk_shares=np.zeros(0), curvatures=np.array([1.0]), clip_norm=0.5)
        >>> r.shrinkage.tolist(), r.sample_var.tolist()      # clipped along their own direction: no response
        ([0.0], [0.25])
    """
    n, k = projections.shape
    c = float(clip_norm)
    s = np.zeros(curvatures.shape[0]) if direction_shift_sq is None else np.asarray(direction_shift_sq, float)
    s_top, s_bulk = s[:k], s[k:]
    r2 = norms * norms + shift_sq
    if math.isinf(c):
        phi = np.ones(n)
        kap = np.zeros(n)
        clipped = np.zeros(n, bool)
    else:
        rt = np.sqrt(r2)
        clipped = rt > c
        safe = np.where(clipped, rt, 1.0)
        phi = np.where(clipped, c / safe, 1.0)
        kap = np.where(clipped, c / safe**3, 0.0)  # 1{R>C} C/R³: (C/R)(x²/R²) = κ x²
    phi_bar, kap_bar, phi2 = float(phi.mean()), float(kap.mean()), phi * phi
    phi2_bar = float(phi2.mean())
    mean_top = phi @ projections / n
    gamma_top = phi_bar - kap @ projections_sq / n - kap_bar * s_top
    var_top = phi2 @ projections_sq / n + phi2_bar * s_top - mean_top**2 - gamma_top**2 * s_top
    lam_top = curvatures[:k]
    drift_top = gamma_top * lam_top
    if top_curvatures is not None:
        radial = np.where(clipped, phi, 0.0)  # 1{R>C} C/R
        drift_top = phi @ top_curvatures / n - radial @ top_radial_curvatures / n
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma_top = np.where(lam_top > 0, drift_top / np.where(lam_top > 0, lam_top, 1.0), gamma_top)
    e_clip = float(kap @ bulk_energy) / n
    e_phi2 = float(phi2 @ bulk_energy) / n
    gamma_bulk = phi_bar - bulk_shares * e_clip - kap_bar * s_bulk
    var_bulk = bulk_shares * e_phi2 + (phi2_bar - gamma_bulk**2) * s_bulk
    if math.isinf(c):
        fraction = 0.0
    elif shift_sq > 0 and np.any(s > 0):
        w = np.ones(0) if bulk_weights is None else bulk_weights
        sig2 = projections_sq @ s_top + bulk_energy * float(np.sum(w * bulk_shares * s_bulk))
        sig = np.sqrt(np.maximum(sig2, 0.0))
        arg = np.where(sig > 0, (r2 - c * c) / (2.0 * np.where(sig > 0, sig, 1.0)), np.sign(r2 - c * c) * np.inf)
        fraction = float(np.mean(special.ndtr(arg)))
    else:
        fraction = float(np.mean(clipped))
    shrink = np.concatenate([gamma_top, gamma_bulk])
    return ClipResponse(
        shrinkage=shrink,
        drift=np.concatenate([drift_top, gamma_bulk * curvatures[k:]]),
        clipped_mean=np.concatenate([mean_top, np.zeros(s_bulk.shape[0])]),
        sample_var=np.maximum(np.concatenate([var_top, var_bulk]), 0.0),
        clip_fraction=fraction,
        mean_clip_factor=phi_bar,
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
    basis. Reference: REFERENCE-free: dptheory.clipping (Stein/Bock identity), proofs/clipped_gaussian_mean.py.

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
