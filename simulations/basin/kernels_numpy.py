"""Plain-numpy twins of the numba kernels in ``simulations/basin/kernels.py`` (slow, obviously correct).

Same step, same symbols (see ``simulations/basin/kernels.py``):

    g_i = (H e)_K + s ζ_i,K,   e_K ← e_K − η (1/B) [ Σ_{i<B_t} min(1, C/‖g_i‖) g_i + ν ξ_K ],
    H = λ_flat I + V diag(λ − λ_flat) Vᵀ.

:func:`full_step` is written with whole-array numpy operations so that it shares no code with the
kernel; tests compare the two on identical noise. :func:`run_streaming` is the "numpy" engine: the
same Monte Carlo as the kernel loop, one ``np.random.Generator`` per replica.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["full_step", "hessian_times", "run_streaming"]


def hessian_times(error, curvatures, flat_curvature=0.0, basis=None):
    """H e for H = λ_flat I + V diag(λ − λ_flat) Vᵀ (V = [I_r; 0] when ``basis`` is None).

    Example:
        >>> hessian_times(np.array([1.0, 2.0, 3.0]), (2.0,), 0.5).tolist()
        [2.0, 1.0, 1.5]
    """
    e = np.asarray(error, dtype=float)
    lam = np.asarray(curvatures, dtype=float)
    if basis is None:
        v = np.eye(e.shape[0], lam.shape[0])
    else:
        v = np.asarray(basis, dtype=float)
    return flat_curvature * e + v @ ((lam - flat_curvature) * (v.T @ e))


def full_step(
    *,
    error,
    zeta,
    xi,
    batch_n,
    curvatures,
    flat_curvature=0.0,
    basis=None,
    mask=None,
    sample_std,
    clip_norm=math.inf,
    noise_std=0.0,
    lr,
    batch_size,
):
    """Numpy twin of ``simulations.basin.kernels.full_step`` (same arguments, same returns).

    Example:
        >>> e, n, f, b = full_step(error=np.ones(3), zeta=np.zeros((2, 3)), xi=np.zeros(3), batch_n=2,
        ...                        curvatures=(1.0,), sample_std=1.0, lr=0.5, batch_size=2)
        >>> e.tolist()
        [0.5, 1.0, 1.0]
    """
    e = np.array(error, dtype=float)
    d = e.shape[0]
    keep = np.ones(d, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    he = hessian_times(e, curvatures, flat_curvature, basis)
    g = (he + sample_std * np.asarray(zeta, dtype=float)[:batch_n])[:, keep]  # (B_t, k)
    norms = np.sqrt(np.sum(g * g, axis=1))
    clipped = norms > clip_norm
    factor = np.where(clipped, clip_norm / np.where(clipped, norms, 1.0), 1.0)
    clipped_sum = factor @ g
    raw_sum = g.sum(axis=0)
    bias = float(np.linalg.norm(clipped_sum - raw_sum)) / batch_size
    e[keep] -= lr / batch_size * (clipped_sum + noise_std * np.asarray(xi, dtype=float)[keep])
    return e, int(clipped.sum()), float(factor.sum()), bias


def run_streaming(
    e0,
    *,
    curvatures,
    flat_curvature,
    basis,
    mask,
    sample_std,
    basin_spread,
    batch_size,
    poisson,
    lr_t,
    clip_t,
    nu_t,
    disp_step,
    disp_vec,
    rec_flag,
    heldout_kappa,
    seeds,
):
    """The "numpy" engine: the kernel's production loop written with :func:`full_step`.

    ``seeds`` is a list of ``np.random.SeedSequence`` (one per replica). Returns a dict of
    (R, n_records) arrays with the keys of ``simulations.basin.engine.Trace``.
    """
    lam = np.asarray(curvatures, dtype=float)
    n_rep, d = len(seeds), e0.shape[1]
    r = lam.shape[0]
    v = np.eye(d, r) if basis is None else np.asarray(basis, dtype=float)
    n_rec = int(np.sum(rec_flag))
    keys = (
        "train_loss",
        "heldout_loss",
        "curved_err_sq",
        "flat_err_sq",
        "clip_fraction",
        "mean_clip_factor",
        "clip_bias_norm",
    )
    out = {key: np.empty((n_rep, n_rec)) for key in keys}
    for rep in range(n_rep):
        rng = np.random.default_rng(seeds[rep])
        e = np.array(e0[min(rep, len(e0) - 1)], dtype=float)
        rec = 0
        for t in range(len(lr_t)):
            if t == disp_step:
                keep = np.ones(d, bool) if mask is None else mask
                e[keep] += disp_vec[keep]
            bn = int(rng.poisson(batch_size)) if poisson else batch_size
            if basin_spread:
                zeta = rng.standard_normal((bn, r)) @ v.T
            else:
                zeta = rng.standard_normal((bn, d))
            xi = rng.standard_normal(d) if nu_t[t] > 0 else np.zeros(d)
            e, n_clip, sum_f, bias = full_step(
                error=e,
                zeta=zeta,
                xi=xi,
                batch_n=bn,
                curvatures=lam,
                flat_curvature=flat_curvature,
                basis=basis,
                mask=mask,
                sample_std=sample_std,
                clip_norm=clip_t[t],
                noise_std=nu_t[t],
                lr=lr_t[t],
                batch_size=batch_size,
            )
            if rec_flag[t]:
                p = v.T @ e
                flat = float(np.sum((e - v @ p) ** 2))
                train = 0.5 * float(np.sum(lam * p * p)) + 0.5 * flat_curvature * flat
                out["train_loss"][rep, rec] = train
                out["heldout_loss"][rep, rec] = train + 0.5 * heldout_kappa * flat
                out["curved_err_sq"][rep, rec] = float(p @ p)
                out["flat_err_sq"][rep, rec] = flat
                out["clip_fraction"][rep, rec] = n_clip / bn if bn > 0 else np.nan
                out["mean_clip_factor"][rep, rec] = sum_f / bn if bn > 0 else np.nan
                out["clip_bias_norm"][rep, rec] = bias
                rec += 1
    return out
