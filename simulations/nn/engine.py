"""The DP-SGD gradient of a PyTorch network: per-sample gradients, flat clipping, Gaussian noise.

One call of :func:`private_gradient` computes, for a batch {(x_i, y_i)}_{i∈S},

    ĝ = (1/B) [ Σ_{i∈S} φ_i · (m ⊙ g_i) + ν · (m ⊙ ξ) ],   ξ ~ N(0, I_d),
    φ_i = min(1, C / (‖m ⊙ g_i‖ + 1e-6))      (Opacus 1.6 DPOptimizer semantics, flat clipping),
    φ_i = C / (‖m ⊙ g_i‖ + γ),  γ = 0.01       (``clip_rule="normalised"``: automatic clipping AUTO-S,
                                               Bu et al. 2022, arXiv 2206.07136v3 §4),

g_i = ∇_w ℓ(f_w(x_i), y_i) the per-sample gradient over ALL trainable parameters concatenated
("flat", all-layer clipping), C = ``clip_norm`` (``math.inf``: no clipping, φ_i = 1 exactly; the
normalised rule needs a finite C). Under both rules ‖φ_i m⊙g_i‖ ≤ C, so one example moves the sum by
at most C (the sensitivity the accountant assumes); under the normalised rule every example is
rescaled to norm ≈ C whatever its size, so only η·C matters and C needs no tuning,
ν = ``noise_std`` (std of the noise on the **sum**: σC for DP-SGD, σ·C_ref for the noise-only
ablation, 0 without noise), B = ``expected_batch_size`` (q·n under Poisson sampling, NOT the
realised |S|), m = ``masks`` (0/1 per parameter; pruned coordinates get neither gradient nor noise).
The noise ξ is drawn from ``generator`` in every call, also when ν = 0, so that runs in different
modes consume identical random streams (paired comparisons). An empty batch gives ĝ = ν m⊙ξ / B.

Per-sample gradient methods (``method``), all exact up to float rounding:

* ``"bk"`` — book-keeping (Bu et al. 2023, arXiv 2210.00038v3) with ghost norms (Li et al. 2022,
  arXiv 2110.05679v6 §4) and mixed ghost clipping for convolutions (Bu, Mao, Xu 2022, arXiv
  2205.10683): one forward and one backward that computes only output gradients δ (no weight
  gradients); during that backward each parametrised layer call turns its input a and its δ into
  per-sample squared norms (``simulations.nn.persample``: ghost norm or instantiation per layer,
  closed forms for GroupNorm/LayerNorm and weight-standardised convs, masks ‖M ⊙ g_i‖²); after it,
  the clipped sum is one φ-weighted matmul / convolution weight gradient per layer. Supported layers:
  ``nn.Linear`` on inputs of any rank ≥ 2 (positions, e.g. sequences, summed per example),
  ``nn.Conv1d``/``nn.Conv2d`` (stride, padding, dilation, groups, bias or not), ``WSConv1d``/
  ``WSConv2d``, ``nn.GroupNorm``, ``nn.LayerNorm``; a parameter used by several calls (a layer called
  twice, tied weights) has its calls' per-sample gradients instantiated and summed. With a mask M on a
  weight, the per-sample gradient is M ⊙ g_i (2-D Linear: ‖M ⊙ δ_i a_iᵀ‖² = Σ_k [(δ_i∘δ_i)ᵀ M]_k a_ik²,
  one matrix product; other layers: instantiation), the sum is M ⊙ Σ φ_i g_i.
  Memory: the (a, δ) pairs of weights used once are kept until the sums (at most the activations a
  non-private backward frees as it goes); a conv weight whose norm needed instantiation keeps its
  per-sample gradients instead when they are at most ``KEEP_FACTOR`` times that pair's size, and the
  ghost/instantiation choice then credits instantiation with the weight-gradient pass it saves.
  **Privacy precondition.** Row i of a layer input must BE example i: a model that reshapes (B, L, F)
  to (B·L, F) before a Linear layer would otherwise be clipped row by row, letting one example
  contribute up to L·C and breaking the sensitivity bound. ``"bk"`` is therefore used only when
  ``simulations.nn.separability.per_example_proof`` proves it from the traced forward graph (and the
  hooked inputs have B rows); a custom ``loss_fn`` is evaluated example by example under
  ``torch.vmap``, so it cannot mix examples either.
* ``"vmap"`` — ``torch.func.vmap(grad(·))`` over the batch in chunks of ``chunk_size`` (any model
  without cross-example layers such as BatchNorm, and without dropout).
* ``"loop"`` — one backward per example: the slow, obviously correct reference for tests.
* ``"auto"`` — ``"bk"`` when the proof succeeds (with or without masks), else ``"vmap"``; forcing
  ``"bk"`` on a model without proof raises ``ValueError`` with the reason.

``per_sample=False`` (only with C = ∞) skips per-sample work: one backward of the summed loss gives
Σ_i m⊙g_i directly (equal to the per-sample sum up to float rounding for models without cross-example
layers); the noise is still drawn, so random streams stay paired; ``per_sample_norms`` is then NaN
(not computed) and ``clip_factors`` is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from dptheory.validate import check_int, check_nonnegative, check_positive, check_positive_or_inf
from simulations.nn import persample as ps
from simulations.nn.layers import standardize_weight
from simulations.nn.separability import PARAMETRISED_LAYERS, per_example_proof

__all__ = [
    "CLIP_EPS",
    "CLIP_RULES",
    "KEEP_FACTOR",
    "METHODS",
    "NORMALISED_GAMMA",
    "PrivateGradient",
    "bk_applicable",
    "clip_factors",
    "per_sample_gradients",
    "private_gradient",
    "trainable_parameters",
]

METHODS = ("auto", "bk", "vmap", "loop")
CLIP_EPS = 1e-6  # Opacus: clip factor C / (‖g‖ + 1e-6), clamped at 1
CLIP_RULES = ("flat", "normalised")
NORMALISED_GAMMA = 0.01  # AUTO-S stability constant γ (arXiv 2206.07136v3 §4: γ = 0.01 throughout)

KEEP_FACTOR = 1.0  # kept conv per-sample gradients: at most this × the size of the (a, δ) they replace

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
    ``per_sample_norms``: ‖m ⊙ g_i‖ for i ∈ S (shape (|S|,), before clipping; NaN with ``per_sample=False``);
    ``clip_factors``: φ_i (ones when unclipped);
    ``noise_norm``: ν‖m ⊙ ξ‖ (norm of the noise added to the sum);
    ``unclipped_sum`` / ``clipped_sum``: Σ m⊙g_i and Σ φ_i m⊙g_i by name — only when
    ``keep_sums=True`` (for the costly diagnostics: clipping bias, cosine), else ``None``;
    ``method``: the per-sample method actually used (``"bk"``, ``"vmap"``, ``"loop"``, or ``"none"``
    for ``per_sample=False`` and empty batches).
    """

    grads: dict[str, torch.Tensor]
    per_sample_norms: torch.Tensor
    clip_factors: torch.Tensor
    noise_norm: float
    batch_size: int
    unclipped_sum: dict[str, torch.Tensor] | None = field(default=None)
    clipped_sum: dict[str, torch.Tensor] | None = field(default=None)
    method: str = field(default="")


def bk_applicable(model: nn.Module) -> bool:
    """True if every module that owns trainable parameters is one of the layers book-keeping
    differentiates in closed form (exact types; module docstring). Necessary, not sufficient: at run
    time ``per_example_proof`` must also prove that the layers' rows are the examples."""
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and type(module) not in PARAMETRISED_LAYERS:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# per-sample gradients: materialised (vmap, loop)


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


def clip_factors(norms: torch.Tensor, clip_norm: float, rule: str = "flat") -> torch.Tensor:
    """φ_i of the module docstring for per-sample norms ``norms``: ``"flat"`` min(1, C/(‖g_i‖+1e-6))
    (1 where C = ∞), ``"normalised"`` C/(‖g_i‖+γ). Both keep ‖φ_i g_i‖ < C for finite C.

    Example:
        >>> clip_factors(torch.tensor([0.5, 4.0]), 1.0).tolist()
        [1.0, 0.24999994039535522]
        >>> [round(v, 4) for v in clip_factors(torch.tensor([0.5, 4.0]), 1.0, "normalised").tolist()]
        [1.9608, 0.2494]
    """
    if rule == "normalised":
        return clip_norm / (norms + NORMALISED_GAMMA)
    if math.isinf(clip_norm):
        return torch.ones_like(norms)
    return (clip_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def _materialised_sums(model, params, x, y, loss_fn, clip_norm, masks, method, chunk_size, keep_sums, rule, copies=1):
    clipped = {k: torch.zeros_like(p) for k, p in params.items()}
    unclipped = {k: torch.zeros_like(p) for k, p in params.items()} if keep_sums else None
    norms_all, factors_all = [], []
    rows = max(chunk_size // copies, 1) * copies  # whole examples per chunk
    for start in range(0, x.shape[0], rows):
        xs, ys = x[start : start + rows], y[start : start + rows]
        gs = per_sample_gradients(model, xs, ys, loss_fn=loss_fn, method=method)
        if copies > 1:  # augmentation multiplicity: example i's gradient is the mean over its copies
            gs = {name: g.reshape(g.shape[0] // copies, copies, *g.shape[1:]).mean(1) for name, g in gs.items()}
        if masks is not None:
            gs = {k: g * masks[k] if k in masks else g for k, g in gs.items()}
        dtype = torch.promote_types(next(iter(params.values())).dtype, torch.float32)
        sq = torch.zeros(xs.shape[0] // copies, dtype=dtype, device=xs.device)
        for g in gs.values():
            sq = sq + g.reshape(g.shape[0], -1).to(dtype).pow(2).sum(1)
        norms = sq.sqrt()
        phi = clip_factors(norms, clip_norm, rule)
        for k, g in gs.items():
            clipped[k] += torch.einsum("b,b...->...", phi.to(g.dtype), g)
            if unclipped is not None:
                unclipped[k] += g.sum(0)
        norms_all.append(norms)
        factors_all.append(phi)
    return clipped, unclipped, torch.cat(norms_all), torch.cat(factors_all)


# ---------------------------------------------------------------------------------------------
# book-keeping


class _NotBK(Exception):
    pass


class _Tap(torch.autograd.Function):
    """Identity on a layer output whose backward hands δ to ``call`` (no copy in either direction).
    The extra input ``z`` (a 0-d leaf) makes autograd reach every layer when differentiating w.r.t. the
    z's only, so no weight gradient is ever computed."""

    @staticmethod
    def forward(ctx, output, z, call):
        ctx.call = call
        ctx.mark_dirty(output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        ctx.call.receive(grad_output)
        return grad_output, None, None


class _BookKeeper:
    """The state of one book-keeping pass: per-sample squared norms ``sq``, instantiated per-sample
    gradients of parameters used once (``per_sample``: biases, norm layers; ``kept``: conv weights
    whose norm was computed by instantiation; their norms are already in ``sq``) and of shared
    parameters (``shared``: summed over calls, norms added after the backward), and the (a, δ) pairs
    of weights used once (``factored``: the sum is a weight gradient of φ∘δ after the backward)."""

    def __init__(self, params, masks, uses, batch, dtype, device):
        self.name_of = {id(p): k for k, p in params.items()}
        self.masks = masks or {}
        self.uses = uses
        self.batch = batch
        self.sq = torch.zeros(batch, dtype=dtype, device=device)
        self.per_sample: dict[str, torch.Tensor] = {}
        self.shared: dict[str, torch.Tensor] = {}
        self.kept: dict[str, tuple[ps.KeptGradients, nn.Module]] = {}  # conv weights instantiated once
        self.factored: list[tuple] = []  # (name, kind, a, d, module)
        self.geoms: dict[int, ps.ConvGeometry] = {}

    def key(self, p):
        return self.name_of.get(id(p)) if p is not None and p.requires_grad else None

    def single(self, p) -> bool:
        return self.uses[id(p)] == 1

    def add_per_sample(self, k, p, g, sq=None):
        """Record example-wise gradients ``g`` (B, *shape) of parameter ``p`` (named ``k``) from one call;
        ``sq`` = ‖g_i‖² when already known (unmasked)."""
        if not self.single(p):
            self.shared[k] = self.shared[k] + g if k in self.shared else g
            return
        m = self.masks.get(k)
        if m is not None:
            sq = (g * m).reshape(self.batch, -1).pow(2).sum(1)
        elif sq is None:
            sq = g.reshape(self.batch, -1).pow(2).sum(1)
        self.sq += sq
        self.per_sample[k] = g

    def geometry(self, module):
        if id(module) not in self.geoms:
            self.geoms[id(module)] = ps.conv_geometry(module)
        return self.geoms[id(module)]


class _Call:
    """One call of a parametrised layer: its input (and, for WS ghost layers, its output)."""

    __slots__ = ("a", "book", "module", "output", "version")

    def __init__(self, book, module, a):
        self.book, self.module, self.a = book, module, a
        self.output = None
        self.version = -1

    def receive(self, d):
        """Called by the backward with δ = ∂L/∂output: add this call's per-sample contributions."""
        book, m, a = self.book, self.module, self.a
        d = d.detach()
        if d.dtype != book.sq.dtype:
            d = d.to(book.sq.dtype)
        if a.dtype != d.dtype:
            a = a.to(d.dtype)
        t = type(m)
        if t is nn.Linear:
            _receive_linear(book, m, a, d)
        elif t in ps.CONV_TYPES:
            _receive_conv(book, m, a, d, self.output, self.version)
        elif t is nn.GroupNorm:
            gw, gb = ps.group_norm_per_sample(a, d, num_groups=m.num_groups, eps=m.eps)
            _add_affine(book, m, gw, gb)
        elif t is nn.LayerNorm:
            gw, gb = ps.layer_norm_per_sample(a, d, normalized_shape=tuple(m.normalized_shape), eps=m.eps)
            _add_affine(book, m, gw, gb)
        self.a = self.output = None  # release what is no longer needed


def _receive_linear(book, m, a, d):
    b = book.batch  # examples: with K copies per example (rows i·K … i·K+K−1) they become K positions
    a3, d3 = a.reshape(b, -1, a.shape[-1]), d.reshape(b, -1, d.shape[-1])
    kw, kb = book.key(m.weight), book.key(m.bias)
    if a3.shape[1] == 1:  # one position per example: ‖δ_i a_iᵀ‖² = ‖a_i‖²‖δ_i‖²
        a2, d2 = a3[:, 0], d3[:, 0]
        dsq = d2.pow(2)
        dsq_sum = dsq.sum(1)
        if kw is not None:
            if book.single(m.weight):
                mask = book.masks.get(kw)
                if mask is None:
                    book.sq += a2.pow(2).sum(1) * dsq_sum
                else:
                    book.sq += ((dsq @ mask.to(dsq.dtype)) * a2.pow(2)).sum(1)
                book.factored.append((kw, "linear", a3, d3, m))
            else:
                book.add_per_sample(kw, m.weight, ps.linear_per_sample(a3, d3))
        if kb is not None:
            book.add_per_sample(kb, m.bias, d2, sq=dsq_sum)
        return
    if kw is not None:
        if book.single(m.weight):
            book.sq += ps.linear_sq_norms(a3, d3, mask=book.masks.get(kw))
            book.factored.append((kw, "linear", a3, d3, m))
        else:
            book.add_per_sample(kw, m.weight, ps.linear_per_sample(a3, d3))
    if kb is not None:
        book.add_per_sample(kb, m.bias, d3.sum(1))


def _receive_conv(book, m, a, d, output, version):
    geom = book.geometry(m)
    ws = (m.weight, m.eps, m.scaled) if type(m) in ps.WS_TYPES else None
    kw, kb = book.key(m.weight), book.key(m.bias)
    if kw is not None:
        if book.single(m.weight):
            if output is not None:
                if output._version != version:  # modified in place downstream: recompute o − b
                    output = m._conv_forward(a, _conv_weight(m).to(a.dtype), None)
                elif m.bias is not None:
                    output = output - m.bias.detach().to(output.dtype).view(1, -1, *([1] * (output.dim() - 2)))
            keep = _keeps(m, a, d)
            sq, kept = ps.conv_sq_norms(a, d, geom, mask=book.masks.get(kw), ws=ws, output=output, keep=keep)
            book.sq += sq
            if kept is None:
                book.factored.append((kw, "conv", a, d, m))
            else:
                book.kept[kw] = (kept, m)
        else:
            g = ps.conv_per_sample(a, d, geom)
            if ws is not None:
                g = ps.ws_apply_jacobian(g, m.weight, eps=m.eps, scaled=m.scaled)
            book.add_per_sample(kw, m.weight, g)
    if kb is not None:
        book.add_per_sample(kb, m.bias, d.reshape(d.shape[0], d.shape[1], -1).sum(-1))


def _keeps(m, a, d) -> bool:
    """Keep a conv weight's instantiated per-sample gradients (then its sum is φ·G, no weight-gradient
    pass after the backward) when they take at most KEEP_FACTOR times the memory of the (a, δ) pair
    they replace."""
    return a.shape[0] * m.weight.numel() <= KEEP_FACTOR * (a.numel() + d.numel())


def _add_affine(book, m, gw, gb):
    kw, kb = book.key(m.weight), book.key(m.bias)
    if kw is not None:
        book.add_per_sample(kw, m.weight, gw)
    if kb is not None:
        book.add_per_sample(kb, m.bias, gb)


def _conv_weight(m):
    """The weight a conv layer convolves with (ŵ for weight-standardised layers)."""
    if type(m) in ps.WS_TYPES:
        return standardize_weight(m.weight.detach(), eps=m.eps, scaled=m.scaled)
    return m.weight.detach()


def _per_example_losses(loss_fn, out, y):
    if loss_fn is default_loss:
        return loss_fn(out, y)
    return vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)).sum())(out, y)


def _bk_sums(model, params, x, y, loss_fn, clip_norm, keep_sums, masks, proof, rule, copies=1):
    """Book-keeping (module docstring): norms during the δ-only backward, sums after it. With ``copies``
    = K > 1 (augmentation multiplicity) every Linear call sees example i's K rows as K positions, so
    its norms and sums are those of the sum over the copies (divided by K below: the mean)."""
    rows = x.shape[0]
    n = rows // copies
    first = next(iter(params.values()))
    dtype = torch.promote_types(first.dtype, torch.float32)
    book = _BookKeeper(params, masks, proof.param_uses, n, dtype, x.device)
    masks = masks or {}
    zs: list[torch.Tensor] = []

    def hook(module, inputs, output):
        a = inputs[0]
        if a.shape[0] != rows or output.shape[0] != rows:
            raise _NotBK(f"{type(module).__name__} input has {a.shape[0]} rows for {rows} examples")
        if copies > 1 and type(module) is not nn.Linear:
            raise _NotBK(f"augmentation multiplicity is book-kept for Linear layers only, not {type(module).__name__}")
        if output._base is not None:  # a view (Linear on rank > 2): _Tap marks its output dirty
            output = output.clone()
        call = _Call(book, module, a.detach())
        kw = book.key(module.weight) if type(module) in ps.WS_TYPES else None
        if kw is not None and book.single(module.weight) and kw not in masks:
            geom = book.geometry(module)
            if ps.conv_uses_ghost(geom, a.shape[1:], output.shape[1:], keep=_keeps(module, a, output)):
                call.output = output.detach()  # ŵ_c·g_ic = Σ_t δ_ict (o_ict − b_c)
        z = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
        zs.append(z)
        out = _Tap.apply(output, z, call)
        if call.output is not None:
            call.version = output._version
        return out

    handles = [m.register_forward_hook(hook) for m in proof.layers]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    loss = _per_example_losses(loss_fn, out, y).sum()
    if zs:
        torch.autograd.grad(loss, zs, allow_unused=True)
    del loss, out
    zs.clear()

    sq = book.sq
    for k, g in book.shared.items():
        m = masks.get(k)
        gm = g if m is None else g * m
        sq = sq + gm.reshape(n, -1).to(sq.dtype).pow(2).sum(1)
    norms = sq.sqrt() / copies  # ‖mean over the copies‖
    phi = clip_factors(norms, clip_norm, rule)

    def weighted(weights):
        sums = {}
        for k, g in (*book.per_sample.items(), *book.shared.items()):
            flat = g.reshape(n, -1)
            s = flat.sum(0) if weights is None else weights.to(flat.dtype) @ flat
            sums[k] = s.view(g.shape[1:])
        for k, (kept, m) in book.kept.items():
            s = kept.weighted_sum(weights)
            sums[k] = ps.ws_apply_jacobian(s, m.weight, eps=m.eps, scaled=m.scaled) if type(m) in ps.WS_TYPES else s
        for k, kind, a, d, m in book.factored:
            if kind == "linear":
                s = ps.linear_weight_sum(a, d, weights)
            else:
                s = ps.conv_weight_sum(a, d, book.geometry(m), _conv_weight(m).to(d.dtype), weights)
                if type(m) in ps.WS_TYPES:
                    s = ps.ws_apply_jacobian(s, m.weight, eps=m.eps, scaled=m.scaled)
            sums[k] = sums[k] + s if k in sums else s
        out = {}
        for k, p in params.items():
            s = sums[k].to(p.dtype) if k in sums else torch.zeros_like(p)
            s = s / copies if copies > 1 else s  # the sums over the copies → their means
            out[k] = s * masks[k] if k in masks else s
        return out

    clipped = weighted(None if math.isinf(clip_norm) else phi)
    unclipped = weighted(None) if keep_sums else None
    return clipped, unclipped, norms, phi


def _batch_sum(model, params, x, y, loss_fn, masks):
    """Σ_i m⊙g_i from one backward of the summed loss (``per_sample=False``)."""
    loss = loss_fn(model(x), y).sum()
    gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    out = {}
    for (k, p), g in zip(params.items(), gs):
        g = torch.zeros_like(p) if g is None else g.detach()
        out[k] = g * masks[k] if masks is not None and k in masks else g
    return out


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
    per_sample: bool = True,
    clip_rule: str = "flat",
    multiplicity: int = 1,
) -> PrivateGradient:
    """ĝ = (1/B)[Σ_i φ_i m⊙g_i + ν m⊙ξ] (module docstring): the clipped, noised, averaged gradient.

    Arguments: ``model`` (its parameters are read, not changed; ``p.grad`` untouched), the batch
    ``x``, ``y`` (may be empty), ``clip_norm`` = C (``math.inf`` = unclipped), ``noise_std`` = ν on
    the sum, ``expected_batch_size`` = B, ``generator`` = the noise stream (on the parameters'
    device), ``masks`` = name → 0/1 tensor (missing names: kept), ``loss_fn(output, target)`` →
    per-sample losses (default cross-entropy, ``reduction="none"``), ``method`` ∈ METHODS,
    ``chunk_size`` = examples per vmap call (memory bound), ``keep_sums`` = also return Σ m⊙g_i and
    Σ φ_i m⊙g_i (diagnostics), ``per_sample`` = False to skip per-sample work (needs C = ∞; one
    backward of the summed loss; ``method`` is then not used; per-sample norms are NaN),
    ``clip_rule`` ∈ CLIP_RULES (``"flat"``: Opacus; ``"normalised"``: AUTO-S, finite C only),
    ``multiplicity`` = K for augmentation multiplicity (De et al. 2022, arXiv 2204.13650v2 §3.2): ``x``,
    ``y`` hold K augmented copies of each example, example-major (rows i·K … i·K+K−1 are example i),
    and example i's gradient is the mean of its K copies' gradients, g_i = (1/K) Σ_k ∇ℓ(x_ik), clipped
    as one: the sensitivity stays C and the accountant is unchanged. Norms, clip factors and
    ``batch_size`` then count examples, not rows. Book-keeping groups the copies for models whose
    parametrised layers are all ``nn.Linear`` (the K rows of an example become K positions); for
    other layers ``"auto"`` uses ``"vmap"`` and ``"bk"`` is refused.

    Raises ``ValueError`` for invalid values, for ``method="bk"`` on a model whose per-example
    structure cannot be proved (the reason is in the message) and for ``per_sample=False`` with a
    finite ``clip_norm``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
        >>> out = private_gradient(model, x, y, clip_norm=1.0, noise_std=0.0, expected_batch_size=5,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> bool((out.per_sample_norms.numel() == 5) and (out.clip_factors <= 1).all()), out.method
        (True, 'bk')
    """
    clip_norm = check_positive_or_inf("clip_norm", clip_norm)
    noise_std = check_nonnegative("noise_std", noise_std)
    expected_batch_size = check_positive("expected_batch_size", expected_batch_size)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if clip_rule not in CLIP_RULES:
        raise ValueError(f"clip_rule must be one of {', '.join(CLIP_RULES)}, got {clip_rule!r}")
    if clip_rule == "normalised" and math.isinf(clip_norm):
        raise ValueError(
            "clip_rule='normalised' rescales every per-sample gradient to norm C: clip_norm must be finite"
        )
    multiplicity = check_int("multiplicity", multiplicity, minimum=1)
    if x.shape[0] % multiplicity:
        raise ValueError(f"multiplicity {multiplicity} must divide the {x.shape[0]} rows of x (K copies per example)")
    if not isinstance(per_sample, bool):
        raise ValueError(f"per_sample must be True or False, got {per_sample!r}")
    if not per_sample and not math.isinf(clip_norm):
        raise ValueError(f"per_sample=False computes no per-sample norms, so clip_norm must be inf, got {clip_norm}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    loss_fn = loss_fn or default_loss
    params = trainable_parameters(model)
    if masks is not None:
        unknown = set(masks) - set(params)
        if unknown:
            raise ValueError(f"masks names must be trainable parameters, got unknown {sorted(unknown)[:3]}")
    k_aug = multiplicity
    n = int(x.shape[0]) // k_aug  # examples
    device = next(iter(params.values())).device

    use = "none"
    if n == 0:
        clipped = {k: torch.zeros_like(p) for k, p in params.items()}
        unclipped = {k: torch.zeros_like(p) for k, p in params.items()} if keep_sums else None
        norms = torch.zeros(0, device=device)
        phi = torch.zeros_like(norms)
    elif not per_sample:
        clipped = _batch_sum(model, params, x, y, loss_fn, masks)
        if k_aug > 1:
            clipped = {name: g.div_(k_aug) for name, g in clipped.items()}
        unclipped = {k: v.clone() for k, v in clipped.items()} if keep_sums else None
        norms = torch.full((n,), math.nan, device=device)
        phi = torch.ones(n, device=device)
    else:
        use = method
        if method in ("auto", "bk"):
            proof = per_example_proof(model, x[:1])
            if proof.ok:
                try:
                    clipped, unclipped, norms, phi = _bk_sums(
                        model, params, x, y, loss_fn, clip_norm, keep_sums, masks, proof, clip_rule, k_aug
                    )
                    use = "bk"
                except _NotBK as exc:
                    if method == "bk":
                        raise ValueError(f"method='bk' cannot be used: {exc}") from None
                    use = "vmap"
            elif method == "bk":
                raise ValueError(f"method='bk' needs a per-example model structure: {proof.reason}")
            else:
                use = "vmap"
        if use in ("vmap", "loop"):
            clipped, unclipped, norms, phi = _materialised_sums(
                model, params, x, y, loss_fn, clip_norm, masks, use, chunk_size, keep_sums, clip_rule, k_aug
            )

    grads = {}
    noise_sq = torch.zeros((), dtype=torch.float32, device=device)
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
        method=use,
    )
