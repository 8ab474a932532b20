"""Numba kernels for exact per-sample DP-SGD on a (pruned, rotated) low-rank quadratic basin.

One step (``dptheory/records.py``; Abadi et al. 2016, arXiv 1607.00133v2 Alg. 1) on the kept
coordinates K of the error e = w − w* ∈ R^d:

    g_i = (H e)_K + s ζ_i,K,                 i = 1 … B_t,
    e_K ← e_K − η (1/B) [ Σ_i min(1, C/‖g_i‖) g_i + ν ξ_K ],

with H = λ_flat I + V diag(λ − λ_flat) Vᵀ for an orthonormal basis V ∈ R^{d×r}
of the curved directions (``basis_t`` = Vᵀ, shape (r, d); an empty (0, d) array means the
axis-aligned fast path V = [I_r; 0]). Pruned coordinates (not in K, given by ``kept`` indices) stay
fixed (w_j = 0 ⇒ e_j = −w*_j): they receive no update and no noise, and the per-sample norm ‖g_i‖
is taken over K only. B_t = B (fixed batches) or B_t ~ Poisson(B) (Poisson sampling), and the sum
is always divided by the expected batch size B (Opacus semantics). C = ∞ means no clipping.

Per-sample deviations: ``spread="ambient"`` ζ_i ~ N(0, I_d); ``spread="basin"`` ζ_i = V z_i,
z_i ~ N(0, I_r) (supported on the curved directions only).

Two entry points share the same per-sample code (``finish_sample`` and ``apply_update``):

* :func:`full_step` takes the noise as arguments (ζ of shape (B_max, d), ξ of shape (d,), the batch
  size B_t) so that tests compare it with the plain-numpy twin in ``simulations/basin/kernels_numpy.py``
  on identical noise;
* :func:`run_streaming` is the production loop: replicas in parallel (``prange``), each replica
  with its own random streams seeded from ``np.random.SeedSequence.spawn``, so a replica — run wholly
  by one thread — is reproducible regardless of scheduling and of the number of replicas. It draws
  each ζ_i into a reused per-thread buffer while accumulating ‖g_i‖², and allocates nothing inside
  the step loop. H e costs O(d r) once per step, shared by all samples.

Random numbers. Gaussians come from a numba implementation of the 256-layer ziggurat of Marsaglia &
Tsang (2000, J. Stat. Softw. 5(8)), in the double-precision form numpy uses (52-bit mantissa, exact
tail by Marsaglia's exponential method, exact wedges by rejection), driven by xoshiro256++ (Blackman
& Vigna 2021, ACM TOMS 47(4)) with a per-replica state array (``simulations/basin/rng.py``; faster
than numba's own ``np.random.standard_normal``, docs/findings-engines.md). The ziggurat is an exact
rejection sampler (no approximation of the density); its only error is that the 256 layer areas are
equal only to the precision of the published constants r = 3.6541528853610088, v = 4.92867323399e-3
(~1e-11 relative), far below any Monte Carlo resolution. Tests check it by KS, the tail frequency and the tail law.
Rare draws (Poisson batch sizes) use numba's ``np.random``, reseeded per replica inside the
``prange`` body (numba's generator state is per thread).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from simulations.basin.clip_step import apply_update, bias_norm, finish_sample, record_metrics
from simulations.basin.rng import normal

__all__ = ["as_basis_t", "as_kept", "basin_losses", "full_step", "run_streaming"]


@njit(cache=True, fastmath=False)
def _hessian_apply(e, lam, lam_flat, basis_t, out):
    """out ← H e with H = λ_flat I + V diag(λ − λ_flat) Vᵀ, basis_t = Vᵀ (axis-aligned when empty)."""
    d = e.shape[0]
    r = lam.shape[0]
    if basis_t.shape[0] == 0:
        for j in range(r):
            out[j] = lam[j] * e[j]
        for j in range(r, d):
            out[j] = lam_flat * e[j]
    else:
        for j in range(d):
            out[j] = lam_flat * e[j]
        for k in range(r):
            p = 0.0
            for j in range(d):
                p += basis_t[k, j] * e[j]
            p *= lam[k] - lam_flat
            for j in range(d):
                out[j] += basis_t[k, j] * p


@njit(cache=True, fastmath=False)
def basin_losses(e, lam, lam_flat, basis_t):
    """(½ Σ λ_i (Vᵀe)_i², ‖Vᵀe‖², ‖e − V Vᵀ e‖²): curved energy, curved and flat squared errors.

    The flat part is formed explicitly (not as ‖e‖² − ‖Vᵀe‖²) so that it does not cancel.
    """
    d = e.shape[0]
    r = lam.shape[0]
    energy = 0.0
    curved = 0.0
    flat = 0.0
    if basis_t.shape[0] == 0:
        for j in range(r):
            curved += e[j] * e[j]
            energy += 0.5 * lam[j] * e[j] * e[j]
        for j in range(r, d):
            flat += e[j] * e[j]
    else:
        p = np.empty(r)
        for k in range(r):
            acc = 0.0
            for j in range(d):
                acc += basis_t[k, j] * e[j]
            p[k] = acc
            curved += acc * acc
            energy += 0.5 * lam[k] * acc * acc
        for j in range(d):
            v = e[j]
            for k in range(r):
                v -= basis_t[k, j] * p[k]
            flat += v * v
    return energy, curved, flat


@njit(cache=True, fastmath=False)
def _step_given_noise(e, zeta, xi, batch_n, lam, lam_flat, basis_t, kept, s, clip, nu, lr, batch_size):
    d = e.shape[0]
    k = kept.shape[0]
    he = np.empty(d)
    _hessian_apply(e, lam, lam_flat, basis_t, he)
    acc = np.zeros(k)
    raw = np.zeros(k)
    g = np.empty(k)
    n_clipped = 0
    sum_factor = 0.0
    for i in range(batch_n):
        nrm2 = 0.0
        for jj in range(k):
            v = he[kept[jj]] + s * zeta[i, kept[jj]]
            g[jj] = v
            nrm2 += v * v
        clipped, f = finish_sample(g, k, nrm2, clip, acc, raw, True)
        n_clipped += clipped
        sum_factor += f
    noise = np.empty(k)
    for jj in range(k):
        noise[jj] = nu * xi[kept[jj]]
    bias = bias_norm(acc, raw, k, batch_size)
    out = e.copy()
    apply_update(out, kept, acc, noise, lr, batch_size)
    return out, n_clipped, sum_factor, bias


def as_basis_t(basis, dim):
    if basis is None:
        return np.zeros((0, dim))
    v = np.ascontiguousarray(np.asarray(basis, dtype=float).T)
    return v


def as_kept(mask, dim):
    if mask is None:
        return np.arange(dim, dtype=np.int64)
    m = np.asarray(mask, dtype=bool)
    if m.shape != (dim,):
        raise ValueError(f"mask must have shape ({dim},), got {m.shape}")
    return np.flatnonzero(m).astype(np.int64)


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
    """One exact DP-SGD step with the noise given (numba; the twin is ``kernels_numpy.full_step``).

    e_K ← e_K − η/B [Σ_{i<B_t} clip_C((H e)_K + s ζ_{i,K}) + ν ξ_K]   (module docstring).

    Args: ``error`` e (d,); ``zeta`` ζ (B_max, d), rows ≥ ``batch_n`` = B_t ignored; ``xi`` ξ (d,);
    ``curvatures`` λ (r,); ``flat_curvature`` λ_flat; ``basis`` V (d, r) orthonormal or None
    (axis-aligned); ``mask`` boolean keep-mask (d,) or None; ``sample_std`` s; ``clip_norm`` C
    (inf: no clipping); ``noise_std`` ν; ``lr`` η; ``batch_size`` B (the divisor).

    Returns (new error, number of clipped samples, Σ_i min(1, C/‖g_i‖), clip-bias norm
    ‖(1/B)Σ(clip(g_i) − g_i)‖).

    Example:
        >>> import numpy as np
        >>> e, n, f, b = full_step(error=np.ones(3), zeta=np.zeros((2, 3)), xi=np.zeros(3), batch_n=2,
        ...                        curvatures=(1.0,), sample_std=1.0, lr=0.5, batch_size=2)
        >>> e.tolist()
        [0.5, 1.0, 1.0]
    """
    e = np.ascontiguousarray(error, dtype=float)
    d = e.shape[0]
    lam = np.asarray(curvatures, dtype=float)
    zeta = np.ascontiguousarray(zeta, dtype=float)
    xi = np.ascontiguousarray(xi, dtype=float)
    if zeta.ndim != 2 or zeta.shape[1] != d or zeta.shape[0] < batch_n:
        raise ValueError(f"zeta must have shape (>= batch_n, {d}), got {zeta.shape}")
    if xi.shape != (d,):
        raise ValueError(f"xi must have shape ({d},), got {xi.shape}")
    return _step_given_noise(
        e,
        zeta,
        xi,
        int(batch_n),
        lam,
        float(flat_curvature),
        as_basis_t(basis, d),
        as_kept(mask, d),
        float(sample_std),
        float(clip_norm),
        float(noise_std),
        float(lr),
        float(batch_size),
    )


@njit(cache=True, fastmath=False)
def _streaming_replica(
    rep,
    e0,
    lam,
    lam_flat,
    basis_t,
    kept,
    s,
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
    states,
    out_train,
    out_held,
    out_curved,
    out_flat,
    out_clipfrac,
    out_meanf,
    out_bias,
):
    """Replica ``rep`` of :func:`run_streaming` (serial; the parallel loop only dispatches replicas)."""
    d = e0.shape[1]
    k = kept.shape[0]
    r = lam.shape[0]
    n_steps = lr_t.shape[0]
    axis = basis_t.shape[0] == 0
    np.random.seed(states[rep, 4])
    st = states[rep, :4].copy()
    e = e0[0].copy() if e0.shape[0] == 1 else e0[rep].copy()  # (1, d): all replicas start alike
    he = np.empty(d)
    hk = np.empty(k)
    g = np.empty(k)
    acc = np.empty(k)
    raw = np.empty(k)
    noise = np.empty(k)
    z = np.empty(r)
    rec = 0
    for t in range(n_steps):
        if t == disp_step:
            for jj in range(k):
                e[kept[jj]] += disp_vec[kept[jj]]
        _hessian_apply(e, lam, lam_flat, basis_t, he)
        for jj in range(k):
            hk[jj] = he[kept[jj]]
            acc[jj] = 0.0
        track = rec_flag[t]
        if track:
            for jj in range(k):
                raw[jj] = 0.0
        bn = batch_size
        if poisson:
            bn = np.random.poisson(float(batch_size))
        clip = clip_t[t]
        n_clipped = 0
        sum_factor = 0.0
        for _ in range(bn):
            nrm2 = 0.0
            if not basin_spread:
                for jj in range(k):
                    v = hk[jj] + s * normal(st)
                    g[jj] = v
                    nrm2 += v * v
            elif axis:
                for jj in range(k):
                    if kept[jj] < r:
                        v = hk[jj] + s * normal(st)
                    else:
                        v = hk[jj]
                    g[jj] = v
                    nrm2 += v * v
            else:
                for q in range(r):
                    z[q] = normal(st)
                for jj in range(k):
                    zz = 0.0
                    for q in range(r):
                        zz += basis_t[q, kept[jj]] * z[q]
                    v = hk[jj] + s * zz
                    g[jj] = v
                    nrm2 += v * v
            clipped, f = finish_sample(g, k, nrm2, clip, acc, raw, track)
            n_clipped += clipped
            sum_factor += f
        nu = nu_t[t]
        if nu > 0.0:
            for jj in range(k):
                noise[jj] = nu * normal(st)
        else:
            for jj in range(k):
                noise[jj] = 0.0
        if track:
            out_bias[rep, rec] = bias_norm(acc, raw, k, batch_size)
        apply_update(e, kept, acc, noise, lr_t[t], batch_size)
        if track:
            energy, curved, flat = basin_losses(e, lam, lam_flat, basis_t)
            record_metrics(
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
            )
            rec += 1


@njit(parallel=True, cache=True, fastmath=False)
def run_streaming(
    e0,
    lam,
    lam_flat,
    basis_t,
    kept,
    s,
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
    states,
    out_train,
    out_held,
    out_curved,
    out_flat,
    out_clipfrac,
    out_meanf,
    out_bias,
):
    """Production loop: R replicas × T steps of DP-SGD, metrics written at steps with rec_flag.

    ``e0`` (R, d) initial errors, or (1, d) shared by all replicas; per-step arrays ``lr_t`` η_t,
    ``clip_t`` C_t (inf: unclipped), ``nu_t`` ν_t (phase switching and schedules are just these
    arrays); ``disp_vec`` (d,) is added to e before step ``disp_step`` (−1: never); ``states``
    (R, 5) from :func:`replica_states`, one row per replica. Outputs have shape (R, n_records).
    """
    for rep in prange(states.shape[0]):
        _streaming_replica(
            rep,
            e0,
            lam,
            lam_flat,
            basis_t,
            kept,
            s,
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
            states,
            out_train,
            out_held,
            out_curved,
            out_flat,
            out_clipfrac,
            out_meanf,
            out_bias,
        )


def kernel_threads() -> int:
    """Number of numba threads the production loops use."""
    return numba.get_num_threads()
