"""Per-sample gradient norms and gradient sums of one layer from its input a and output gradient δ.

Setting. Example i enters a layer as a_i (its row of the layer input; dim 0 = examples, which
``simulations.nn.separability`` proves before these formulas are used), leaves as o_i, and
δ_i = ∂L/∂o_i with L = Σ_j ℓ_j the summed loss; as example j ≠ i does not reach o_i, δ_i = ∂ℓ_i/∂o_i.
For a parameter used by ONE layer call, the per-sample gradient g_i is a fixed bilinear form of
(a_i, δ_i); the formulas below give ‖M ⊙ g_i‖² (M the 0/1 mask, M = 1 without pruning; M² = M) and the
weighted sum Σ_i c_i g_i (c_i = φ_i for the clipped sum, 1 for the plain sum) without a second backward
(book-keeping: Bu et al. 2023, arXiv 2210.00038v3). Symbols ↔ arguments: ``a`` = a, ``d`` = δ,
``mask`` = M, ``weights`` = c.

**Linear** (``nn.Linear``, input (B, *, I), T = positions per example, e.g. sequence length; T = 1 for
2-D input). With A_i ∈ ℝ^{T×I}, Δ_i ∈ ℝ^{T×O} the rows of a_i, δ_i: g_i = Δ_iᵀ A_i and

    ‖g_i‖² = tr(A_iᵀ Δ_i Δ_iᵀ A_i) = Σ_{t,t'} (A_i A_iᵀ)_{tt'} (Δ_i Δ_iᵀ)_{tt'}        (ghost norm)

(Li et al. 2022, arXiv 2110.05679v6 §4), cost T²(I + O) per example, against T·I·O for instantiating
g_i; the cheaper one is used (T = 1: ‖a_i‖²‖δ_i‖²). With a mask and T = 1:
‖M ⊙ δ_i a_iᵀ‖² = Σ_jk M_jk δ_ij² a_ik² = Σ_k [(δ_i∘δ_i)ᵀ M]_k a_ik² — one matrix product for the batch.
With a mask and T > 1, g_i is instantiated (chunks of examples) and masked. Bias: g_i = Σ_t δ_it.
Sum: Σ_i c_i g_i = (c ∘ Δ)ᵀ A over all B·T rows (one matmul).

**Convolution** (``nn.Conv1d``/``nn.Conv2d``: stride, padding incl. 'same' and non-zero padding modes,
dilation, groups γ). Unfolding the (padded) input gives, per group, A_i ∈ ℝ^{D×T} (D = (C_in/γ)·Πk
patch entries, T = output positions) and Δ_i ∈ ℝ^{p×T} (p = C_out/γ), so g_i = Δ_i A_iᵀ and, for
output channel c (row δ_ic of Δ_i),

    ‖g_ic‖² = δ_icᵀ K_i δ_ic,   K_i = A_iᵀ A_i ∈ ℝ^{T×T}                               (ghost norm, per channel)

at cost T²(D + p) per example and group, against T·D·p for instantiation; the rule of mixed ghost
clipping (Bu, Mao, Xu 2022, arXiv 2205.10683) picks per layer the cheaper one: ghost iff
T(D + p) < D·p (time, not memory: both are processed in chunks of examples). Masked weights are
instantiated. Sum: Σ_i c_i g_i is the convolution weight gradient of the rescaled output gradient c∘δ
(one ``convolution_backward``, the cost of the weight gradient of a non-private step). Bias: Σ_t δ_ict.

**Weight-standardised convolution** (``simulations.nn.layers``: ŵ_c = (w_c − μ_c1)/s_c,
s_c = √(κ(v_c + ε)), fan-in n). Derived here: dμ = 1ᵀdw/n, dv = (2/n)(w − μ1)ᵀdw, so
ds = κ ŵᵀdw/n and

    J_c = ∂ŵ_c/∂w_c = (1/s_c)(I − 11ᵀ/n − (κ/n) ŵ_c ŵ_cᵀ),

symmetric, so the raw-weight gradient is g^raw_ic = J_c g_ic (g_ic: gradient w.r.t. ŵ_c). With
u = 1/√n and v = ŵ_c/‖ŵ_c‖ orthonormal (1ᵀŵ_c = 0) and ρ_c = (κ/n)‖ŵ_c‖² = v_c/(v_c + ε) ∈ [0, 1),
J_c = (I − uuᵀ − ρ_c vvᵀ)/s_c and

    ‖g^raw_ic‖² = (1/s_c²) [ ‖g_ic‖² − (1·g_ic)²/n − (2 − ρ_c)(κ/n)(ŵ_c·g_ic)² ],

where 1·g_ic = Σ_t δ_ict (Σ_k A_ikt) (patch sums of the input) and ŵ_c·g_ic = Σ_t δ_ict (o_ict − b_c)
(the layer's own output). Ghost layers use this identity; instantiated layers apply J_c explicitly.
The sum is J(Σ_i c_i g_i), J being linear; masks act on the raw gradient (instantiated).

**GroupNorm / LayerNorm** (affine y = γ∘x̂ + β, x̂ the normalised input, independent of γ, β): per
channel c (GroupNorm) or normalised coordinate (LayerNorm), ∂ℓ_i/∂γ_c = Σ_t δ_ict x̂_ict and
∂ℓ_i/∂β_c = Σ_t δ_ict, t over the remaining positions; both are instantiated (size of γ per example).

A parameter used by several layer calls (a module called twice, or weights tied across modules) has
g_i = Σ_calls g_i^(call); the engine instantiates each call's g_i^(call) and sums before the norm.

Example:
    >>> import torch
    >>> a, d = torch.randn(4, 5, 3), torch.randn(4, 5, 2)   # B = 4 examples, T = 5 positions
    >>> g = torch.einsum("bto,bti->boi", d, a)               # instantiated per-sample gradients
    >>> bool(torch.allclose(linear_sq_norms(a, d), g.pow(2).sum((1, 2)), rtol=1e-5))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from simulations.nn.layers import WSConv1d, WSConv2d

__all__ = [
    "CHUNK_ELEMENTS",
    "CONV_TYPES",
    "WS_TYPES",
    "ConvGeometry",
    "conv_geometry",
    "conv_per_sample",
    "conv_sq_norms",
    "conv_uses_ghost",
    "conv_weight_sum",
    "group_norm_per_sample",
    "layer_norm_per_sample",
    "linear_per_sample",
    "linear_sq_norms",
    "linear_uses_ghost",
    "linear_weight_sum",
    "ws_apply_jacobian",
]

CHUNK_ELEMENTS = 2**22  # scratch elements per chunk of examples (unfolded inputs, T×T Gram, per-sample grads)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, WSConv1d, WSConv2d)
WS_TYPES = (WSConv1d, WSConv2d)


def _chunks(n: int, per_example: int):
    step = max(1, CHUNK_ELEMENTS // max(1, per_example))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


# ---------------------------------------------------------------------------------------------
# Linear


def linear_uses_ghost(*, positions: int, fan_in: int, fan_out: int) -> bool:
    """Ghost norm iff its cost T²(I + O) is below instantiation's T·I·O (T > 1; module docstring)."""
    return positions * (fan_in + fan_out) < fan_in * fan_out


def linear_sq_norms(a: torch.Tensor, d: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """‖M ⊙ Δ_iᵀA_i‖² per example for a (B, T, I), d (B, T, O), mask (O, I) or None → (B,)."""
    b, t, fan_in = a.shape
    fan_out = d.shape[2]
    if t == 1:
        a2, d2 = a[:, 0].pow(2), d[:, 0].pow(2)
        if mask is None:
            return a2.sum(1) * d2.sum(1)
        return ((d2 @ mask.to(d2.dtype)) * a2).sum(1)
    out = torch.empty(b, dtype=a.dtype, device=a.device)
    if mask is None and linear_uses_ghost(positions=t, fan_in=fan_in, fan_out=fan_out):
        for s in _chunks(b, 2 * t * t):
            out[s] = ((a[s] @ a[s].transpose(1, 2)) * (d[s] @ d[s].transpose(1, 2))).sum((1, 2))
        return out
    for s in _chunks(b, fan_in * fan_out):
        g = d[s].transpose(1, 2) @ a[s]
        if mask is not None:
            g = g * mask
        out[s] = g.pow(2).sum((1, 2))
    return out


def linear_per_sample(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Instantiated per-sample weight gradients Δ_iᵀA_i → (B, O, I)."""
    return d.transpose(1, 2) @ a


def linear_weight_sum(a: torch.Tensor, d: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i c_i Δ_iᵀA_i = (c∘Δ)ᵀA over all rows (``weights`` = c, None = all ones) → (O, I)."""
    if weights is not None:
        d = d * weights.to(d.dtype).view(-1, 1, 1)
    return d.reshape(-1, d.shape[2]).t() @ a.reshape(-1, a.shape[2])


# ---------------------------------------------------------------------------------------------
# convolutions


@dataclass(frozen=True)
class ConvGeometry:
    """A Conv1d/Conv2d in 2-D form (1-D: height 1). ``pre_pad``: explicit F.pad amounts applied first
    (string padding or a non-zero padding mode), after which ``padding`` is 0."""

    ndim: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int]
    pre_pad: tuple[int, ...] | None
    pad_mode: str
    groups: int
    in_channels: int
    out_channels: int

    @property
    def fan_in(self) -> int:
        """D = (C_in/γ)·Πk: the patch length of one group."""
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def group_out(self) -> int:
        """p = C_out/γ."""
        return self.out_channels // self.groups


def conv_geometry(module: nn.Module) -> ConvGeometry:
    """The geometry of an ``nn.Conv1d``/``nn.Conv2d`` (or WS twin) ``module``."""
    if not isinstance(module, CONV_TYPES):
        raise ValueError(f"module must be a Conv1d/Conv2d, got {type(module).__name__}")
    ndim = 1 if isinstance(module, nn.Conv1d) else 2

    def two(v, fill=1):
        v = tuple(v)
        return (fill, v[0]) if ndim == 1 else (v[0], v[1])

    pre_pad = None
    padding = (0, 0)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        pre_pad = tuple(module._reversed_padding_repeated_twice)
        if not any(pre_pad):
            pre_pad = None
    else:
        padding = two(module.padding, fill=0)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return ConvGeometry(
        ndim=ndim,
        kernel=two(module.kernel_size),
        stride=two(module.stride),
        dilation=two(module.dilation),
        padding=padding,
        pre_pad=pre_pad,
        pad_mode=mode,
        groups=module.groups,
        in_channels=module.in_channels,
        out_channels=module.out_channels,
    )


def _as_2d(x: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    return x.unsqueeze(2) if geom.ndim == 1 else x


def _padded_input(a: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    return a if geom.pre_pad is None else F.pad(a, geom.pre_pad, mode=geom.pad_mode)


def _unfold(a: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """(b, C_in, *S) → (b, γ, D, T) patches."""
    cols = F.unfold(
        _as_2d(_padded_input(a, geom), geom),
        kernel_size=geom.kernel,
        dilation=geom.dilation,
        padding=geom.padding,
        stride=geom.stride,
    )
    return cols.view(a.shape[0], geom.groups, geom.fan_in, cols.shape[-1])


def _grouped_delta(d: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """(b, C_out, *S_out) → (b, γ, p, T)."""
    return d.reshape(d.shape[0], geom.groups, geom.group_out, -1)


def conv_uses_ghost(geom: ConvGeometry, positions: int) -> bool:
    """Mixed ghost clipping's choice: ghost iff T(D + p) < D·p (module docstring)."""
    return positions * (geom.fan_in + geom.group_out) < geom.fan_in * geom.group_out


def conv_per_sample(a: torch.Tensor, d: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Instantiated per-sample weight gradients g_i = Δ_i A_iᵀ per group → (b, C_out, C_in/γ, *k)."""
    g = _grouped_delta(d, geom) @ _unfold(a, geom).transpose(-1, -2)  # (b, γ, p, D)
    kernel = geom.kernel[1:] if geom.ndim == 1 else geom.kernel
    return g.reshape(a.shape[0], geom.out_channels, geom.in_channels // geom.groups, *kernel)


def _ghost_channel_sq_norms(a, d, geom):
    """‖g_ic‖² = δ_icᵀ (A_iᵀA_i) δ_ic for every channel → (b, C_out)."""
    cols = _unfold(a, geom)  # (b, γ, D, T)
    dg = _grouped_delta(d, geom)  # (b, γ, p, T)
    gram = cols.transpose(-1, -2) @ cols  # (b, γ, T, T)
    return ((dg @ gram) * dg).sum(-1).reshape(a.shape[0], geom.out_channels), cols, dg


def ws_apply_jacobian(g: torch.Tensor, weight: torch.Tensor, *, eps: float, scaled: bool) -> torch.Tensor:
    """J_c g_c = (1/s_c)(g_c − (1·g_c/n) 1 − (κ/n)(ŵ_c·g_c) ŵ_c) per output channel c; ``g`` of shape
    (..., *weight.shape) (a per-sample batch or a sum), ``weight`` the RAW weight (module docstring)."""
    w = weight.detach().flatten(1).to(g.dtype)
    n = w.shape[1]
    kappa = float(n) if scaled else 1.0
    mean = w.mean(1, keepdim=True)
    s = torch.sqrt(kappa * ((w - mean).pow(2).mean(1, keepdim=True) + eps))  # (C_out, 1)
    w_hat = (w - mean) / s
    flat = g.reshape(*g.shape[: g.dim() - weight.dim()], w.shape[0], n)
    out = flat - flat.mean(-1, keepdim=True) - (kappa / n) * (flat * w_hat).sum(-1, keepdim=True) * w_hat
    return (out / s).view_as(g)


def conv_sq_norms(
    a: torch.Tensor,
    d: torch.Tensor,
    geom: ConvGeometry,
    *,
    mask: torch.Tensor | None = None,
    ws: tuple[torch.Tensor, float, bool] | None = None,
    output: torch.Tensor | None = None,
) -> torch.Tensor:
    """‖M ⊙ g_i‖² per example for a conv weight used once → (B,).

    ``a`` (B, C_in, *S), ``d`` (B, C_out, *S_out), ``mask`` of the weight's shape or None, ``ws`` =
    (raw weight, ε, scaled) for a weight-standardised conv (then g_i is the RAW-weight gradient) and
    ``output`` = the layer output minus its bias (needed by WS ghost layers: ŵ_c·g_ic = Σ_t δ_ict o_ict).
    Ghost or instantiation by :func:`conv_uses_ghost`; masks force instantiation.
    """
    b = a.shape[0]
    positions = d[0].numel() // geom.out_channels
    out = torch.empty(b, dtype=d.dtype, device=d.device)
    ghost = mask is None and conv_uses_ghost(geom, positions)
    if not ghost:
        for s in _chunks(b, geom.groups * geom.fan_in * (positions + geom.group_out)):
            g = conv_per_sample(a[s], d[s], geom)
            if ws is not None:
                g = ws_apply_jacobian(g, ws[0], eps=ws[1], scaled=ws[2])
            if mask is not None:
                g = g * mask
            out[s] = g.pow(2).flatten(1).sum(1)
        return out
    per_example = geom.groups * (geom.fan_in * positions + positions * positions + geom.group_out * positions)
    if ws is not None:
        weight, eps, scaled = ws
        w = weight.detach().flatten(1).to(d.dtype)
        n = w.shape[1]
        kappa = float(n) if scaled else 1.0
        var = w.var(1, unbiased=False)
        s2 = kappa * (var + eps)
        rho = var / (var + eps)
    for s in _chunks(b, per_example):
        sq, cols, dg = _ghost_channel_sq_norms(a[s], d[s], geom)
        if ws is None:
            out[s] = sq.sum(1)
            continue
        one_dot = (dg @ cols.sum(2).unsqueeze(-1)).reshape(sq.shape)  # 1·g_ic = Σ_t δ_ict Σ_k A_ikt
        w_dot = (d[s] * output[s]).reshape(sq.shape[0], geom.out_channels, -1).sum(-1)  # ŵ_c·g_ic
        raw = (sq - one_dot.pow(2) / n - (2 - rho) * (kappa / n) * w_dot.pow(2)) / s2
        out[s] = raw.clamp(min=0).sum(1)
    return out


def conv_weight_sum(
    a: torch.Tensor,
    d: torch.Tensor,
    geom: ConvGeometry,
    weight: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_i c_i g_i = the convolution weight gradient of c∘δ (``weights`` = c, None = ones), w.r.t. the
    weight the layer convolves with (for WS layers: ŵ; apply :func:`ws_apply_jacobian` after)."""
    if weights is not None:
        d = d * weights.to(d.dtype).view(-1, *([1] * (d.dim() - 1)))
    a = _padded_input(a, geom)
    w = weight.detach()
    stride, dilation, padding = geom.stride, geom.dilation, geom.padding
    if geom.ndim == 1:
        stride, dilation, padding = stride[1:], dilation[1:], padding[1:]
    _, grad_w, _ = torch.ops.aten.convolution_backward(
        d.contiguous(),
        a,
        w,
        None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0] * geom.ndim,
        geom.groups,
        [False, True, False],
    )
    return grad_w


# ---------------------------------------------------------------------------------------------
# normalisation layers


def group_norm_per_sample(
    a: torch.Tensor, d: torch.Tensor, *, num_groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm affine per-sample gradients (Σ_t δ x̂, Σ_t δ) per channel, each (B, C)."""
    x_hat = F.group_norm(a, num_groups, eps=eps)
    b, c = d.shape[:2]
    dd = d.reshape(b, c, -1)
    return (dd * x_hat.reshape(b, c, -1)).sum(-1), dd.sum(-1)


def layer_norm_per_sample(
    a: torch.Tensor, d: torch.Tensor, *, normalized_shape: tuple[int, ...], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm affine per-sample gradients (Σ_t δ x̂, Σ_t δ), each (B, *normalized_shape)."""
    x_hat = F.layer_norm(a, normalized_shape, eps=eps)
    b = d.shape[0]
    k = math.prod(normalized_shape)
    dd = d.reshape(b, -1, k)
    return (dd * x_hat.reshape(b, -1, k)).sum(1).view(b, *normalized_shape), dd.sum(1).view(b, *normalized_shape)
