"""The DP-SGD gradient of a PyTorch network: per-sample gradients, flat clipping, Gaussian noise.

One call of :func:`private_gradient` computes, for a batch {(x_i, y_i)}_{i∈S},

    ĝ = (1/B) [ Σ_{i∈S} φ_i · (m ⊙ g_i) + ν · (m ⊙ ξ) ],   ξ ~ N(0, I_d),
    φ_i = min(1, C / (‖m ⊙ g_i‖ + 1e-6))      (Opacus 1.6 DPOptimizer semantics, flat clipping),

g_i = ∇_w ℓ(f_w(x_i), y_i) the per-sample gradient over ALL trainable parameters concatenated
("flat", all-layer clipping), C = ``clip_norm`` (``math.inf``: no clipping, φ_i = 1 exactly),
ν = ``noise_std`` (std of the noise on the **sum**: σC for DP-SGD, σ·C_ref for the noise-only
ablation, 0 without noise), B = ``expected_batch_size`` (q·n under Poisson sampling, NOT the
realised |S|), m = ``masks`` (0/1 per parameter; pruned coordinates get neither gradient nor noise).
The noise ξ is drawn from ``generator`` in every call, also when ν = 0, so that runs in different
modes consume identical random streams (paired comparisons). An empty batch gives ĝ = ν m⊙ξ / B.

Per-sample gradient methods (``method``), all exact up to float rounding:

* ``"bk"`` — book-keeping / ghost norms (Bu et al. 2023, arXiv 2210.00038v3; Li et al. 2022,
  arXiv 2110.05679v6 §4): for a model whose only parametrised layers are ``nn.Linear`` applied to
  2-D inputs, the per-sample gradient of a layer is δ_i a_iᵀ (a_i its input, δ_i the gradient of
  the summed loss w.r.t. its output), so ‖g_i‖² = Σ_layers (‖a_i‖²‖δ_i‖² + ‖δ_i‖²) and the clipped
  sum is δᵀ diag(φ) a — one forward and one backward, no per-sample gradient is materialised.
  With a mask M (out × in) on a weight, the per-sample gradient is M ⊙ (δ_i a_iᵀ) and, as M is
  0/1 (M² = M), ‖M ⊙ δ_i a_iᵀ‖² = Σ_jk M_jk δ_ij² a_ik² = Σ_k [(Δ∘Δ) M]_ik (A∘A)_ik — one
  (|S| × out)·(out × in) matrix product for the whole batch (Δ, A the stacked δ_i, a_i); the
  clipped sum is M ⊙ (Δᵀ diag(φ) A); a bias mask m_b gives Σ_j m_bj δ_ij² and m_b ⊙ Σ_i φ_i δ_i
  (derived here; tested against the per-example loop and vmap on random masks). A Linear layer
  called on a 3-D (sequence) input is not handled: ``"auto"`` then falls back to ``"vmap"``.
* ``"vmap"`` — ``torch.func.vmap(grad(·))`` over the batch in chunks of ``chunk_size`` (any model
  without cross-example layers such as BatchNorm, and without dropout).
* ``"loop"`` — one backward per example: the slow, obviously correct reference for tests.
* ``"auto"`` — ``"bk"`` when it applies (with or without masks), else ``"vmap"`` (chosen by measurement:
  ``benchmarks/bench_nn.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from dptheory.validate import check_int, check_nonnegative, check_positive, check_positive_or_inf

__all__ = [
    "CLIP_EPS",
    "METHODS",
    "PrivateGradient",
    "bk_applicable",
    "per_sample_gradients",
    "private_gradient",
    "trainable_parameters",
]

METHODS = ("auto", "bk", "vmap", "loop")
CLIP_EPS = 1e-6  # Opacus: clip factor C / (‖g‖ + 1e-6), clamped at 1

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ℓ(f(x_i), y_i) (``reduction=\"none\"``): the default ``loss_fn``."""
    return nn.functional.cross_entropy(output, target, reduction="none")


def trainable_parameters(model: nn.Module) -> dict[str, torch.nn.Parameter]:
    """The trainable parameters of ``model`` by name, in registration order (the flat order of w)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@dataclass
class PrivateGradient:
    """Result of :func:`private_gradient`.

    ``grads``: name → ĝ for that parameter (what to put in ``p.grad``);
    ``per_sample_norms``: ‖m ⊙ g_i‖ for i ∈ S (shape (|S|,), before clipping);
    ``clip_factors``: φ_i (ones when unclipped);
    ``noise_norm``: ν‖m ⊙ ξ‖ (norm of the noise added to the sum);
    ``unclipped_sum`` / ``clipped_sum``: Σ m⊙g_i and Σ φ_i m⊙g_i by name — only when
    ``keep_sums=True`` (for the costly diagnostics: clipping bias, cosine), else ``None``.
    """

    grads: dict[str, torch.Tensor]
    per_sample_norms: torch.Tensor
    clip_factors: torch.Tensor
    noise_norm: float
    batch_size: int
    unclipped_sum: dict[str, torch.Tensor] | None = field(default=None)
    clipped_sum: dict[str, torch.Tensor] | None = field(default=None)


def bk_applicable(model: nn.Module) -> bool:
    """True if every module that owns trainable parameters is an ``nn.Linear`` and no parameter is
    shared between modules (2-D inputs and single use per forward are checked at run time)."""
    seen: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, nn.Linear):
            return False
        for p in own:
            if id(p) in seen:
                return False
            seen.add(id(p))
    return True


# ---------------------------------------------------------------------------------------------
# per-sample gradients: three methods


def per_sample_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn | None = None, method: str = "vmap"
) -> dict[str, torch.Tensor]:
    """Materialised per-sample gradients name → (|S|, *shape) by ``"vmap"`` or ``"loop"`` (for tests/diagnostics)."""
    loss_fn = loss_fn or default_loss
    params = trainable_parameters(model)
    if method == "loop":
        out = {k: torch.zeros((x.shape[0],) + p.shape, dtype=p.dtype, device=p.device) for k, p in params.items()}
        for i in range(x.shape[0]):
            loss = loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum()
            gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (k, _), g in zip(params.items(), gs):
                if g is not None:
                    out[k][i] = g
        return out
    if method == "vmap":
        return _vmap_grads(model, params, x, y, loss_fn)
    raise ValueError(f"method must be 'vmap' or 'loop' for materialised per-sample gradients, got {method!r}")


def _vmap_grads(model, params, x, y, loss_fn):
    detached = {k: p.detach() for k, p in params.items()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p, b, xi, yi):
        out = functional_call(model, (p, b), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0)).sum()

    return vmap(grad(loss_one), in_dims=(None, None, 0, 0))(detached, buffers, x, y)


def _clip_factors(norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    if math.isinf(clip_norm):
        return torch.ones_like(norms)
    return (clip_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def _materialised_sums(model, params, x, y, loss_fn, clip_norm, masks, method, chunk_size, keep_sums):
    clipped = {k: torch.zeros_like(p) for k, p in params.items()}
    unclipped = {k: torch.zeros_like(p) for k, p in params.items()} if keep_sums else None
    norms_all, factors_all = [], []
    for start in range(0, x.shape[0], chunk_size):
        xs, ys = x[start : start + chunk_size], y[start : start + chunk_size]
        gs = per_sample_gradients(model, xs, ys, loss_fn=loss_fn, method=method)
        if masks is not None:
            gs = {k: g * masks[k] if k in masks else g for k, g in gs.items()}
        sq = torch.zeros(xs.shape[0], dtype=torch.float32, device=xs.device)
        for g in gs.values():
            sq = sq + g.reshape(g.shape[0], -1).float().pow(2).sum(1)
        norms = sq.sqrt()
        phi = _clip_factors(norms, clip_norm)
        for k, g in gs.items():
            clipped[k] += torch.einsum("b,b...->...", phi.to(g.dtype), g)
            if unclipped is not None:
                unclipped[k] += g.sum(0)
        norms_all.append(norms)
        factors_all.append(phi)
    return clipped, unclipped, torch.cat(norms_all), torch.cat(factors_all)


class _NotBK(Exception):
    pass


def _bk_sums(model, params, x, y, loss_fn, clip_norm, keep_sums, masks=None):
    """Book-keeping: per-sample norms and clipped sums of Linear-only models from (a, δ) pairs.

    With ``masks`` (name → 0/1 tensor; missing names kept), ‖m⊙g_i‖² per layer is
    Σ_k [(Δ∘Δ) M]_ik (A∘A)_ik for the weight and (Δ∘Δ) m_b for the bias, and the sums are masked
    (module docstring)."""
    records: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
    seen: set[int] = set()

    def hook(module, inputs, output):
        if id(module) in seen or inputs[0].dim() != 2:
            raise _NotBK()
        seen.add(id(module))
        records.append((module, inputs[0].detach(), output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    loss = loss_fn(out, y).sum()
    outputs = [o for _, _, o in records]
    deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
    name_of = {id(p): k for k, p in params.items()}
    masks = masks or {}

    def mask_of(p):
        return masks.get(name_of[id(p)])

    sq = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    terms = []
    for (module, a, o), d in zip(records, deltas):
        d = torch.zeros_like(o) if d is None else d.detach()
        d2 = d.float().pow(2)
        if module.weight.requires_grad:
            m = mask_of(module.weight)
            if m is None:
                sq = sq + a.float().pow(2).sum(1) * d2.sum(1)
            else:  # ‖M ⊙ δ_i a_iᵀ‖² = Σ_k [(Δ∘Δ) M]_ik a_ik²  (M² = M)
                sq = sq + ((d2 @ m.float()) * a.float().pow(2)).sum(1)
        if module.bias is not None and module.bias.requires_grad:
            mb = mask_of(module.bias)
            sq = sq + (d2.sum(1) if mb is None else d2 @ mb.float())
        terms.append((module, a, d))
    norms = sq.sqrt()
    phi = _clip_factors(norms, clip_norm)
    clipped = {k: torch.zeros_like(p) for k, p in params.items()}
    unclipped = {k: torch.zeros_like(p) for k, p in params.items()} if keep_sums else None
    for module, a, d in terms:
        dphi = d * phi.to(d.dtype).unsqueeze(1)
        if module.weight.requires_grad:
            clipped[name_of[id(module.weight)]] += dphi.t() @ a
            if unclipped is not None:
                unclipped[name_of[id(module.weight)]] += d.t() @ a
        if module.bias is not None and module.bias.requires_grad:
            clipped[name_of[id(module.bias)]] += dphi.sum(0)
            if unclipped is not None:
                unclipped[name_of[id(module.bias)]] += d.sum(0)
    for k, m in masks.items():  # the sums of M ⊙ g_i
        clipped[k].mul_(m)
        if unclipped is not None:
            unclipped[k].mul_(m)
    return clipped, unclipped, norms, phi


# ---------------------------------------------------------------------------------------------
# the DP-SGD gradient


def private_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip_norm: float,
    noise_std: float,
    expected_batch_size: float,
    generator: torch.Generator,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    method: str = "auto",
    chunk_size: int = 256,
    keep_sums: bool = False,
) -> PrivateGradient:
    """ĝ = (1/B)[Σ_i φ_i m⊙g_i + ν m⊙ξ] (module docstring): the clipped, noised, averaged gradient.

    Arguments: ``model`` (its parameters are read, not changed; ``p.grad`` untouched), the batch
    ``x``, ``y`` (may be empty), ``clip_norm`` = C (``math.inf`` = unclipped), ``noise_std`` = ν on
    the sum, ``expected_batch_size`` = B, ``generator`` = the noise stream (on the parameters'
    device), ``masks`` = name → 0/1 tensor (missing names: kept), ``loss_fn(output, target)`` →
    per-sample losses (default cross-entropy, ``reduction="none"``), ``method`` ∈ METHODS,
    ``chunk_size`` = examples per vmap call (memory bound), ``keep_sums`` = also return Σ m⊙g_i and
    Σ φ_i m⊙g_i (diagnostics).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
        >>> out = private_gradient(model, x, y, clip_norm=1.0, noise_std=0.0, expected_batch_size=5,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> bool((out.per_sample_norms.numel() == 5) and (out.clip_factors <= 1).all())
        True
    """
    clip_norm = check_positive_or_inf("clip_norm", clip_norm)
    noise_std = check_nonnegative("noise_std", noise_std)
    expected_batch_size = check_positive("expected_batch_size", expected_batch_size)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    loss_fn = loss_fn or default_loss
    params = trainable_parameters(model)
    if masks is not None:
        unknown = set(masks) - set(params)
        if unknown:
            raise ValueError(f"masks names must be trainable parameters, got unknown {sorted(unknown)[:3]}")
    n = int(x.shape[0])

    if n == 0:
        clipped = {k: torch.zeros_like(p) for k, p in params.items()}
        unclipped = {k: torch.zeros_like(p) for k, p in params.items()} if keep_sums else None
        norms = torch.zeros(0, device=next(iter(params.values())).device)
        phi = torch.zeros_like(norms)
    else:
        use = method
        if method == "auto":
            use = "bk" if bk_applicable(model) else "vmap"
        if use == "bk":
            if not bk_applicable(model):
                raise ValueError("method='bk' needs a model whose parametrised layers are all nn.Linear")
            try:
                clipped, unclipped, norms, phi = _bk_sums(model, params, x, y, loss_fn, clip_norm, keep_sums, masks)
            except _NotBK:
                if method == "bk":
                    raise ValueError("method='bk' needs each nn.Linear called once on a 2-D input") from None
                use = "vmap"
        if use in ("vmap", "loop"):
            clipped, unclipped, norms, phi = _materialised_sums(
                model, params, x, y, loss_fn, clip_norm, masks, use, chunk_size, keep_sums
            )

    grads = {}
    noise_sq = torch.zeros((), dtype=torch.float32, device=next(iter(params.values())).device)
    for k, p in params.items():
        xi = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        total = clipped[k].clone() if keep_sums else clipped[k]
        if masks is not None and k in masks:
            xi.mul_(masks[k])
            total.mul_(masks[k])
            if keep_sums:
                clipped[k] = total.clone()
        noise_sq = noise_sq + xi.float().pow(2).sum()
        grads[k] = total.add_(xi, alpha=noise_std).div_(expected_batch_size)
    return PrivateGradient(
        grads=grads,
        per_sample_norms=norms.detach(),
        clip_factors=phi.detach(),
        noise_norm=noise_std * float(noise_sq.sqrt()),
        batch_size=n,
        unclipped_sum=unclipped,
        clipped_sum=clipped if keep_sums else None,
    )
