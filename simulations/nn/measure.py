"""What a spectral basin model needs from a trained network at its minimum w*, measured.

At w* (a converged SGD point) of the training loss L(w) = (1/n) Σ_i ℓ_i(w), with w the flat
vector of the kept trainable parameters (order of ``simulations.nn.engine.trainable_parameters``;
pruned coordinates are not variables):

* :func:`gradient_statistics` — the per-sample gradients g_i = ∇ℓ_i(w*) of **every** training
  example (materialised in chunks by ``torch.func.vmap``, exact up to float rounding): their norms
  ‖g_i‖ (n,), their projections u_jᵀ g_i on given orthonormal directions U = (u_1 … u_k) (n, k), the
  remaining energy ‖g_i‖² − ‖Uᵀ g_i‖² (n,) and the mean gradient ḡ = (1/n) Σ g_i.
* :func:`measure_basin` — the above with U = the top-k Hessian eigenvectors (one Lanczos run with
  full reorthogonalisation), the spectral density of H in the orthogonal complement of U by
  stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019, arXiv 1901.10159v1), the training
  loss and accuracy, a random unit direction and a near-flat direction (the Ritz vector of H² with
  the smallest Ritz value, i.e. the unit u found with the smallest ‖H u‖) with their curvatures uᵀHu.
  :class:`BasinMeasurement` holds it and round-trips through ``.npz`` (:meth:`~BasinMeasurement.save`,
  :func:`load_measurement`).
* :func:`linearise` — the linearised network f_lin(w) = f(w₀) + J(w₀)(w − w₀) (Lee et al. 2019,
  arXiv 1902.06720v4 eq. 2) on one-hot targets with per-sample loss ℓ_i = ½‖f_lin(x_i) − y_i‖²: an
  exactly quadratic training loss with Hessian H = JᵀJ/n = (1/n) Σ_i J_iᵀ J_i and real, anisotropic
  per-sample gradients g_i = J_iᵀ r_i (r_i the residual). :class:`LinearisedProblem` holds the
  Jacobians, targets, exact Hessian and its least-squares minimum θ*; :class:`LinearisedModel` is the
  network θ ↦ J_i θ that the DP-SGD engine trains like any other (θ = w − w₀; the offset f(w₀) is
  moved into the target y_i − f(w₀)(x_i)).

Nothing here is private: every quantity is a function of the training data (a theory check).

Example (a few seconds):
    >>> import torch
    >>> from simulations.nn.models import build_model
    >>> model = build_model("mlp", input_shape=(5,), num_classes=3, width=6, depth=1, seed=0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    >>> m = measure_basin(model, x, y, top_k=3, probes=2, lanczos_steps=20, seed=0)
    >>> m.top_eigenvalues.shape, m.norms.shape, m.projections.shape, m.density.dim == m.dim - 3
    ((3,), (64,), (64, 3), True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from dptheory.validate import check_int
from simulations.nn.engine import LossFn, default_loss, per_sample_gradients, trainable_parameters
from simulations.nn.hessian import (
    SpectralDensity,
    kept_vector,
    lanczos,
    lanczos_eigenpairs,
    make_hvp,
    parameter_dim,
    slq_density,
)

__all__ = [
    "BasinMeasurement",
    "GradientStatistics",
    "LinearisedModel",
    "LinearisedProblem",
    "evaluate_loss",
    "exact_spectrum",
    "flat_parameters",
    "gradient_statistics",
    "half_squared_error",
    "linearise",
    "load_measurement",
    "measure_basin",
    "per_example_curvatures",
    "set_flat_parameters",
]


# ---------------------------------------------------------------------------------------------
# flat weights, losses


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """w: the trainable parameters of ``model`` as one detached flat vector (engine order)."""
    return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model).values()])


@torch.no_grad()
def set_flat_parameters(model: nn.Module, flat: torch.Tensor) -> None:
    """Write the flat vector ``flat`` (engine order) into the trainable parameters of ``model``."""
    offset = 0
    for p in trainable_parameters(model).values():
        n = p.numel()
        p.copy_(flat[offset : offset + n].reshape(p.shape).to(p.dtype))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, the model {offset}")


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ½‖f(x_i) − y_i‖² (the linearised network's loss; ``loss_fn`` convention of the engine)."""
    return 0.5 * (output - target).pow(2).reshape(output.shape[0], -1).sum(1)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn | None = None, batch_size: int = 1024
) -> float:
    """L = (1/n) Σ_i ℓ_i on (x, y), in eval batches (float64 accumulation)."""
    loss_fn = loss_fn or default_loss
    total = 0.0
    for s in range(0, x.shape[0], batch_size):
        total += float(loss_fn(model(x[s : s + batch_size]), y[s : s + batch_size]).double().sum())
    return total / max(int(x.shape[0]), 1)


# ---------------------------------------------------------------------------------------------
# per-sample gradient statistics


@dataclass(frozen=True)
class GradientStatistics:
    """Per-sample gradient statistics at one point (module docstring); arrays float64.

    ``norms`` (n,) = ‖g_i‖; ``projections`` (n, k) = u_jᵀ g_i; ``residual_energy`` (n,) =
    ‖g_i‖² − Σ_j (u_jᵀ g_i)² (≥ 0 up to rounding); ``mean_gradient_norm`` = ‖ḡ‖; ``bulk_sketch``
    (n, s) = Ω (I − U Uᵀ) g_i for a Gaussian Ω (s × d, i.i.d. N(0, 1/s) on the kept coordinates), or None.
    """

    norms: np.ndarray
    projections: np.ndarray
    residual_energy: np.ndarray
    mean_gradient_norm: float
    bulk_sketch: np.ndarray | None = None

    @property
    def n(self) -> int:
        """n: the number of examples."""
        return int(self.norms.size)


def gradient_statistics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    directions: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    weight_decay: float = 0.0,
    chunk_size: int = 256,
    sketch: int = 0,
    seed: int = 0,
) -> GradientStatistics:
    """Norms, projections on ``directions`` and remaining energy of the per-sample gradients m ⊙ g̃_i.

    g̃_i = g_i + μ w is the gradient of the example's objective ℓ_i + (μ/2)‖m⊙w‖² (μ =
    ``weight_decay``; ``simulations.nn.warmstart``), g̃_i = g_i for μ = 0.

    Args:
        model: the network at the point of interest (parameters read, not changed).
        x, y: the n examples (all of the training set for a basin measurement).
        directions: U, (d, k) orthonormal columns (e.g. top-k Hessian eigenvectors), or None (k = 0).
        masks: name → 0/1 tensor of kept weights (pruned coordinates are not variables).
        loss_fn: per-sample loss (default cross-entropy).
        weight_decay: μ ≥ 0 of the per-example objective.
        chunk_size: examples per vmap call (memory ∝ chunk_size · d).
        sketch: s, rows of the Gaussian bulk sketch (0: none); seed: seeds Ω.

    Returns:
        :class:`GradientStatistics`.
    """
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    params = trainable_parameters(model)
    keep = kept_vector(model, masks).to(torch.float64)
    u = None if directions is None else directions.to(device=keep.device, dtype=torch.float64)
    reg = weight_decay * flat_parameters(model).to(torch.float64) * keep
    norms, projs, sketches, total = [], [], [], torch.zeros_like(keep)
    omega = None
    if sketch:
        gen = torch.Generator().manual_seed(int(seed) + 3)
        omega = (torch.randn(int(sketch), keep.numel(), generator=gen, dtype=torch.float64) / math.sqrt(sketch)).to(
            keep.device
        ) * keep
    for s in range(0, x.shape[0], chunk_size):
        gs = per_sample_gradients(model, x[s : s + chunk_size], y[s : s + chunk_size], loss_fn=loss_fn, method="vmap")
        g = torch.cat([gs[k].reshape(gs[k].shape[0], -1) for k in params], dim=1).to(torch.float64) * keep + reg
        norms.append(g.norm(dim=1))
        total += g.sum(0)
        if u is not None:
            projs.append(g @ u)
        if omega is not None:
            bulk = g - (g @ u) @ u.T if u is not None else g
            sketches.append(bulk @ omega.T)
    norm = torch.cat(norms).cpu().numpy()
    proj = torch.cat(projs).cpu().numpy() if u is not None else np.zeros((norm.size, 0))
    resid = np.maximum(norm**2 - np.sum(proj**2, axis=1), 0.0)
    return GradientStatistics(
        norms=norm,
        projections=proj,
        residual_energy=resid,
        mean_gradient_norm=float((total / max(int(x.shape[0]), 1)).norm()),
        bulk_sketch=torch.cat(sketches).cpu().numpy() if omega is not None else None,
    )


def per_example_curvatures(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    directions: torch.Tensor,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    weight_decay: float = 0.0,
    chunk_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example curvatures on the directions U: (n, k) u_jᵀ H̃_i u_j and (n, k) (u_jᵀ ĝ_i)(ĝ_iᵀ H̃_i u_j).

    H̃_i = diag(m) ∇²ℓ_i diag(m) + μ diag(m) is the Hessian of the example's objective ℓ_i + (μ/2)‖m⊙w‖²
    and ĝ_i = g̃_i / ‖g̃_i‖ its unit gradient (g̃_i as in :func:`gradient_statistics`); these are the
    ``top_curvatures`` / ``top_radial_curvatures`` of ``dptheory.spectral.GradientStatistics`` (the
    drift mean_i J_i H_i of the clipped step instead of J H). Exact per-example Hessian-vector
    products: ``torch.func.jvp`` of the per-example gradient (forward over reverse), vmapped over the
    examples and the k directions (memory ∝ chunk · k · d; the chunk shrinks to keep it under ~2²⁵
    numbers). Cost ≈ 3k per-example gradient passes.
    """
    from torch.func import functional_call, grad, jvp, vmap

    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    loss_fn = loss_fn or default_loss
    params = {k: p.detach() for k, p in trainable_parameters(model).items()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    names = list(params)
    sizes = [p.numel() for p in params.values()]
    keep = kept_vector(model, masks).to(device=directions.device)
    dtype = next(iter(params.values())).dtype
    u = directions.to(dtype) * keep.to(dtype)[:, None]  # (d, k)
    k = int(u.shape[1])
    tangents = {n: t.T.reshape(k, *params[n].shape) for n, t in zip(names, torch.split(u, sizes, dim=0))}
    reg = weight_decay * flat_parameters(model).to(torch.float64) * keep.to(torch.float64)
    keep64, u64 = keep.to(torch.float64), u.to(torch.float64)
    chunk = max(1, min(chunk_size, (1 << 25) // max(k * int(keep.numel()), 1)))

    def loss_one(p, xi, yi):
        return loss_fn(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0)).sum()

    def grad_and_hvp(xi, yi, t):
        return jvp(lambda p: grad(loss_one)(p, xi, yi), (params,), (t,))

    both = vmap(vmap(grad_and_hvp, in_dims=(None, None, 0)), in_dims=(0, 0, None))
    curv, radial = [], []
    for s in range(0, x.shape[0], chunk):
        g, hu = both(x[s : s + chunk], y[s : s + chunk], tangents)  # name -> (b, k, *shape)
        b = x[s : s + chunk].shape[0]
        gf = torch.cat([g[n][:, 0].reshape(b, -1) for n in names], dim=1).to(torch.float64) * keep64 + reg
        hf = torch.cat([hu[n].reshape(b, k, -1) for n in names], dim=2).to(torch.float64) * keep64
        hf = hf + weight_decay * u64.T.unsqueeze(0)  # + μ diag(m) u_j
        ghat = gf / gf.norm(dim=1, keepdim=True).clamp_min(1e-300)
        curv.append(torch.einsum("bkd,dk->bk", hf, u64))
        radial.append((ghat @ u64) * torch.einsum("bkd,bd->bk", hf, ghat))
    return torch.cat(curv).cpu().numpy(), torch.cat(radial).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# the basin at w*


@dataclass(frozen=True)
class BasinMeasurement:
    """Everything measured at w* (module docstring). Arrays float64; vectors on the CPU.

    ``dim`` = kept parameters d; ``parameters`` = all trainable parameters; ``top_eigenvalues`` (k,)
    descending with ``top_residuals`` (k,) and ``top_vectors`` (parameters, k); ``density_nodes`` /
    ``density_weights`` (P, m) of the SLQ density on the complement of the top-k vectors (dimension
    ``density_dim`` = d − k); ``norms`` (n,), ``projections`` (n, k), ``residual_energy`` (n,),
    ``mean_gradient_norm`` (of g̃_i = g_i + μw); ``train_loss`` (L_μ); ``weight_decay`` μ;
    ``random_direction`` / ``flat_direction`` (parameters,) unit vectors with curvatures uᵀHu ``random_curvature`` / ``flat_curvature`` and
    ``flat_gradient_norm`` = ‖H u_flat‖; ``top_curvatures`` / ``top_radial_curvatures`` (n, k) the
    per-example curvatures on the top-k eigenvectors (:func:`per_example_curvatures`; None when not
    measured); ``bulk_sketch`` (n, s) the Gaussian sketch of the gradients' bulk parts (None: s = 0).
    """

    dim: int
    parameters: int
    top_eigenvalues: np.ndarray
    top_residuals: np.ndarray
    top_vectors: np.ndarray
    density_nodes: np.ndarray
    density_weights: np.ndarray
    density_dim: int
    norms: np.ndarray
    projections: np.ndarray
    residual_energy: np.ndarray
    mean_gradient_norm: float
    train_loss: float
    weight_decay: float
    random_direction: np.ndarray
    random_curvature: float
    flat_direction: np.ndarray
    flat_curvature: float
    flat_gradient_norm: float
    top_curvatures: np.ndarray | None = None
    top_radial_curvatures: np.ndarray | None = None
    bulk_sketch: np.ndarray | None = None

    @property
    def density(self) -> SpectralDensity:
        """The bulk :class:`~simulations.nn.hessian.SpectralDensity` (complement of the top-k)."""
        return SpectralDensity(nodes=self.density_nodes, weights=self.density_weights, dim=self.density_dim)

    @property
    def n_train(self) -> int:
        """n: examples the per-sample statistics were taken over."""
        return int(self.norms.size)

    def trace(self) -> tuple[float, float]:
        """(tr H, SE) = Σ top-k eigenvalues + the SLQ estimate of the bulk trace."""
        bulk, se = self.density.moment(1)
        return float(np.sum(self.top_eigenvalues)) + bulk, se

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write every field to ``path`` (``.npz``, no pickles; a path or a binary file object)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in values.items() if v is not None}
        np.savez_compressed(path, **arrays)


def load_measurement(path: str | Path) -> BasinMeasurement:
    """Read a :class:`BasinMeasurement` written by :meth:`BasinMeasurement.save` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        values: dict[str, Any] = {}
        for f in fields(BasinMeasurement):
            if f.name not in data.files:  # an optional field that was not measured
                continue
            arr = data[f.name]
            values[f.name] = arr if arr.ndim else (int(arr) if f.type == "int" else float(arr))
    return BasinMeasurement(**values)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _tridiagonal_eigenvectors(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Unit eigenvectors (columns, ascending eigenvalues) of tridiag(β, α, β)."""
    if alpha.size == 1:
        return np.ones((1, 1))
    from scipy.linalg import eigh_tridiagonal

    return eigh_tridiagonal(alpha, beta)[1]


def measure_basin(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    weight_decay: float = 0.0,
    top_k: int = 16,
    top_steps: int | None = None,
    probes: int = 10,
    lanczos_steps: int = 100,
    flat_steps: int = 40,
    seed: int = 0,
    chunk_size: int = 256,
    curvatures: bool = True,
    sketch: int = 0,
) -> BasinMeasurement:
    """Measure the basin of ``model`` (at w*) on the training set (x, y) (module docstring).

    Args:
        model: the trained network; masks: its pruning masks (or None); loss_fn: per-sample loss.
        weight_decay: μ of the objective L_μ = (1/n) Σ ℓ_i + (μ/2)‖m⊙w‖² (Hessian H + μ I on the kept
            coordinates, per-example gradients g_i + μ w, loss L_μ).
        top_k: k, top eigenpairs from one Lanczos run of ``top_steps`` steps (default max(100, 4k)).
        probes, lanczos_steps: P probes × m steps of deflated stochastic Lanczos quadrature.
        flat_steps: Lanczos steps on H² for the near-flat direction (0: the random direction's
            projection onto the complement of the top-k is used instead).
        seed: seeds the start vector, the probes and the random direction.
        chunk_size: examples per vmap call for the per-sample gradients.
        curvatures: also measure the per-example curvatures on the top-k (:func:`per_example_curvatures`).
        sketch: s rows of the Gaussian bulk sketch of the per-example gradients (0: none).

    Returns:
        :class:`BasinMeasurement`.
    """
    top_k = check_int("top_k", top_k, minimum=1)
    device = next(model.parameters()).device
    data_hvp = make_hvp(model, x, y, loss_fn=loss_fn, masks=masks)
    total = parameter_dim(model)
    keep = kept_vector(model, masks).to(torch.float64)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        out = data_hvp(v).to(torch.float64)
        return out + weight_decay * keep * v.to(torch.float64) if weight_decay else out

    dim = int(keep.sum())
    if top_k >= dim:
        raise ValueError(f"top_k must be < the kept dimension ({dim}), got {top_k}")
    steps = top_steps if top_steps is not None else max(100, 4 * top_k)
    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)
        vals, vecs, resid = lanczos_eigenpairs(
            hvp, dim=total, k=top_k, steps=min(steps, dim), seed=seed, kept=keep, device=device
        )
    density = slq_density(
        hvp, dim=total, probes=probes, steps=lanczos_steps, seed=seed + 1, kept=keep, deflate=vecs, device=device
    )
    grads = gradient_statistics(
        model,
        x,
        y,
        directions=vecs,
        masks=masks,
        loss_fn=loss_fn,
        weight_decay=weight_decay,
        chunk_size=chunk_size,
        sketch=sketch,
        seed=seed,
    )
    gen = torch.Generator().manual_seed(int(seed) + 2)
    rand = _unit(torch.randn(total, generator=gen, dtype=torch.float64).to(device) * keep)

    def curvature(u: torch.Tensor) -> tuple[float, float]:
        with torch.enable_grad():
            hu = hvp(u).to(torch.float64)
        return float(u @ hu), float(hu.norm())

    if flat_steps > 0:
        start = torch.randn(total, generator=gen, dtype=torch.float64).to(device) * keep
        sq = lanczos(lambda v: hvp(hvp(v).to(torch.float64)), start, steps=min(flat_steps, dim), keep_vectors=True)
        s = _tridiagonal_eigenvectors(sq.alpha, sq.beta)
        assert sq.vectors is not None  # keep_vectors=True
        flat = _unit(sq.vectors.T @ torch.as_tensor(s[:, 0], dtype=torch.float64, device=device))
    else:
        flat = _unit(rand - vecs @ (vecs.T @ rand))
    top_curv = top_radial = None
    if curvatures:
        top_curv, top_radial = per_example_curvatures(
            model, x, y, vecs, masks=masks, loss_fn=loss_fn, weight_decay=weight_decay
        )
    rand_curv, _ = curvature(rand)
    flat_curv, flat_norm = curvature(flat)
    loss = evaluate_loss(model, x, y, loss_fn=loss_fn) + 0.5 * weight_decay * float(
        flat_parameters(model).double().pow(2).sum()
    )
    return BasinMeasurement(
        dim=dim,
        parameters=total,
        top_eigenvalues=np.asarray(vals, dtype=float),
        top_residuals=np.asarray(resid, dtype=float),
        top_vectors=vecs.cpu().numpy(),
        density_nodes=density.nodes,
        density_weights=density.weights,
        density_dim=density.dim,
        norms=grads.norms,
        projections=grads.projections,
        residual_energy=grads.residual_energy,
        mean_gradient_norm=grads.mean_gradient_norm,
        train_loss=loss,
        weight_decay=float(weight_decay),
        random_direction=rand.cpu().numpy(),
        random_curvature=rand_curv,
        flat_direction=flat.cpu().numpy(),
        flat_curvature=flat_curv,
        flat_gradient_norm=flat_norm,
        top_curvatures=top_curv,
        top_radial_curvatures=top_radial,
        bulk_sketch=grads.bulk_sketch,
    )


# ---------------------------------------------------------------------------------------------
# the linearised network


class LinearisedModel(nn.Module):
    """θ ↦ J_i θ for inputs J_i (c, d): the linearised network around w₀ with θ = w − w₀ (module docstring).

    ``forward(jac)`` maps a batch of Jacobians (b, c, d) to outputs (b, c). Its only trainable
    parameter ``theta`` (d,) starts at ``init`` (zeros: w = w₀).
    """

    def __init__(self, dim: int, *, dtype: torch.dtype = torch.float64, init: torch.Tensor | None = None):
        super().__init__()
        dim = check_int("dim", dim, minimum=1)
        start = torch.zeros(dim, dtype=dtype) if init is None else init.detach().to(dtype).clone()
        self.theta = nn.Parameter(start)

    def forward(self, jac: torch.Tensor) -> torch.Tensor:
        return jac @ self.theta


@dataclass(frozen=True)
class LinearisedProblem:
    """The linearised network's data (module docstring); tensors float64 on the CPU.

    ``jac_train`` (n, c, d) = J_i = ∂f(x_i; w₀)/∂w; ``target_train`` (n, c) = y_i − f(x_i; w₀)
    (one-hot y_i); the same for the test split; ``hessian`` (d, d) = JᵀJ/n (exact); ``minimum`` (d,)
    = θ*, the minimum-norm least-squares solution of J θ = target (the training minimum).
    """

    jac_train: torch.Tensor
    target_train: torch.Tensor
    jac_test: torch.Tensor
    target_test: torch.Tensor
    hessian: torch.Tensor
    minimum: torch.Tensor

    @property
    def dim(self) -> int:
        """d: the number of parameters."""
        return int(self.hessian.shape[0])

    def model(self) -> LinearisedModel:
        """A :class:`LinearisedModel` at the training minimum θ*."""
        return LinearisedModel(self.dim, init=self.minimum)

    def train_loss(self, theta: torch.Tensor) -> float:
        """L(θ) = (1/2n) ‖J θ − target‖² on the training split."""
        r = self.jac_train @ theta.to(torch.float64) - self.target_train
        return float(0.5 * r.pow(2).sum() / self.jac_train.shape[0])


def _jacobian(model: nn.Module, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    from torch.func import functional_call, jacrev, vmap

    params = {k: p.detach() for k, p in trainable_parameters(model).items()}
    names = list(params)

    def out_one(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    parts = []
    for s in range(0, x.shape[0], chunk_size):
        jac = vmap(jacrev(out_one), in_dims=(None, 0))(params, x[s : s + chunk_size])
        parts.append(torch.cat([jac[k].reshape(jac[k].shape[0], jac[k].shape[1], -1) for k in names], dim=2))
    return torch.cat(parts).to(torch.float64)


def linearise(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    num_classes: int,
    chunk_size: int = 64,
) -> LinearisedProblem:
    """Linearise ``model`` at its current weights w₀ on one-hot targets (module docstring).

    Args:
        model: the network f(·; w₀) (its weights are read, not changed).
        x_train, y_train, x_test, y_test: inputs and integer labels.
        num_classes: c, the one-hot width (= the model's output width).
        chunk_size: examples per Jacobian call.

    Returns:
        :class:`LinearisedProblem`; θ* by ``torch.linalg.lstsq`` (driver ``gelsd``: minimum norm).

    Raises:
        ValueError: if the model's output width is not ``num_classes``.

    Example:
        >>> from simulations.nn.models import build_model
        >>> net = build_model("mlp", input_shape=(3,), num_classes=2, width=4, depth=1, seed=0)
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
        >>> lin = linearise(net, x, y, x[:5], y[:5], num_classes=2)
        >>> grad = lin.hessian @ lin.minimum - torch.einsum("ncd,nc->d", lin.jac_train, lin.target_train) / 30
        >>> lin.jac_train.shape, bool(grad.abs().max() < 1e-8)
        (torch.Size([30, 2, 26]), True)
    """
    with torch.no_grad():
        f0_train = model(x_train).to(torch.float64)
        f0_test = model(x_test).to(torch.float64)
    if f0_train.shape[1] != num_classes:
        raise ValueError(f"num_classes must equal the model's output width {f0_train.shape[1]}, got {num_classes}")
    eye = torch.eye(num_classes, dtype=torch.float64)
    jac_tr = _jacobian(model, x_train, chunk_size).cpu()
    jac_te = _jacobian(model, x_test, chunk_size).cpu()
    t_tr = (eye[y_train.cpu()] - f0_train.cpu()).contiguous()
    t_te = (eye[y_test.cpu()] - f0_test.cpu()).contiguous()
    n, c, d = jac_tr.shape
    flat = jac_tr.reshape(n * c, d)
    hessian = flat.T @ flat / n
    theta = torch.linalg.lstsq(flat, t_tr.reshape(-1, 1), driver="gelsd").solution.reshape(-1)
    return LinearisedProblem(
        jac_train=jac_tr, target_train=t_tr, jac_test=jac_te, target_test=t_te, hessian=hessian, minimum=theta
    )


def exact_spectrum(hessian: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, eigenvectors as columns) of a dense symmetric H (float64, ``eigh``)."""
    vals, vecs = torch.linalg.eigh(0.5 * (hessian + hessian.T).to(torch.float64))
    return vals.flip(0).numpy(), vecs.flip(1).numpy()
