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

Gur-Ari, Roberts, Dyer 2018 (arXiv 1812.04754v1): gradients concentrate in a top-k subspace with
k ≈ number of classes — REFERENCE.md §6.

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

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from dptheory.validate import check_int, check_positive
from simulations.nn.engine import LossFn, default_loss, trainable_parameters

__all__ = ["effective_rank", "flatten", "make_hvp", "parameter_dim", "subspace_fraction", "top_eigenpairs"]


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
