"""Hessian tools for a network's training loss: HVPs, top-k eigenpairs, effective rank, projections.

The loss is L(w) = (1/n) Σ_i ℓ(f_w(x_i), y_i) over a fixed batch, with w the flat vector of all
trainable parameters (registration order, as in ``simulations.nn.engine``). With 0/1 masks m the
pruned network's Hessian is H_m = diag(m) H diag(m) (pruned coordinates are not variables).

* :func:`make_hvp` — v ↦ H v by double backward (Pearlmutter 1994): the gradient graph is built
  once and re-used, so each product costs about one extra backward pass.
* :func:`top_eigenpairs` — the k largest (algebraic) eigenvalues and eigenvectors by implicitly
  restarted Lanczos (ARPACK via ``scipy.sparse.linalg.eigsh``; Lehoucq, Sorensen, Yang 1998) with
  a step cap ``max_iter``; if it stops early it **warns** and returns the Ritz pairs that did
  converge. Small problems (d ≤ ``dense_below``) are solved exactly by building H from d products.
* :func:`effective_rank` — participation ratio (Σλ₊)² / Σλ₊² of the top-k positive eigenvalues
  (a lower bound on the count of "large" directions when the tail beyond k is ignored — it errs
  low if the spectrum has more than k comparable eigenvalues), or the count with λ ≥ f·λ_max.
* :func:`subspace_fraction` — ‖Vᵀ v‖² / ‖v‖², the share of a vector (noise, clipping bias) that
  lies in the span of the top-k eigenvectors V. For isotropic noise its expectation is k/d.

* :func:`lanczos` — m steps of the symmetric Lanczos recurrence (Lanczos 1950) with **full
  reorthogonalisation** (classical Gram–Schmidt, twice, against every earlier vector: the vectors
  stay orthonormal to working precision, so no spurious copies of converged eigenvalues appear),
  optionally inside the orthogonal complement of a given basis (deflation).
* :func:`lanczos_eigenpairs` — the top-k Ritz pairs of one long Lanczos run, with the residual
  ‖H y − θ y‖ = β_m |s_mj| of each (a bound on the distance of θ to an eigenvalue).
* :func:`slq_density` — stochastic Lanczos quadrature of the spectral density (Ghorbani, Krishnan,
  Xiao 2019, arXiv 1901.10159v1 §2–3; Lin, Saad, Yang 2016, SIAM Rev. 58 §3.1): for probes v_p
  uniform on the unit sphere of the space considered (dimension D), the m-step Lanczos matrix
  T_p = S_p Θ_p S_pᵀ gives the Gauss quadrature v_pᵀ f(H) v_p ≈ Σ_j τ_pj f(θ_pj) with nodes θ_pj
  and weights τ_pj = (S_p)_{1j}², exact for polynomials f of degree ≤ 2m − 1. Averaging,

      tr f(H) ≈ (D / P) Σ_p Σ_j τ_pj f(θ_pj),

  an unbiased estimator for polynomial f of degree ≤ 2m − 1 (E v vᵀ = I/D), whose standard error is
  D · sd_p(Σ_j τ_pj f(θ_pj)) / √P (:class:`SpectralDensity`).

Gur-Ari, Roberts, Dyer 2018 (arXiv 1812.04754v1): gradients concentrate in a top-k subspace with
k ≈ number of classes.

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Linear(4, 1, bias=False)
    >>> x, y = torch.randn(32, 4), torch.randn(32)
    >>> sq = lambda out, t: 0.5 * (out.squeeze(-1) - t) ** 2
    >>> hvp = make_hvp(model, x, y, loss_fn=sq)
    >>> vals, _ = top_eigenpairs(hvp, dim=4, k=2, seed=0)
    >>> import numpy as np
    >>> bool(np.allclose(vals, np.linalg.eigvalsh((x.T @ x / 32).double().numpy())[::-1][:2], rtol=1e-4))
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dptheory.validate import check_int, check_positive
from simulations.nn.engine import LossFn, default_loss, trainable_parameters

__all__ = [
    "LanczosRun",
    "SpectralDensity",
    "effective_rank",
    "flatten",
    "kept_vector",
    "lanczos",
    "lanczos_eigenpairs",
    "make_hvp",
    "parameter_dim",
    "slq_density",
    "subspace_fraction",
    "top_eigenpairs",
    "tridiagonal_quadrature",
]


def parameter_dim(model: nn.Module) -> int:
    """d: the number of trainable scalars (the length of the flat vectors used here)."""
    return int(sum(p.numel() for p in trainable_parameters(model).values()))


def flatten(tensors: Mapping[str, torch.Tensor] | list[torch.Tensor]) -> torch.Tensor:
    """Concatenate parameter-shaped tensors (dict in model order, or list) into one flat vector."""
    values = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
    return torch.cat([t.reshape(-1) for t in values])


def make_hvp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ H v for the mean loss on (x, y); v and H v are flat float tensors on the model's device.

    ``loss_fn(output, target)`` returns per-sample losses (default cross-entropy);
    ``masks`` restricts to kept coordinates (H_m = diag(m) H diag(m)).
    """
    loss_fn = loss_fn or default_loss
    params = list(trainable_parameters(model).values())
    names = list(trainable_parameters(model).keys())
    mflat = None
    if masks is not None:
        mflat = torch.cat(
            [masks[k].reshape(-1) if k in masks else torch.ones_like(p).reshape(-1) for k, p in zip(names, params)]
        ).detach()
    loss = loss_fn(model(x), y).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sizes = [p.numel() for p in params]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        v = v.to(device=params[0].device, dtype=params[0].dtype)
        if mflat is not None:
            v = v * mflat
        parts = [c.reshape(p.shape) for c, p in zip(torch.split(v, sizes), params)]
        hv = torch.autograd.grad(grads, params, grad_outputs=parts, retain_graph=True, allow_unused=True)
        out = torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1) for h, p in zip(hv, params)])
        return out * mflat if mflat is not None else out

    return hvp


def top_eigenpairs(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    *,
    dim: int,
    k: int,
    seed: int = 0,
    max_iter: int | None = None,
    tol: float = 1e-4,
    dense_below: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending, float64) of the symmetric operator ``hvp`` and eigenvectors (d, k).

    ``dim`` = d, ``k`` = number of eigenpairs (1 ≤ k ≤ d), ``seed`` = the Lanczos start vector,
    ``max_iter`` = restart cap (default 20·d capped at 2000 — each costs O(k) products),
    ``tol`` = ARPACK relative accuracy, ``dense_below``: for d ≤ this, build H and use ``eigh``.
    Warns (``RuntimeWarning``) and returns fewer pairs if Lanczos stops before converging.
    """
    dim = check_int("dim", dim, minimum=1)
    k = check_int("k", k, minimum=1)
    if k > dim:
        raise ValueError(f"k must be <= dim ({dim}), got {k}")
    check_positive("tol", tol)

    def apply(v: np.ndarray) -> np.ndarray:
        with torch.enable_grad():
            out = hvp(torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64))
        return out.detach().double().cpu().numpy()

    if dim <= dense_below or k >= dim - 1:
        h = np.stack([apply(e) for e in np.eye(dim)], axis=1)
        vals, vecs = np.linalg.eigh(0.5 * (h + h.T))
        order = np.argsort(vals)[::-1][:k]
        return vals[order], vecs[:, order]

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    op = LinearOperator((dim, dim), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    maxiter = check_int("max_iter", max_iter, minimum=1) if max_iter is not None else min(20 * dim, 2000)
    try:
        vals, vecs = eigsh(op, k=k, which="LA", v0=v0, maxiter=maxiter, tol=tol)
    except ArpackNoConvergence as exc:
        warnings.warn(
            f"Lanczos stopped after max_iter={maxiter} restarts with {len(exc.eigenvalues)} of k={k} "
            "eigenpairs converged; returning those",
            RuntimeWarning,
            stacklevel=2,
        )
        vals, vecs = exc.eigenvalues, exc.eigenvectors
    order = np.argsort(vals)[::-1]
    return np.asarray(vals)[order], np.asarray(vecs)[:, order]


def effective_rank(eigenvalues: np.ndarray, *, method: str = "participation", fraction: float = 0.1) -> float:
    """Effective number of curved directions from the top eigenvalues (module docstring).

    ``method="participation"``: (Σλ₊)² / Σλ₊² (1 ≤ value ≤ number of positive λ);
    ``method="threshold"``: #{λ ≥ ``fraction``·λ_max}. Returns 0 if no eigenvalue is positive.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    pos = lam[lam > 0]
    if pos.size == 0:
        return 0.0
    if method == "participation":
        return float(pos.sum() ** 2 / np.sum(pos**2))
    if method == "threshold":
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        return float(np.sum(pos >= fraction * pos.max()))
    raise ValueError(f"method must be 'participation' or 'threshold', got {method!r}")


def subspace_fraction(vector: np.ndarray | torch.Tensor, eigenvectors: np.ndarray) -> float:
    """‖Vᵀv‖² / ‖v‖² for orthonormal columns V = ``eigenvectors`` (d, k); NaN for v = 0."""
    v = vector.detach().double().cpu().numpy() if isinstance(vector, torch.Tensor) else np.asarray(vector, float)
    v = v.reshape(-1)
    vv = float(v @ v)
    if vv == 0:
        return float("nan")
    proj = np.asarray(eigenvectors, dtype=float).T @ v
    return float(proj @ proj / vv)


def kept_vector(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The flat 0/1 vector m of kept coordinates (all ones without ``masks``), on the model's device."""
    params = trainable_parameters(model)
    parts = [
        (masks[k] if masks is not None and k in masks else torch.ones_like(p)).reshape(-1).to(p.dtype)
        for k, p in params.items()
    ]
    return torch.cat(parts).detach()


# ---------------------------------------------------------------------------------------------
# Lanczos with full reorthogonalisation, and stochastic Lanczos quadrature


@dataclass(frozen=True)
class LanczosRun:
    """m steps of Lanczos: T = tridiag(β, α, β) with ``alpha`` (m,) and ``beta`` (m − 1,) (float64).

    ``vectors`` (m, d): the orthonormal Lanczos vectors q_1…q_m (float64, on the operator's device)
    when kept, else None; ``last_beta`` = β_m (the residual norm of the last step; 0 when the Krylov
    space was exhausted, i.e. m < the requested steps).
    """

    alpha: np.ndarray
    beta: np.ndarray
    last_beta: float
    vectors: torch.Tensor | None

    @property
    def steps(self) -> int:
        """m: the number of completed steps (fewer than requested if the Krylov space was exhausted)."""
        return int(self.alpha.size)


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    steps: int,
    deflate: torch.Tensor | None = None,
    keep_vectors: bool = False,
    breakdown: float = 1e-10,
) -> LanczosRun:
    """The Lanczos tridiagonalisation of the symmetric operator ``matvec`` from ``start`` (module docstring).

    q_1 = P v / ‖P v‖ with P = I − V Vᵀ (V = ``deflate``, (d, k) orthonormal columns, or P = I); then
    w = P H q_j − α_j q_j − β_{j−1} q_{j−1}, α_j = q_jᵀ H q_j, followed by two passes of classical
    Gram–Schmidt of w against q_1…q_j and V, β_j = ‖w‖, q_{j+1} = w / β_j. The recurrence stops early
    when β_j ≤ ``breakdown`` · max(|α|, β) (an invariant subspace: the quadrature is then exact).

    Args:
        matvec: v ↦ H v on flat tensors (any dtype; called with float64 vectors).
        start: v, the start vector (d,); need not be normalised.
        steps: m, the number of Lanczos steps (≥ 1).
        deflate: V, (d, k) orthonormal columns to keep the Krylov space orthogonal to, or None.
        keep_vectors: return q_1…q_m (costs m·d float64 of memory).
        breakdown: relative threshold for an exhausted Krylov space.

    Returns:
        :class:`LanczosRun`.

    Raises:
        ValueError: ``steps`` < 1, or a start vector with no component outside span(V).

    Example:
        >>> h = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> run = lanczos(lambda v: h @ v, torch.ones(3, dtype=torch.float64), steps=3)
        >>> t = np.diag(run.alpha) + np.diag(run.beta, 1) + np.diag(run.beta, -1)
        >>> np.round(np.linalg.eigvalsh(t), 8).tolist()
        [1.0, 2.0, 3.0]
    """
    steps = check_int("steps", steps, minimum=1)
    v = start.detach().to(torch.float64).reshape(-1).clone()
    dim = v.numel()
    basis = None if deflate is None else deflate.to(device=v.device, dtype=torch.float64)

    def project(w: torch.Tensor) -> torch.Tensor:
        if basis is not None and basis.shape[1]:
            w = w - basis @ (basis.T @ w)
        return w

    v = project(project(v))
    norm = float(v.norm())
    if not norm > 0:
        raise ValueError("start vector has no component outside the deflated subspace (norm 0)")
    steps = min(steps, dim - (0 if basis is None else basis.shape[1]))
    q = torch.zeros((steps, dim), dtype=torch.float64, device=v.device)
    q[0] = v / norm
    alpha: list[float] = []
    beta: list[float] = []
    last = 0.0
    for j in range(steps):
        w = project(matvec(q[j]).to(device=v.device, dtype=torch.float64).reshape(-1))
        a = float(q[j] @ w)
        alpha.append(a)
        w = w - a * q[j]
        if j > 0:
            w = w - beta[-1] * q[j - 1]
        for _ in range(2):  # full reorthogonalisation (CGS2)
            w = w - q[: j + 1].T @ (q[: j + 1] @ w)
            w = project(w)
        b = float(w.norm())
        scale = max(max(abs(x) for x in alpha), max(beta, default=0.0))
        if j == steps - 1 or b <= breakdown * max(scale, 1e-300):
            last = b if b > breakdown * max(scale, 1e-300) else 0.0
            break
        beta.append(b)
        q[j + 1] = w / b
    m = len(alpha)
    return LanczosRun(
        alpha=np.asarray(alpha, dtype=float),
        beta=np.asarray(beta[: m - 1], dtype=float),
        last_beta=last,
        vectors=q[:m] if keep_vectors else None,
    )


def tridiagonal_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature (nodes θ_j, weights τ_j) of a Lanczos matrix T = tridiag(β, α, β).

    θ_j are the eigenvalues of T and τ_j = (S_{1j})² the squared first components of its unit
    eigenvectors (Golub & Welsch 1969, Math. Comp. 23): v ᵀ f(H) v ≈ Σ_j τ_j f(θ_j) for the unit
    start vector v, exact for polynomials of degree ≤ 2m − 1. Weights sum to 1. Nodes ascending.

    Example:
        >>> nodes, weights = tridiagonal_quadrature(np.array([2.0, 2.0]), np.array([1.0]))
        >>> np.round(nodes, 12).tolist(), np.round(weights, 12).tolist()
        ([1.0, 3.0], [0.5, 0.5])
    """
    from scipy.linalg import eigh_tridiagonal

    a = np.asarray(alpha, dtype=float)
    b = np.asarray(beta, dtype=float)
    if a.ndim != 1 or a.size < 1 or b.shape != (a.size - 1,):
        raise ValueError(f"alpha must be (m,) and beta (m - 1,), got shapes {a.shape} and {b.shape}")
    if a.size == 1:
        return a.copy(), np.ones(1)
    nodes, vecs = eigh_tridiagonal(a, b)
    return nodes, vecs[0] ** 2


def lanczos_eigenpairs(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    *,
    dim: int,
    k: int,
    steps: int,
    seed: int = 0,
    kept: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """The k largest Ritz values (descending), Ritz vectors (d, k, float64) and residuals of one Lanczos run.

    One run of :func:`lanczos` with full reorthogonalisation, ``steps`` = m ≥ k, from a Gaussian start
    vector drawn with ``seed`` (supported on the kept coordinates ``kept``, a 0/1 vector, if given).
    The residual of Ritz pair (θ_j, y_j) is ‖H y_j − θ_j y_j‖ = β_m |S_mj|; an eigenvalue of H lies
    within it of θ_j. Warns (``RuntimeWarning``) if a residual exceeds 1e-2 · |θ_1|.

    Example:
        >>> h = torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64))
        >>> vals, vecs, res = lanczos_eigenpairs(lambda v: h @ v, dim=50, k=2, steps=50)
        >>> np.round(vals, 8).tolist(), bool(res.max() < 1e-8)
        ([50.0, 49.0], True)
    """
    from scipy.linalg import eigh_tridiagonal

    dim = check_int("dim", dim, minimum=1)
    k = check_int("k", k, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    if k > min(steps, dim):
        raise ValueError(f"k must be <= min(steps, dim) = {min(steps, dim)}, got {k}")
    gen = torch.Generator().manual_seed(int(seed))
    start = torch.randn(dim, generator=gen, dtype=torch.float64).to(device)
    if kept is not None:
        start = start * kept.to(device=device, dtype=torch.float64)
    run = lanczos(hvp, start, steps=steps, keep_vectors=True)
    m = run.steps
    if m == 1:
        nodes, s = run.alpha.copy(), np.ones((1, 1))
    else:
        nodes, s = eigh_tridiagonal(run.alpha, run.beta)
    order = np.argsort(nodes)[::-1][: min(k, m)]
    vals = nodes[order]
    lanczos_vectors = run.vectors
    assert lanczos_vectors is not None  # keep_vectors=True
    vecs = lanczos_vectors.T @ torch.as_tensor(s[:, order], dtype=torch.float64, device=lanczos_vectors.device)
    residuals = run.last_beta * np.abs(s[-1, order])
    if vals.size and np.any(residuals > 1e-2 * max(abs(vals[0]), 1e-300)):
        warnings.warn(
            f"Lanczos top-{k}: {int(np.sum(residuals > 1e-2 * abs(vals[0])))} Ritz pairs have residual > 1e-2·|θ_1| "
            f"after {m} steps (max {residuals.max():.3g}); use more steps",
            RuntimeWarning,
            stacklevel=2,
        )
    return vals, vecs, residuals


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic-Lanczos-quadrature estimate of the spectrum of H on a D-dimensional space.

    ``nodes`` and ``weights`` (P, m): probe p's Gauss nodes θ_pj and weights τ_pj (each row sums to
    1; rows of probes whose Lanczos stopped early are padded with weight 0); ``dim`` = D, the
    dimension of the space the probes were drawn in (d, the kept count, minus any deflated k).

    The density is ρ(λ) ≈ (1/P) Σ_p Σ_j τ_pj δ(λ − θ_pj), normalised to 1; D·ρ counts directions.
    """

    nodes: np.ndarray
    weights: np.ndarray
    dim: int

    @property
    def probes(self) -> int:
        """P: the number of probe vectors."""
        return int(self.nodes.shape[0])

    def trace(self, f: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """(estimate, standard error) of tr f(H) = D · mean_p Σ_j τ_pj f(θ_pj); SE over probes (nan for P = 1)."""
        per_probe = self.dim * np.sum(self.weights * f(self.nodes), axis=1)
        se = float(np.std(per_probe, ddof=1) / math.sqrt(per_probe.size)) if per_probe.size > 1 else math.nan
        return float(per_probe.mean()), se

    def moment(self, power: int) -> tuple[float, float]:
        """(estimate, SE) of tr H^power (exact per probe for power ≤ 2m − 1)."""
        return self.trace(lambda lam: lam**power)

    def count_above(self, threshold: float) -> tuple[float, float]:
        """(estimate, SE) of #{eigenvalues > threshold} (a step function: quadrature, not exact)."""
        return self.trace(lambda lam: (lam > threshold).astype(float))

    def directions(self) -> tuple[np.ndarray, np.ndarray]:
        """(nodes, counts) flattened over probes: counts = (D / P) τ_pj, summing to D (zero weights dropped)."""
        keep = self.weights.ravel() > 0
        return self.nodes.ravel()[keep], (self.dim / self.probes) * self.weights.ravel()[keep]


def slq_density(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    *,
    dim: int,
    probes: int = 10,
    steps: int = 100,
    seed: int = 0,
    kept: torch.Tensor | None = None,
    deflate: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> SpectralDensity:
    """Spectral density of the symmetric operator ``hvp`` by stochastic Lanczos quadrature (module docstring).

    Probe p is a standard Gaussian vector (from ``seed``) restricted to the kept coordinates
    (``kept``, 0/1, (d,)), projected onto the orthogonal complement of span(V) (V = ``deflate``, (d, k)
    orthonormal, e.g. the top-k eigenvectors), and normalised: uniform on the unit sphere of that
    D-dimensional space, D = #kept − k. Each probe runs ``steps`` Lanczos steps with full
    reorthogonalisation inside the same space; its tridiagonal matrix gives Gauss nodes and weights.

    Args:
        hvp: v ↦ H v (flat tensors; masked operators must return masked vectors).
        dim: d, the length of the flat vectors.
        probes: P ≥ 1.
        steps: m ≥ 1 Lanczos steps per probe (fewer if the Krylov space is exhausted).
        seed: seed of the probe vectors.
        kept: 0/1 vector of kept coordinates (pruned networks), or None (all kept).
        deflate: V, or None.
        device: where the Lanczos vectors live.

    Returns:
        :class:`SpectralDensity` with D = #kept − k.

    Example:
        >>> lam = torch.linspace(0.0, 1.0, 200, dtype=torch.float64)  # tr H = 100
        >>> rho = slq_density(lambda v: lam * v, dim=200, probes=10, steps=30, seed=0)
        >>> trace, se = rho.moment(1)
        >>> bool(abs(trace - 100.0) < 4 * se), round(float(rho.directions()[1].sum()), 6)
        (True, 200.0)
    """
    dim = check_int("dim", dim, minimum=1)
    probes = check_int("probes", probes, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    keep = None if kept is None else kept.to(device=device, dtype=torch.float64).reshape(-1)
    k = 0 if deflate is None else int(deflate.shape[1])
    space = (dim if keep is None else int(keep.sum())) - k
    if space < 1:
        raise ValueError(f"the probed space must have dimension >= 1, got {space} (kept minus deflated)")
    gen = torch.Generator().manual_seed(int(seed))
    m_max = min(steps, space)
    nodes = np.zeros((probes, m_max))
    weights = np.zeros((probes, m_max))
    for p in range(probes):
        v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device)
        if keep is not None:
            v = v * keep
        run = lanczos(hvp, v, steps=m_max, deflate=deflate)
        th, tau = tridiagonal_quadrature(run.alpha, run.beta)
        nodes[p, : th.size] = th
        weights[p, : th.size] = tau
    return SpectralDensity(nodes=nodes, weights=weights, dim=space)
