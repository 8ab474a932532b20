"""Finite-sum least squares with low-rank data: per-sample DP-SGD with a numba kernel and numpy twin.

Data (n fixed training examples, fresh test examples from the same law):

    a_i = V (σ_data ⊙ z_i) + ε_i,   z_i ~ N(0, I_r),  ε_i ~ N(0, σ_iso² I_d),
    b_i = a_iᵀ w* + η_i,

V ∈ R^{d×r} orthonormal (Haar), σ_data = ``data_std`` (covariance rank r plus a small isotropic
part σ_iso = ``iso_std``), and label noise η_i of std σ_y = ``label_std`` (so the per-sample
gradients do not vanish at the optimum):

* ``"gaussian"`` — symmetric N(0, σ_y²);
* ``"skewed"``   — σ_y (Exp(1) − 1): mean 0, variance σ_y², skewness 2;
* ``"outliers"`` — N(0, σ_y²), plus a fraction ``outlier_fraction`` of examples shifted by
  +``outlier_shift`` (then re-centred to mean 0): asymmetric deviations, where clipping bias does
  not vanish at the optimum (Chen, Wu & Hong 2020, arXiv 2006.15429, §3).

Objective L(w) = (1/2n) Σ_i (a_iᵀ w − b_i)², per-sample gradient g_i = a_i (a_iᵀ w − b_i), so
‖g_i‖ = ‖a_i‖ |a_iᵀ w − b_i| (the norm costs O(1) once ‖a_i‖ is cached). One DP-SGD step
(``dptheory/records.py``; Opacus semantics) on the kept coordinates K:

    w_K ← w_K − η (1/B) [ Σ_{i ∈ batch} min(1, C/‖g_{i,K}‖) g_{i,K} + ν ξ_K ],

batches of exactly B distinct examples (``sampling="fixed"``) or Poisson sampling with rate
q = B/n — each example independently with probability q, which is what the privacy accountant
assumes — sampled as N ~ Binomial(n, q) distinct uniform examples (the same law); the sum is always
divided by B. Pruned coordinates (``mask``) stay at w_j = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from dptheory.pruning import curvature_basis
from dptheory.records import Optimizer
from dptheory.validate import check_int, check_nonnegative, check_probability
from simulations.basin.clip_step import apply_update, bias_norm
from simulations.basin.rng import normal, replica_states

__all__ = [
    "LABEL_NOISES",
    "LeastSquaresData",
    "LeastSquaresProblem",
    "least_squares_step",
    "make_data",
    "simulate_least_squares",
]

LABEL_NOISES = ("gaussian", "skewed", "outliers")


@dataclass(frozen=True)
class LeastSquaresProblem:
    """Parameters of the finite-sum least-squares basin (module docstring for every symbol)."""

    dim: int
    n_train: int
    rank: int
    data_std: float = 1.0
    iso_std: float = 0.05
    label_std: float = 0.5
    label_noise: str = "gaussian"
    outlier_fraction: float = 0.05
    outlier_shift: float = 10.0
    optimum_std: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        d = check_int("dim", self.dim, minimum=1)
        object.__setattr__(self, "dim", d)
        object.__setattr__(self, "n_train", check_int("n_train", self.n_train, minimum=1))
        r = check_int("rank", self.rank, minimum=1)
        if r > d:
            raise ValueError(f"rank must be <= dim, got rank={r} > dim={d}")
        object.__setattr__(self, "rank", r)
        for name in ("data_std", "iso_std", "label_std", "outlier_shift", "optimum_std"):
            object.__setattr__(self, name, check_nonnegative(name, getattr(self, name)))
        object.__setattr__(self, "outlier_fraction", check_probability("outlier_fraction", self.outlier_fraction))
        if self.label_noise not in LABEL_NOISES:
            raise ValueError(f"label_noise must be one of {', '.join(LABEL_NOISES)}, got {self.label_noise!r}")
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))


@dataclass(frozen=True)
class LeastSquaresData:
    """One draw of the problem: training set, population optimum w*, data basis V, test sampler."""

    problem: LeastSquaresProblem
    features: np.ndarray  # (n, d) a_i
    targets: np.ndarray  # (n,) b_i
    optimum: np.ndarray  # (d,) w* (population optimum)
    basis: np.ndarray  # (d, r) V

    def sample(self, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` fresh examples (a, b) from the same law (a test set)."""
        return _draw_examples(self.problem, self.basis, self.optimum, n, np.random.default_rng(seed))

    def loss(self, weights, features=None, targets=None) -> float:
        """(1/2n) Σ (a_iᵀ w − b_i)² on the training set (or on the given examples)."""
        a = self.features if features is None else features
        b = self.targets if targets is None else targets
        res = a @ np.asarray(weights, dtype=float) - b
        return 0.5 * float(res @ res) / len(b)

    def lstsq_solution(self, mask=None) -> np.ndarray:
        """argmin_w L(w) (minimum-norm; restricted to the kept coordinates when ``mask`` is given)."""
        keep = np.ones(self.problem.dim, bool) if mask is None else np.asarray(mask, bool)
        w = np.zeros(self.problem.dim)
        w[keep] = np.linalg.lstsq(self.features[:, keep], self.targets, rcond=None)[0]
        return w


def _label_noise(problem: LeastSquaresProblem, n: int, rng: np.random.Generator) -> np.ndarray:
    sy = problem.label_std
    if problem.label_noise == "gaussian":
        return sy * rng.standard_normal(n)
    if problem.label_noise == "skewed":
        return sy * (rng.standard_exponential(n) - 1.0)
    out = sy * rng.standard_normal(n)
    hit = rng.random(n) < problem.outlier_fraction
    return out + problem.outlier_shift * (hit - problem.outlier_fraction)


def _draw_examples(problem, basis, optimum, n, rng):
    z = rng.standard_normal((n, problem.rank)) * problem.data_std
    a = z @ basis.T + problem.iso_std * rng.standard_normal((n, problem.dim))
    b = a @ optimum + _label_noise(problem, n, rng)
    return a, b


def make_data(problem: LeastSquaresProblem) -> LeastSquaresData:
    """Draw V, w* ~ N(0, σ_w² I) and the n training examples from ``problem.seed``.

    Example:
        >>> data = make_data(LeastSquaresProblem(dim=20, n_train=100, rank=3))
        >>> data.features.shape, data.targets.shape
        ((100, 20), (100,))
    """
    ss = np.random.SeedSequence(problem.seed).spawn(3)
    basis = curvature_basis(dim=problem.dim, rank=problem.rank, basis="rotated", seed=int(ss[0].generate_state(1)[0]))
    optimum = problem.optimum_std * np.random.default_rng(ss[1]).standard_normal(problem.dim)
    a, b = _draw_examples(problem, basis, optimum, problem.n_train, np.random.default_rng(ss[2]))
    return LeastSquaresData(problem=problem, features=a, targets=b, optimum=optimum, basis=basis)


# ----------------------------------------------------------------------------- numba kernel


@njit(cache=True, fastmath=False)
def _ls_sample(w, features, targets, i, kept, row_norm, clip, acc, raw, track):
    """Add min(1, C/‖g_i,K‖) g_i,K to acc, g_i = a_i (a_iᵀw − b_i); return (clipped?, factor)."""
    res = -targets[i]
    for j in range(w.shape[0]):
        res += features[i, j] * w[j]
    nrm = row_norm * abs(res)
    f = 1.0
    clipped = nrm > clip
    if clipped:
        f = clip / nrm
    fr = f * res
    for jj in range(kept.shape[0]):
        acc[jj] += fr * features[i, kept[jj]]
    if track:
        for jj in range(kept.shape[0]):
            raw[jj] += res * features[i, kept[jj]]
    return clipped, f


@njit(cache=True, fastmath=False)
def _ls_step_given(w, features, targets, batch, xi, kept, row_norms, clip, nu, lr, batch_size):
    k = kept.shape[0]
    acc = np.zeros(k)
    raw = np.zeros(k)
    noise = np.empty(k)
    n_clipped = 0
    sum_f = 0.0
    for ii in range(batch.shape[0]):
        i = batch[ii]
        c, f = _ls_sample(w, features, targets, i, kept, row_norms[i], clip, acc, raw, True)
        n_clipped += c
        sum_f += f
    for jj in range(k):
        noise[jj] = nu * xi[kept[jj]]
    bias = bias_norm(acc, raw, k, batch_size)
    out = w.copy()
    apply_update(out, kept, acc, noise, lr, batch_size)
    return out, n_clipped, sum_f, bias


def _kept_and_norms(features, mask):
    d = features.shape[1]
    keep = np.ones(d, bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != (d,):
        raise ValueError(f"mask must have shape ({d},), got {keep.shape}")
    kept = np.flatnonzero(keep).astype(np.int64)
    return kept, np.sqrt(np.sum(features[:, keep] ** 2, axis=1))


def least_squares_step(
    *,
    weights,
    features,
    targets,
    batch,
    xi,
    mask=None,
    clip_norm=math.inf,
    noise_std=0.0,
    lr,
    batch_size,
    twin: bool = False,
):
    """One DP-SGD step on least squares with the batch indices and noise ξ (d,) given.

    w_K ← w_K − η/B [Σ_{i∈batch} clip_C(a_{i,K}(a_iᵀw − b_i)) + ν ξ_K]. ``twin=True`` runs the
    plain-numpy twin instead of the numba kernel. Returns (new weights, number clipped,
    Σ clip factors, clip-bias norm ‖(1/B)Σ(clip(g_i) − g_i)‖).

    Example:
        >>> w, *_ = least_squares_step(weights=np.zeros(2), features=np.eye(2), targets=np.ones(2),
        ...                            batch=np.array([0, 1]), xi=np.zeros(2), lr=1.0, batch_size=2)
        >>> w.tolist()
        [0.5, 0.5]
    """
    w = np.ascontiguousarray(weights, dtype=float)
    a = np.ascontiguousarray(features, dtype=float)
    b = np.ascontiguousarray(targets, dtype=float)
    idx = np.ascontiguousarray(batch, dtype=np.int64)
    xi = np.ascontiguousarray(xi, dtype=float)
    if twin:
        keep = np.ones(w.shape[0], bool) if mask is None else np.asarray(mask, bool)
        res = a[idx] @ w - b[idx]
        g = res[:, None] * a[idx][:, keep]
        norms = np.sqrt(np.sum(g * g, axis=1))
        clipped = norms > clip_norm
        factor = np.where(clipped, clip_norm / np.where(clipped, norms, 1.0), 1.0)
        csum = factor @ g
        bias = float(np.linalg.norm(csum - g.sum(axis=0))) / batch_size
        out = w.copy()
        out[keep] -= lr / batch_size * (csum + noise_std * xi[keep])
        return out, int(clipped.sum()), float(factor.sum()), bias
    kept, norms = _kept_and_norms(a, mask)
    return _ls_step_given(
        w, a, b, idx, xi, kept, norms, float(clip_norm), float(noise_std), float(lr), float(batch_size)
    )


@njit(cache=True, fastmath=False)
def _ls_replica(
    rep,
    w0,
    features,
    targets,
    kept,
    row_norms,
    batch_size,
    poisson,
    lr_t,
    clip_t,
    nu_t,
    disp_step,
    disp_vec,
    rec_flag,
    test_x,
    test_y,
    optimum,
    basis_t,
    states,
    out_train,
    out_held,
    out_curved,
    out_flat,
    out_clipfrac,
    out_meanf,
    out_bias,
):
    """Replica ``rep`` of :func:`_run_ls` (serial; the parallel loop only dispatches replicas)."""
    d = w0.shape[1]
    n = features.shape[0]
    k = kept.shape[0]
    r = basis_t.shape[0]
    q = batch_size / n
    np.random.seed(states[rep, 4])
    st = states[rep, :4].copy()
    w = w0[rep].copy()
    perm = np.arange(n)
    acc = np.empty(k)
    raw = np.empty(k)
    noise = np.empty(k)
    p = np.empty(r)
    rec = 0
    for t in range(lr_t.shape[0]):
        if t == disp_step:
            for jj in range(k):
                w[kept[jj]] += disp_vec[kept[jj]]
        bn = batch_size
        if poisson:
            bn = np.random.binomial(n, q)
        for j in range(bn):  # partial Fisher–Yates: a uniform bn-subset in perm[:bn]
            m = j + np.random.randint(0, n - j)
            tmp = perm[j]
            perm[j] = perm[m]
            perm[m] = tmp
        track = rec_flag[t]
        for jj in range(k):
            acc[jj] = 0.0
            raw[jj] = 0.0
        n_clipped = 0
        sum_f = 0.0
        for j in range(bn):
            i = perm[j]
            c, f = _ls_sample(w, features, targets, i, kept, row_norms[i], clip_t[t], acc, raw, track)
            n_clipped += c
            sum_f += f
        nu = nu_t[t]
        for jj in range(k):
            noise[jj] = nu * normal(st) if nu > 0.0 else 0.0
        if track:
            out_bias[rep, rec] = bias_norm(acc, raw, k, batch_size)
        apply_update(w, kept, acc, noise, lr_t[t], batch_size)
        if track:
            tr = 0.0
            for i in range(n):
                res = -targets[i]
                for j in range(d):
                    res += features[i, j] * w[j]
                tr += res * res
            te = 0.0
            for i in range(test_x.shape[0]):
                res = -test_y[i]
                for j in range(d):
                    res += test_x[i, j] * w[j]
                te += res * res
            curved = 0.0
            for a in range(r):
                s = 0.0
                for j in range(d):
                    s += basis_t[a, j] * (w[j] - optimum[j])
                p[a] = s
                curved += s * s
            flat = 0.0
            for j in range(d):
                v = w[j] - optimum[j]
                for a in range(r):
                    v -= basis_t[a, j] * p[a]
                flat += v * v
            out_train[rep, rec] = 0.5 * tr / n
            out_held[rep, rec] = 0.5 * te / test_x.shape[0]
            out_curved[rep, rec] = curved
            out_flat[rep, rec] = flat
            out_clipfrac[rep, rec] = n_clipped / bn if bn > 0 else np.nan
            out_meanf[rep, rec] = sum_f / bn if bn > 0 else np.nan
            rec += 1


@njit(parallel=True, cache=True, fastmath=False)
def _run_ls(
    w0,
    features,
    targets,
    kept,
    row_norms,
    batch_size,
    poisson,
    lr_t,
    clip_t,
    nu_t,
    disp_step,
    disp_vec,
    rec_flag,
    test_x,
    test_y,
    optimum,
    basis_t,
    states,
    out_train,
    out_held,
    out_curved,
    out_flat,
    out_clipfrac,
    out_meanf,
    out_bias,
):
    for rep in prange(w0.shape[0]):
        _ls_replica(
            rep,
            w0,
            features,
            targets,
            kept,
            row_norms,
            batch_size,
            poisson,
            lr_t,
            clip_t,
            nu_t,
            disp_step,
            disp_vec,
            rec_flag,
            test_x,
            test_y,
            optimum,
            basis_t,
            states,
            out_train,
            out_held,
            out_curved,
            out_flat,
            out_clipfrac,
            out_meanf,
            out_bias,
        )


def simulate_least_squares(
    *,
    data: LeastSquaresData,
    optimizer: Optimizer,
    run,
    engine: str = "full",
    mask=None,
    init_weights=None,
    n_test: int = 1000,
):
    """Monte Carlo of DP-SGD on the least-squares basin; returns a ``simulations.basin.engine.Trace``.

    Metrics: ``train_loss`` L(w); ``heldout_loss`` the same loss on ``n_test`` fresh examples (one
    test set per call, seeded from ``run.seed``); ``curved_err_sq`` ‖Vᵀ(w − w*)‖² and
    ``flat_err_sq`` ‖(I − VVᵀ)(w − w*)‖² (w* the population optimum, V the data basis); the clip
    statistics as in the streaming engines. ``run`` is a ``simulations.basin.engine.RunSpec``; its
    ``init_error`` / ``init_flat_sq`` are ignored (w_0 = ``init_weights``, default 0), its
    displacement moves w along V(1, …, 1)/√r. ``engine``: "full" (numba) or "numpy" (twin).

    Example:
        >>> from simulations.basin.engine import RunSpec
        >>> data = make_data(LeastSquaresProblem(dim=10, n_train=200, rank=2, label_std=0.1))
        >>> tr = simulate_least_squares(data=data, optimizer=Optimizer(lr=0.2, batch_size=20, mode="sgd"),
        ...                             run=RunSpec(steps=300, replicas=2, record_every=300))
        >>> bool(tr.train_loss[0, -1] < 0.1)
        True
    """
    from simulations.basin.engine import TRACE_METRICS, RunSpec, Trace, replica_seeds, step_schedule_arrays

    if not isinstance(run, RunSpec):
        raise ValueError(f"run must be a RunSpec, got {type(run).__name__}")
    if engine not in ("full", "numpy"):
        raise ValueError(f"engine must be 'full' or 'numpy', got {engine!r}")
    n_test = check_int("n_test", n_test, minimum=1)
    prob = data.problem
    d, r = prob.dim, prob.rank
    kept, row_norms = _kept_and_norms(data.features, mask)
    keep = np.zeros(d, bool)
    keep[kept] = True
    if optimizer.batch_size > prob.n_train:
        raise ValueError(f"batch_size must be <= n_train={prob.n_train}, got {optimizer.batch_size}")
    w0 = np.zeros(d) if init_weights is None else np.asarray(init_weights, dtype=float)
    if w0.shape != (d,):
        raise ValueError(f"init_weights must have shape ({d},), got {w0.shape}")
    w0 = np.where(keep, w0, 0.0)
    lr_t, clip_t, nu_t = step_schedule_arrays(optimizer, run)
    rec_flag = run.record_flags
    n_rec = int(rec_flag.sum())
    seeds = replica_seeds(run)
    test_x, test_y = data.sample(n_test, seed=int(np.random.SeedSequence([run.seed, 1]).generate_state(1)[0]))
    disp_step = -1 if run.displacement_step is None else run.displacement_step
    disp_vec = run.displacement * data.basis @ np.full(r, 1 / math.sqrt(r))
    out = {key: np.full((run.replicas, n_rec), np.nan) for key in TRACE_METRICS}
    poisson = run.sampling == "poisson"
    if engine == "full":
        _run_ls(
            np.tile(w0, (run.replicas, 1)),
            np.ascontiguousarray(data.features),
            data.targets,
            kept,
            row_norms,
            optimizer.batch_size,
            poisson,
            lr_t,
            clip_t,
            nu_t,
            disp_step,
            disp_vec,
            rec_flag,
            test_x,
            test_y,
            data.optimum,
            np.ascontiguousarray(data.basis.T),
            replica_states([s[1] for s in seeds]),
            *(out[key] for key in TRACE_METRICS),
        )
    else:
        n = prob.n_train
        for rep in range(run.replicas):
            rng = np.random.default_rng(seeds[rep][1])
            w = w0.copy()
            rec = 0
            for t in range(run.steps):
                if t == disp_step:
                    w[keep] += disp_vec[keep]
                bn = int(rng.binomial(n, optimizer.batch_size / n)) if poisson else optimizer.batch_size
                batch = rng.choice(n, size=bn, replace=False)
                xi = rng.standard_normal(d) if nu_t[t] > 0 else np.zeros(d)
                w, n_clip, sum_f, bias = least_squares_step(
                    weights=w,
                    features=data.features,
                    targets=data.targets,
                    batch=batch,
                    xi=xi,
                    mask=keep,
                    clip_norm=clip_t[t],
                    noise_std=nu_t[t],
                    lr=lr_t[t],
                    batch_size=optimizer.batch_size,
                    twin=True,
                )
                if rec_flag[t]:
                    err = w - data.optimum
                    pr = data.basis.T @ err
                    out["train_loss"][rep, rec] = data.loss(w)
                    out["heldout_loss"][rep, rec] = data.loss(w, test_x, test_y)
                    out["curved_err_sq"][rep, rec] = float(pr @ pr)
                    out["flat_err_sq"][rep, rec] = float(np.sum((err - data.basis @ pr) ** 2))
                    out["clip_fraction"][rep, rec] = n_clip / bn if bn else np.nan
                    out["mean_clip_factor"][rep, rec] = sum_f / bn if bn else np.nan
                    out["clip_bias_norm"][rep, rec] = bias
                    rec += 1
    return Trace(steps=np.flatnonzero(rec_flag) + 1, engine=engine, seed=run.seed, **out)
