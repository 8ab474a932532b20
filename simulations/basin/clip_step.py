"""The per-sample clip-and-accumulate step shared by every basin engine (numba).

The full kernel (``kernels``), the exact reduced engine (``reduced``) and the finite-sum
least-squares engine (``least_squares``) all clip a per-sample gradient g by the same rule
min(1, C/‖g‖)·g, add the scaled noise, update e_K ← e_K − η/B (Σ clip(g_i) + ν ξ_K) and write the
same Trace record; this module is that shared step, so the engines cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["apply_update", "bias_norm", "finish_sample", "record_metrics"]


@njit(cache=True, fastmath=False)
def record_metrics(
    rep,
    rec,
    energy,
    curved,
    flat,
    lam_flat,
    heldout_kappa,
    n_clipped,
    sum_factor,
    bn,
    out_train,
    out_held,
    out_curved,
    out_flat,
    out_clipfrac,
    out_meanf,
):
    """Write one record of the Trace metrics (shared by the full kernel and the reduced engine).

    train = ½Σλ_i e_i² + ½λ_flat‖e_flat‖², held-out = train + ½κ‖e_flat‖²; clip statistics are NaN
    for an empty (Poisson) batch.
    """
    train = energy + 0.5 * lam_flat * flat
    out_train[rep, rec] = train
    out_held[rep, rec] = train + 0.5 * heldout_kappa * flat
    out_curved[rep, rec] = curved
    out_flat[rep, rec] = flat
    if bn > 0:
        out_clipfrac[rep, rec] = n_clipped / bn
        out_meanf[rep, rec] = sum_factor / bn
    else:
        out_clipfrac[rep, rec] = np.nan
        out_meanf[rep, rec] = np.nan


@njit(cache=True, fastmath=False)
def finish_sample(g, k, nrm2, clip, acc, raw, track):
    """Add min(1, C/‖g‖)·g to acc (and g to raw when tracking); return (clipped?, factor)."""
    nrm = math.sqrt(nrm2)
    f = 1.0
    clipped = nrm > clip
    if clipped:
        f = clip / nrm
    for jj in range(k):
        acc[jj] += f * g[jj]
    if track:
        for jj in range(k):
            raw[jj] += g[jj]
    return clipped, f


@njit(cache=True, fastmath=False)
def apply_update(e, kept, acc, noise_sum, lr, batch_size):
    """e_K ← e_K − η/B (acc + noise_sum) (noise_sum = ν ξ_K, already scaled)."""
    scale = lr / batch_size
    for jj in range(kept.shape[0]):
        e[kept[jj]] -= scale * (acc[jj] + noise_sum[jj])


@njit(cache=True, fastmath=False)
def bias_norm(acc, raw, k, batch_size):
    """‖(1/B) Σ clip(g_i) − (1/B) Σ g_i‖."""
    s = 0.0
    for jj in range(k):
        v = acc[jj] - raw[jj]
        s += v * v
    return math.sqrt(s) / batch_size
