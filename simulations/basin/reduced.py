r"""Exact reduced Monte Carlo engine for the streaming basin: cost independent of the dimension d.

Derived here; the algebra and the distributional identities are checked in
``proofs/reduced_engine.py``, and ``tests/test_reduced_engine.py`` compares this engine with the
d-dimensional kernel by two-sample tests.

Setting (``dptheory/records.py``): e = (x, f), x ∈ R^r the curved error, f ∈ R^m the flat error,
m = d − r. One DP-SGD step with per-sample gradients g_i = (λ⊙x + s ζ_i^c, λ_f f + s_f ζ_i^f),
s_f = s (``spread="ambient"``) or 0 (``"basin"``), clip factors c_i = min(1, C/‖g_i‖), and

    x' = x − k [Σ_i c_i (λ⊙x + s ζ_i^c) + ν ξ^c],   f' = f − k [Σ_i c_i (λ_f f + s_f ζ_i^f) + ν ξ^f],

k = η/B. All of ζ_i^c, ζ_i^f, ξ^c, ξ^f are fresh standard Gaussians independent of (x, f).

**1. Markov reduction.** Let Q be any orthogonal map of R^m. (Q ζ_i^f, Q ξ^f) has the law of
(ζ_i^f, ξ^f), and the step commutes with Q: replacing f by Q f maps (x', f') to (x', Q f') in law.
Hence the conditional law of (x', ‖f'‖) given (x, f) depends on f only through ρ = ‖f‖, and
(x_t, ρ_t) is itself a Markov chain. Every recorded metric (losses, ‖x‖², ρ², clip statistics) is a
function of (x_t, ρ_t) and of the step's noise; so it suffices to simulate (x, ρ) exactly.

**2. One step of (x, ρ).** Write û = f/ρ (any unit vector if ρ = 0) and split each fresh flat
vector along û and its orthogonal complement (dimension n = m − 1):

    ζ_i^f = a_i û + z_i,   ξ^f = a_0 û + z_0,   a_j ~ N(0, 1),  z_j ~ N(0, I_n) on û^⊥,

all independent (a Gaussian vector's projections on orthogonal subspaces are independent). Then

    ‖g_i‖² = ‖λ⊙x + s ζ_i^c‖² + (λ_f ρ + s_f a_i)² + s_f² ‖z_i‖²,
    ρ'²    = (ρ − k [Σ_i c_i (λ_f ρ + s_f a_i) + ν a_0])² + k² ‖S‖²,   S = ν z_0 + Σ_i c_i s_f z_i,

by Pythagoras (the first bracket is the û-component of f', S the orthogonal one). The only
high-dimensional objects left are the norms ‖z_i‖ and the norm of the weighted sum S, whose
weights c_i depend on the z_i only through ‖z_i‖.

**3. Sequential representation of S.** Build S sample by sample. Given the partial sum S_j
(independent of the fresh z_{j+1}), rotate coordinates so that S_j = (‖S_j‖, 0, …, 0). By
isotropy z_{j+1} = (n_1, rest) with n_1 ~ N(0, 1) and ‖rest‖² ~ χ²_{n−1} independent; thus
‖z_{j+1}‖² = n_1² + χ²_{n−1} and

    ‖S_{j+1}‖² = (‖S_j‖ + w n_1)² + w² χ²_{n−1},   w = c_{j+1} s_f,

exact because c_{j+1} depends on z_{j+1} only through ‖z_{j+1}‖², which is known before w is
needed. Start: ‖S_0‖² = ν² χ²_n (the DP noise). The flat part of each sample costs 2 Gaussians
(a_i, n_1) and 1 chi-square instead of m Gaussians; the curved part r Gaussians, as in the full
kernel. (This is the Bartlett decomposition of the Wishart Gram matrix of (z_0, …, z_B) — row j
of the Bartlett factor A has A_jj² ~ χ²_{n−j} — evaluated lazily: only the projection on the
running sum is ever needed.) Degenerate sizes are exact too: χ²_q with q ≤ 0 is 0
and a coordinate that does not exist (n < 1) is 0.

**4. Clip-bias norm** (recorded steps only). ‖(1/B) Σ_i (c_i − 1) g_i‖ needs a second running sum
T = Σ_i (c_i − 1) s_f z_i. Keep (S, T) in a 2-dimensional orthonormal frame, S = (S_1, 0),
T = (T_1, T_2); a fresh z is (n_1, n_2, √χ²_{n−2}) in the frame completed by a third axis; after the
update S', T' ∈ R³ are re-expressed in a new 2-frame (Gram–Schmidt). Same exactness argument.

**Precision at huge d** (d up to 1e12). ‖g_i‖², ρ'² and ‖S‖² are sums of non-negative terms, so
they carry ~1e-16 relative rounding however large m is (the d-dimensional kernel, summing d
squares, is *less* accurate). The curved part ‖λ⊙x + s ζ^c‖² can be 1e-12 of s²χ²_m; it still
shifts ‖g‖² by a representable amount, and it acts on the dynamics only through c_i, which is
insensitive to it at that scale. The chi-square sampler is Marsaglia–Tsang (2000) written in
cancellation-free form: with a = q/2, δ = a − 1/3, y = x/√(9δ), v − 1 = 3y + 3y² + y³ =: w,
the acceptance test uses δ (log1p(w) − w) (no difference of two ~δ-sized numbers) and the sample is
returned as χ² − q = 2δw − 2/3 before q is added back, so no draw loses precision to cancellation
(a textbook implementation computes δ − δv + δ log v, whose terms are ~5e11 at q = 1e12).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from simulations.basin.clip_step import finish_sample, record_metrics
from simulations.basin.rng import normal, replica_states, uniform

__all__ = ["chi2_excess", "run_reduced", "sample_chi2_excess"]


@njit(cache=True, fastmath=False)
def chi2_excess(df, st):
    """One draw of χ²_df − df (0 for df ≤ 0), exact and cancellation-free; ``st`` a xoshiro state."""
    if df <= 0.0:
        return 0.0
    if df < 2.0:  # df = 1 (integer degrees of freedom only)
        x = normal(st)
        return x * x - df
    a = 0.5 * df
    dd = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * dd)
    for _ in range(1000):
        x = normal(st)
        y = c * x
        if y <= -1.0:
            continue
        w = y * (3.0 + y * (3.0 + y))  # v − 1, v = (1 + y)³
        u = uniform(st)
        if u < 1.0 - 0.0331 * (x * x) * (x * x):
            return 2.0 * dd * w - 2.0 / 3.0
        if u > 0.0 and math.log(u) < 0.5 * x * x + dd * (math.log1p(w) - w):
            return 2.0 * dd * w - 2.0 / 3.0
    return 2.0 * dd * 0.0 - 2.0 / 3.0  # unreachable in practice (acceptance rate > 0.95)


@njit(cache=True)
def _sample_many(df, n, st):
    out = np.empty(n)
    for i in range(n):
        out[i] = chi2_excess(df, st)
    return out


def sample_chi2_excess(*, df: float, size: int, seed: int) -> np.ndarray:
    """``size`` draws of χ²_df − df from the engine's sampler (for tests and inspection).

    Example:
        >>> x = sample_chi2_excess(df=1e12, size=4000, seed=1)
        >>> bool(abs(x.mean()) < 4 * (2e12 / 4000) ** 0.5)
        True
    """
    st = replica_states([np.random.SeedSequence(seed)])[0, :4].copy()
    return _sample_many(float(df), int(size), st)


@njit(cache=True, fastmath=False)
def _chi2(df, st):
    if df <= 0.0:
        return 0.0
    return df + chi2_excess(df, st)


@njit(cache=True, fastmath=False)
def _reduced_replica(
    rep,
    x0,
    rho0,
    lam,
    lam_flat,
    s,
    s_flat,
    flat_dim,
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
    """Replica ``rep`` of :func:`run_reduced` (serial; the parallel loop only dispatches replicas)."""
    r = lam.shape[0]
    n_steps = lr_t.shape[0]
    has_flat = flat_dim >= 1.0
    n_perp = flat_dim - 1.0
    flat_samples = has_flat and s_flat > 0.0
    np.random.seed(states[rep, 4])
    st = states[rep, :4].copy()
    x = x0[rep].copy()
    rho = rho0[rep]
    gc = np.empty(r)
    acc = np.empty(r)
    raw = np.empty(r)
    rec = 0
    for t in range(n_steps):
        if t == disp_step:
            for q in range(r):
                x[q] += disp_vec[q]
        track = rec_flag[t]
        for q in range(r):
            acc[q] = 0.0
            raw[q] = 0.0
        bn = batch_size
        if poisson:
            bn = np.random.poisson(float(batch_size))
        clip = clip_t[t]
        nu = nu_t[t]
        # DP noise: component a0 along û and S = ν z_0 (norm only) on û^⊥
        a0 = 0.0
        s1 = 0.0
        if has_flat and nu > 0.0:
            a0 = normal(st)
            s1 = nu * math.sqrt(_chi2(n_perp, st))
        t1 = 0.0
        t2 = 0.0
        par_sum = 0.0
        bias_par = 0.0
        n_clipped = 0
        sum_factor = 0.0
        fbase = lam_flat * rho
        for _ in range(bn):
            nrm2 = 0.0
            for q in range(r):
                v = lam[q] * x[q] + s * normal(st)
                gc[q] = v
                nrm2 += v * v
            fpar = fbase
            n1 = 0.0
            n2 = 0.0
            qq = 0.0
            if flat_samples:
                fpar += s_flat * normal(st)
                if n_perp >= 1.0:
                    n1 = normal(st)
                if track:
                    if n_perp >= 2.0:
                        n2 = normal(st)
                    qq = _chi2(n_perp - 2.0, st)
                else:
                    qq = _chi2(n_perp - 1.0, st)
                nrm2 += fpar * fpar + s_flat * s_flat * ((n1 * n1 + n2 * n2) + qq)
            else:
                nrm2 += fpar * fpar
            clipped, f = finish_sample(gc, r, nrm2, clip, acc, raw, track)
            n_clipped += clipped
            sum_factor += f
            par_sum += f * fpar
            if track:
                bias_par += (f - 1.0) * fpar
            if flat_samples:
                w = f * s_flat
                if track:
                    w2 = (f - 1.0) * s_flat
                    sq = math.sqrt(qq)
                    sa = s1 + w * n1
                    sb = w * n2
                    sc = w * sq
                    ta = t1 + w2 * n1
                    tb = t2 + w2 * n2
                    tc = w2 * sq
                    s1 = math.sqrt(sa * sa + sb * sb + sc * sc)
                    if s1 > 0.0:
                        ua = sa / s1
                        ub = sb / s1
                        uc = sc / s1
                        t1 = ta * ua + tb * ub + tc * uc
                        pa = ta - t1 * ua
                        pb = tb - t1 * ub
                        pc = tc - t1 * uc
                        t2 = math.sqrt(pa * pa + pb * pb + pc * pc)
                    else:
                        t1 = math.sqrt(ta * ta + tb * tb + tc * tc)
                        t2 = 0.0
                else:
                    u = s1 + w * n1
                    s1 = math.sqrt(u * u + w * w * qq)
        scale = lr_t[t] / batch_size
        if track:
            b2 = bias_par * bias_par + t1 * t1 + t2 * t2
            for q in range(r):
                dv = acc[q] - raw[q]
                b2 += dv * dv
            out_bias[rep, rec] = math.sqrt(b2) / batch_size
        if has_flat:
            par = rho - scale * (par_sum + nu * a0)
            rho = math.sqrt(par * par + scale * scale * s1 * s1)
        for q in range(r):
            xi = normal(st) if nu > 0.0 else 0.0
            x[q] -= scale * (acc[q] + nu * xi)
        if track:
            energy = 0.0
            curved = 0.0
            for q in range(r):
                curved += x[q] * x[q]
                energy += 0.5 * lam[q] * x[q] * x[q]
            record_metrics(
                rep,
                rec,
                energy,
                curved,
                rho * rho,
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
def run_reduced(
    x0,
    rho0,
    lam,
    lam_flat,
    s,
    s_flat,
    flat_dim,
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
    """R replicas × T steps of the exact reduced chain (x, ρ); same outputs as ``kernels.run_streaming``.

    ``x0`` (R, r) curved errors, ``rho0`` (R,) flat-error norms, ``flat_dim`` m = d − r as a float
    (d may exceed 2**53 only in theory: it is a chi-square degree of freedom here); ``states`` (R, 5)
    from ``rng.replica_states``. Gaussians and chi-squares come from the kernels' ziggurat /
    xoshiro256++ stream, Poisson batch sizes from numba's ``np.random`` reseeded per replica.
    """
    for rep in prange(x0.shape[0]):
        _reduced_replica(
            rep,
            x0,
            rho0,
            lam,
            lam_flat,
            s,
            s_flat,
            flat_dim,
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
