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
dilation, groups γ; 1-D as height 1). Per group, the patches of the padded input form A_i ∈ ℝ^{D×T}
(D = C_g·Πk, C_g = C_in/γ, T = output positions) and Δ_i ∈ ℝ^{p×T} (p = C_out/γ), g_i = Δ_i A_iᵀ and,
for output channel c (row δ_ic of Δ_i),

    ‖g_ic‖² = δ_icᵀ K_i δ_ic,   K_i = A_iᵀ A_i ∈ ℝ^{T×T}                               (ghost norm, per channel)

Neither branch unfolds the input (derived here; im2col copies dominated the first version's time):

* ghost — K_i[t, t'] = Σ_(i,j) G_i[s·t + off_ij, s·t' + off_ij] with G_i = X_iᵀX_i the Gram matrix of the
  padded input over its P positions (C_g channels): patches at t and t' pair their entries at the same
  kernel offset. Cost P²·C_g + T²(p + Πk) per example and group;
* instantiation — polyphase products (``_Polyphase``): offset (i, j) of every output position reads
  one polyphase component of the padded input at a fixed shift, so g_i[:, :, i, j] = δ̃_i X_φ[:, off:off+L]ᵀ
  on strided views, δ̃_i being δ_i on the row-padded component grid (L ≈ T positions). Cost L·D·p.
  For 2-D layers with one input channel per group (an image network's first layer), where those
  products are many thin ones, the same g_i come from one grouped convolution instead
  (``_GroupedConv``: examples as groups, δ_i as the filters).

Per layer the cheaper one is used (the rule of mixed ghost clipping, Bu, Mao, Xu 2022, arXiv
2205.10683, with these two cost models in multiply-adds: :func:`conv_costs`); masks force
instantiation. Sum: Σ_i c_i g_i is the convolution weight gradient of the rescaled output gradient
c∘δ (one ``convolution_backward``, the cost of a non-private step's weight gradient), or, when the
engine keeps the instantiated g_i, c·g directly. Bias: g_ic = Σ_t δ_ict. Examples are processed in
chunks of about ``CHUNK_ELEMENTS`` scratch entries.

**Weight-standardised convolution** (``simulations.nn.layers``: ŵ_c = (w_c − μ_c1)/s_c,
s_c = √(κ(v_c + ε)), fan-in n). Derived here: dμ = 1ᵀdw/n, dv = (2/n)(w − μ1)ᵀdw, so
ds = κ ŵᵀdw/n and

    J_c = ∂ŵ_c/∂w_c = (1/s_c)(I − 11ᵀ/n − (κ/n) ŵ_c ŵ_cᵀ),

symmetric, so the raw-weight gradient is g^raw_ic = J_c g_ic (g_ic: gradient w.r.t. ŵ_c). With
u = 1/√n and v = ŵ_c/‖ŵ_c‖ orthonormal (1ᵀŵ_c = 0) and ρ_c = (κ/n)‖ŵ_c‖² = v_c/(v_c + ε) ∈ [0, 1),
J_c = (I − uuᵀ − ρ_c vvᵀ)/s_c and

    ‖g^raw_ic‖² = (1/s_c²) [ ‖g_ic‖² − (1·g_ic)²/n − (2 − ρ_c)(κ/n)(ŵ_c·g_ic)² ],

where 1·g_ic = Σ_t δ_ict (Σ_k A_ikt) (patch sums: a ones-kernel convolution) and
ŵ_c·g_ic = Σ_t δ_ict (o_ict − b_c) (the layer's own output). Ghost layers use this identity; as it
subtracts terms of size ‖g_ic‖²/s_c², examples where those exceed the result ``WS_CONDITION``-fold are
recomputed by instantiation (cancellation would otherwise cost digits of the norm that sets φ_i).
Instantiated layers apply J_c explicitly. The sum is J(Σ_i c_i g_i), J being linear; masks act on
the raw gradient (instantiated).

**GroupNorm / LayerNorm** (affine y = γ∘x̂ + β, x̂ the normalised input, independent of γ, β): per
channel c (GroupNorm) or normalised coordinate (LayerNorm), ∂ℓ_i/∂γ_c = Σ_t δ_ict x̂_ict and
∂ℓ_i/∂β_c = Σ_t δ_ict, t over the remaining positions; both are instantiated (size of γ per example).

A parameter used by several layer calls (a module called twice, or weights tied across modules) has
g_i = Σ_calls g_i^(call); the engine instantiates each call's g_i^(call) and sums before the norm.

Precision: all norms are exact up to float rounding. Ghost norms δᵀKδ add terms of both signs, so their
absolute error is about ε·|δ|ᵀ|K||δ| (ε the unit roundoff) — as in every ghost-clipping
implementation; an example whose gradient is nearly cancelled inside K gets a relatively less
accurate norm, and its clip factor is off by the same relative amount.

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
    "WS_CONDITION",
    "WS_TYPES",
    "ConvGeometry",
    "KeptGradients",
    "conv_costs",
    "conv_geometry",
    "conv_per_sample",
    "conv_sq_norms",
    "conv_uses_ghost",
    "conv_uses_grouped",
    "conv_weight_sum",
    "group_norm_per_sample",
    "layer_norm_per_sample",
    "linear_per_sample",
    "linear_sq_norms",
    "linear_uses_ghost",
    "linear_weight_sum",
    "ws_apply_jacobian",
]

CHUNK_ELEMENTS = 2**20  # scratch elements per chunk of examples (measured best on CPU: 2**18..2**22 tried)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, WSConv1d, WSConv2d)
WS_CONDITION = 1e3  # largest cancellation factor (Σ‖g_c‖²/s_c²)/‖Jg‖² accepted from the WS ghost identity
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
    def group_in(self) -> int:
        """C_in/γ."""
        return self.in_channels // self.groups

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


def _fully_padded_2d(a: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """The input in 2-D form with ALL padding applied (then the conv has padding 0), contiguous."""
    x = _as_2d(_padded_input(a, geom), geom)
    ph, pw = geom.padding
    return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x.contiguous()


def _grouped_delta(d: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """(b, C_out, *S_out) → (b, γ, p, T)."""
    return d.reshape(d.shape[0], geom.groups, geom.group_out, -1)


def _padded_hw(in_shape, geom: ConvGeometry) -> tuple[int, int]:
    """(H_p, W_p) of the fully padded input; ``in_shape`` = the per-example input shape (C, *S)."""
    hw = (1, in_shape[-1]) if geom.ndim == 1 else tuple(in_shape[-2:])
    if geom.pre_pad is not None:
        pads = geom.pre_pad  # (left, right[, top, bottom]) of the last dims
        hw = (hw[0] + (pads[2] + pads[3] if len(pads) == 4 else 0), hw[1] + pads[0] + pads[1])
    return hw[0] + 2 * geom.padding[0], hw[1] + 2 * geom.padding[1]


def _phase_grid(hp: int, wp: int, geom: ConvGeometry) -> tuple[int, int]:
    """(H_q, W_q) = (⌈H_p/s_h⌉, ⌈W_p/s_w⌉): the size of each polyphase component of the padded input."""
    return -(-hp // geom.stride[0]), -(-wp // geom.stride[1])


def conv_costs(geom: ConvGeometry, in_shape, out_shape) -> tuple[int, int]:
    """(ghost, instantiation) multiply-adds per example for per-sample norms (module docstring):
    ghost P²·C_g + T²(p + Πk) per group (input Gram, shifted sums, δᵀKδ); instantiation L·D·p per
    group, L = (H_o − 1)W_q + W_o the positions of the row-padded polyphase grid."""
    hp, wp = _padded_hw(in_shape, geom)
    ho, wo = (1, out_shape[-1]) if geom.ndim == 1 else tuple(out_shape[-2:])
    t = ho * wo
    k = geom.kernel[0] * geom.kernel[1]
    g, p, cg = geom.groups, geom.group_out, geom.group_in
    ghost = g * ((hp * wp) ** 2 * cg + t * t * (p + k))
    inst = g * ((ho - 1) * _phase_grid(hp, wp, geom)[1] + wo) * geom.fan_in * p
    return ghost, inst


def conv_uses_ghost(geom: ConvGeometry, in_shape, out_shape, *, keep: bool = False) -> bool:
    """Mixed ghost clipping's choice per layer: the ghost norm iff it costs less (:func:`conv_costs`).
    With ``keep`` (the instantiated gradients will be kept, so their weighted sum replaces the
    weight-gradient pass T·D·p that the ghost branch still needs), that pass is added to the ghost cost."""
    ghost, inst = conv_costs(geom, in_shape, out_shape)
    if keep:
        ho, wo = (1, out_shape[-1]) if geom.ndim == 1 else tuple(out_shape[-2:])
        ghost += geom.groups * ho * wo * geom.fan_in * geom.group_out
    return ghost < inst


class _Polyphase:
    """The polyphase form of a chunk (a, δ) of one conv layer (derived here).

    Output position (h, w) with kernel offset (i, j) reads the padded input at (s_h h + r, s_w w + c),
    r = d_h i, c = d_w j, i.e. polyphase component (r mod s_h, c mod s_w) at (h + ⌊r/s_h⌋, w + ⌊c/s_w⌋).
    Flattening each component over its H_q·W_q grid (X_φ, per group C_g rows) and placing δ on the
    row-padded grid q = h·W_q + w (δ̃, zeros for w ≥ W_o, length L = (H_o − 1)W_q + W_o), the
    per-sample gradient of offset (i, j) is g[:, :, i, j] = δ̃ X_φ[:, off : off + L]ᵀ with
    off = ⌊r/s_h⌋W_q + ⌊c/s_w⌋ — a matrix product on a strided view, no unfolded (im2col) copy.
    The offsets sharing a component are i = i₀ + m·s_h/g_h (g_h = gcd(d_h, s_h)) with shifts
    ⌊d_h i₀/s_h⌋ + m·d_h/g_h — an arithmetic progression — so for thin layers (C_g < ``GATHER_BELOW``)
    they are gathered by one ``as_strided`` copy and multiplied at once; wide layers use one product
    per offset (no copy at all).
    """

    GATHER_BELOW = 32

    def __init__(self, a: torch.Tensor, d: torch.Tensor, geom: ConvGeometry):
        b = a.shape[0]
        sh, sw = geom.stride
        x = _fully_padded_2d(a, geom)
        hp, wp = x.shape[-2:]
        hq, wq = _phase_grid(hp, wp, geom)
        if (sh, sw) == (1, 1):
            phases = x.reshape(1, b, geom.groups, geom.group_in, hp * wp)
        else:
            if (hq * sh, wq * sw) != (hp, wp):
                x = F.pad(x, (0, wq * sw - wp, 0, hq * sh - hp))
            x = x.view(b, geom.in_channels, hq, sh, wq, sw).permute(3, 5, 0, 1, 2, 4)
            phases = x.reshape(sh * sw, b, geom.groups, geom.group_in, hq * wq)
        d2 = _as_2d(d, geom)
        ho, wo = d2.shape[-2:]
        self.length = (ho - 1) * wq + wo
        dt = d2.new_zeros(b, geom.groups, geom.group_out, ho, wq)
        dt[..., :wo] = d2.reshape(b, geom.groups, geom.group_out, ho, wo)
        self.delta = dt.view(b, geom.groups, geom.group_out, ho * wq)[..., : self.length]
        self.phases = phases.contiguous()
        self.geom, self.b, self.wq = geom, b, wq
        self.gather = geom.group_in < self.GATHER_BELOW
        self.blocks = []  # (phase, rows slice, cols slice, n_i, n_j, offset, row step, col step)
        (kh, kw), (dh, dw) = geom.kernel, geom.dilation
        gh, gw = math.gcd(dh, sh), math.gcd(dw, sw)
        for i0 in range(min(kh, sh // gh)):
            for j0 in range(min(kw, sw // gw)):
                rows, cols = range(i0, kh, sh // gh), range(j0, kw, sw // gw)
                phase = ((dh * i0) % sh) * sw + (dw * j0) % sw
                base = ((dh * i0) // sh) * wq + (dw * j0) // sw
                spec = (phase, slice(i0, kh, sh // gh), slice(j0, kw, sw // gw), len(rows), len(cols))
                if self.gather:
                    self.blocks.append((*spec, base, (dh // gh) * wq, dw // gw))
                else:
                    for m, _ in enumerate(rows):
                        for n, _ in enumerate(cols):
                            off = base + m * (dh // gh) * wq + n * (dw // gw)
                            one = (phase, slice(i0 + m * (sh // gh), i0 + m * (sh // gh) + 1),
                                   slice(j0 + n * (sw // gw), j0 + n * (sw // gw) + 1), 1, 1)  # fmt: skip
                            self.blocks.append((*one, off, 0, 0))

    def block_shape(self, index: int) -> tuple[int, ...]:
        _, _, _, ni, nj, *_ = self.blocks[index]
        return (self.geom.groups, self.geom.group_out, self.geom.group_in, ni, nj)

    def block(self, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """(b, γ, p, C_g, n_i, n_j): the per-sample gradients at kernel rows/cols ``self.blocks[index][1:3]``."""
        phase, _, _, ni, nj, off, step_r, step_c = self.blocks[index]
        geom, b, length = self.geom, self.b, self.length
        x = self.phases[phase]  # (b, γ, C_g, H_q·W_q)
        if ni * nj == 1:
            xs = x[..., off : off + length].transpose(-1, -2)
        else:
            sb, sg, sc, _ = x.stride()
            view = x.as_strided(
                (b, geom.groups, geom.group_in, ni, nj, length),
                (sb, sg, sc, step_r, step_c, 1),
                x.storage_offset() + off,
            )
            # the copy the gather needs: reshape can return an overlapping VIEW (unit strides on both
            # the offset and the position axis when the offsets are adjacent), which BLAS cannot read,
            # and matmul then falls back to one copied product per example (measured 7× slower)
            xs = view.contiguous().view(b, geom.groups, geom.group_in * ni * nj, length).transpose(-1, -2)
        flat = None if out is None else out.view(b, geom.groups, geom.group_out, geom.group_in * ni * nj)
        res = torch.matmul(self.delta, xs, out=flat)
        return res.view(b, geom.groups, geom.group_out, geom.group_in, ni, nj)


class _GroupedConv:
    """The per-sample gradients of a chunk (a, δ) of one conv layer by ONE grouped convolution (derived
    here; the examples-as-groups form of Rochette, Manoel, Tramel 2019, arXiv 1912.06015v1 §3).

    g_i[c, k, i', j'] = Σ_(h,w) δ_ic[h, w] X_ik[s_h h + d_h i', s_w w + d_w j'] (X the fully padded
    input, k a channel of c's group) is a correlation of X_ik with δ_ic as the kernel, taken with
    stride d (the layer's dilation) and dilation s (its stride), cropped to the layer's kernel size. With
    the C_g channels of a group as the batch and every (example, group) pair as one group of a grouped
    convolution (δ_i's p channels of that group as its filters), one ``F.conv2d`` call gives all of them.
    Same interface as :class:`_Polyphase` (one block: the whole kernel). Used where it is faster
    (:func:`conv_uses_grouped`).
    """

    def __init__(self, a: torch.Tensor, d: torch.Tensor, geom: ConvGeometry):
        b = a.shape[0]
        g, cg, p = geom.groups, geom.group_in, geom.group_out
        x = _fully_padded_2d(a, geom)
        hp, wp = x.shape[-2:]
        self.x = x.view(b, g, cg, hp, wp).permute(2, 0, 1, 3, 4).reshape(cg, b * g, hp, wp)
        d2 = _as_2d(d, geom)
        self.w = d2.reshape(b * g * p, 1, *d2.shape[-2:])
        self.geom, self.b = geom, b
        kh, kw = geom.kernel
        self.blocks = [(0, slice(0, kh), slice(0, kw), kh, kw, 0, 0, 0)]

    def block_shape(self, index: int) -> tuple[int, ...]:
        geom = self.geom
        return (geom.groups, geom.group_out, geom.group_in, *geom.kernel)

    def block(self, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """(b, γ, p, C_g, k_h, k_w): every per-sample gradient of the chunk."""
        geom, b = self.geom, self.b
        kh, kw = geom.kernel
        y = F.conv2d(self.x, self.w, stride=geom.dilation, dilation=geom.stride, groups=b * geom.groups)
        y = y[..., :kh, :kw].reshape(geom.group_in, b, geom.groups, geom.group_out, kh, kw).permute(1, 2, 3, 0, 4, 5)
        if out is None:
            return y
        return out.copy_(y)


GROUPED_MAX_CHANNELS = 1  # input channels per group up to which the grouped-conv instantiation is used


def conv_uses_grouped(geom: ConvGeometry) -> bool:
    """Instantiate by one grouped convolution (:class:`_GroupedConv`) instead of polyphase products:
    2-D layers with at most ``GROUPED_MAX_CHANNELS`` input channels per group, where the polyphase
    products are many thin matrix products (measured: docs/benchmarks.md)."""
    return geom.ndim == 2 and geom.group_in <= GROUPED_MAX_CHANNELS


def _instantiator(a: torch.Tensor, d: torch.Tensor, geom: ConvGeometry):
    return _GroupedConv(a, d, geom) if conv_uses_grouped(geom) else _Polyphase(a, d, geom)


def _blocked(t: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """A weight-shaped tensor (C_out, C_g, *k) as (γ, p, C_g, k_h, k_w), to slice like the blocks."""
    return t.reshape(geom.groups, geom.group_out, geom.group_in, *geom.kernel)


def conv_per_sample(a: torch.Tensor, d: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Instantiated per-sample weight gradients g_i = Δ_i A_iᵀ → (b, C_out, C_in/γ, *k) (polyphase
    matrix products, see ``_Polyphase``)."""
    parts = _instantiator(a, d, geom)
    out = d.new_empty(a.shape[0], geom.groups, geom.group_out, geom.group_in, *geom.kernel)
    for index, (_, rows, cols, *_) in enumerate(parts.blocks):
        out[..., rows, cols] = parts.block(index)
    kernel = (geom.kernel[1],) if geom.ndim == 1 else geom.kernel
    return out.view(a.shape[0], geom.out_channels, geom.group_in, *kernel)


def _ghost_channel_sq_norms(a, d, geom):
    """‖g_ic‖² = δ_icᵀ K_i δ_ic per channel → (b, C_out), with K_i = A_iᵀA_i built from the input Gram
    G0 = XᵀX over padded positions: K_i[t, t'] = Σ_(i,j) G0[s·t + off_ij, s·t' + off_ij] (the patch
    entries of positions t, t' at the same kernel offset; derived here), no unfolded copy."""
    b = a.shape[0]
    x = _fully_padded_2d(a, geom)
    hp, wp = x.shape[-2:]
    x = x.reshape(b, geom.groups, geom.group_in, hp * wp)
    gram = (x.transpose(-1, -2) @ x).view(b, geom.groups, hp, wp, hp, wp)
    dg = _grouped_delta(d, geom)  # (b, γ, p, T)
    d2 = _as_2d(d, geom)
    ho, wo = d2.shape[-2:]
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    k = None
    for i in range(geom.kernel[0]):
        for j in range(geom.kernel[1]):
            r = slice(dh * i, dh * i + sh * (ho - 1) + 1, sh)
            c = slice(dw * j, dw * j + sw * (wo - 1) + 1, sw)
            part = gram[:, :, r, c, r, c]
            k = part.clone() if k is None else k.add_(part)
    k = k.reshape(b, geom.groups, ho * wo, ho * wo)
    return ((dg @ k) * dg).sum(-1).reshape(b, geom.out_channels), x, dg


def _patch_sums(x_padded: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """s_it = Σ_k A_ikt (sum of each patch of each group) → (b, γ, T), by a ones-kernel convolution."""
    b = x_padded.shape[0]
    hp, wp = x_padded.shape[-2:]
    per_group = x_padded.view(b, geom.groups, geom.group_in, hp, wp).sum(2)
    ones = per_group.new_ones(geom.groups, 1, *geom.kernel)
    s = F.conv2d(per_group, ones, stride=geom.stride, dilation=geom.dilation, groups=geom.groups)
    return s.reshape(b, geom.groups, -1)


def _ws_parts(weight: torch.Tensor, *, eps: float, scaled: bool, dtype) -> tuple:
    """(ŵ (C_out, n), s (C_out,), ρ (C_out,), κ, n) of a weight-standardised conv's RAW weight."""
    w = weight.detach().flatten(1).to(dtype)
    n = w.shape[1]
    kappa = float(n) if scaled else 1.0
    mean = w.mean(1, keepdim=True)
    var = (w - mean).pow(2).mean(1)
    s = torch.sqrt(kappa * (var + eps))
    return (w - mean) / s.unsqueeze(1), s, var / (var + eps), kappa, n


def ws_apply_jacobian(g: torch.Tensor, weight: torch.Tensor, *, eps: float, scaled: bool) -> torch.Tensor:
    """J_c g_c = (1/s_c)(g_c − (1·g_c/n) 1 − (κ/n)(ŵ_c·g_c) ŵ_c) per output channel c; ``g`` of shape
    (..., *weight.shape) (a per-sample batch or a sum), ``weight`` the RAW weight (module docstring)."""
    w_hat, s, _, kappa, n = _ws_parts(weight, eps=eps, scaled=scaled, dtype=g.dtype)
    flat = g.reshape(*g.shape[: g.dim() - weight.dim()], w_hat.shape[0], n)
    out = flat - flat.mean(-1, keepdim=True) - (kappa / n) * (flat * w_hat).sum(-1, keepdim=True) * w_hat
    return (out / s.unsqueeze(1)).view_as(g)


def _ws_sq_norm(sq_c, one_c, what_c, ws, dtype):
    """(Σ_c ‖J_c g_c‖², Σ_c ‖g_c‖²/s_c²) per example from the per-channel ‖g_c‖², 1·g_c, ŵ_c·g_c (b, C_out)
    (module docstring); the second value is the size of the terms the identity subtracts."""
    _, s, rho, kappa, n = _ws_parts(ws[0], eps=ws[1], scaled=ws[2], dtype=dtype)
    s2 = s.pow(2)
    raw = (sq_c - one_c.pow(2) / n - (2 - rho) * (kappa / n) * what_c.pow(2)) / s2
    return raw.clamp(min=0).sum(1), (sq_c / s2).sum(1)


@dataclass(frozen=True)
class KeptGradients:
    """Per-sample conv weight gradients kept by :func:`conv_sq_norms` (``keep=True``), w.r.t. the weight
    the layer convolves with (ŵ for WS layers), as the polyphase blocks they were computed in: one
    (B, γ, p, C_g, n_i, n_j) tensor per (kernel rows, kernel cols) slice (separate tensors stay below
    the allocator's mmap threshold, so their memory is reused from step to step instead of being
    page-faulted in); :meth:`weighted_sum` gives Σ_i c_i g_i in the weight's shape."""

    blocks: tuple[tuple[slice, slice, torch.Tensor], ...]
    geom: ConvGeometry

    def weighted_sum(self, weights: torch.Tensor | None) -> torch.Tensor:
        geom = self.geom
        first = self.blocks[0][2]
        out = first.new_zeros(geom.groups, geom.group_out, geom.group_in, *geom.kernel)
        for rows, cols, g in self.blocks:
            flat = g.reshape(g.shape[0], -1)
            s = flat.sum(0) if weights is None else weights.to(flat.dtype) @ flat
            out[..., rows, cols] = s.view(g.shape[1:])
        kernel = (geom.kernel[1],) if geom.ndim == 1 else geom.kernel
        return out.view(geom.out_channels, geom.group_in, *kernel)


def conv_sq_norms(
    a: torch.Tensor,
    d: torch.Tensor,
    geom: ConvGeometry,
    *,
    mask: torch.Tensor | None = None,
    ws: tuple[torch.Tensor, float, bool] | None = None,
    output: torch.Tensor | None = None,
    keep: bool = False,
    ghost: bool | None = None,
) -> tuple[torch.Tensor, KeptGradients | None]:
    """‖M ⊙ g_i‖² per example for a conv weight used once → ((B,), kept per-sample gradients or None).

    ``a`` (B, C_in, *S), ``d`` (B, C_out, *S_out), ``mask`` of the weight's shape or None, ``ws`` =
    (raw weight, ε, scaled) for a weight-standardised conv (then g_i is the RAW-weight gradient) and
    ``output`` = the layer output minus its bias (needed by WS ghost layers: ŵ_c·g_ic = Σ_t δ_ict o_ict).
    ``ghost``: None = choose by :func:`conv_uses_ghost`; masks force instantiation. ``keep``: when
    instantiating, also return the per-sample gradients (w.r.t. ŵ for WS layers) as :class:`KeptGradients`.
    """
    b = a.shape[0]
    if ghost is None:
        ghost = conv_uses_ghost(geom, a.shape[1:], d.shape[1:], keep=keep)
    ghost = ghost and mask is None
    hp, wp = _padded_hw(a.shape[1:], geom)
    positions = d[0].numel() // geom.out_channels
    out = torch.empty(b, dtype=d.dtype, device=d.device)
    if ghost:
        per_example = geom.groups * ((hp * wp) ** 2 + 2 * positions * positions + geom.group_out * positions)
        for s in _chunks(b, per_example):
            sq, x, dg = _ghost_channel_sq_norms(a[s], d[s], geom)
            if ws is None:
                out[s] = sq.sum(1)
                continue
            x = x.view(x.shape[0], geom.in_channels, hp, wp)
            one = (dg @ _patch_sums(x, geom).unsqueeze(-1)).reshape(sq.shape)  # 1·g_ic = Σ_t δ_ict s_it
            assert output is not None  # required for WS ghost layers (docstring); the engine always passes it
            what = (d[s] * output[s]).reshape(sq.shape[0], geom.out_channels, -1).sum(-1)  # ŵ_c·g_ic
            raw, scale = _ws_sq_norm(sq, one, what, ws, d.dtype)
            # the identity subtracts terms of size ‖g‖²/s²: where that exceeds the result WS_CONDITION-fold,
            # recompute the example by instantiation with J applied explicitly (cancellation)
            bad = (raw * WS_CONDITION < scale).nonzero().flatten()
            if bad.numel():
                idx = bad + s.start
                raw[bad] = conv_sq_norms(a[idx], d[idx], geom, ws=ws, ghost=False)[0]
            out[s] = raw
        return out, None
    mask_b = None if mask is None else _blocked(mask.to(d.dtype), geom)
    if ws is not None:
        w_hat, s_c, _, kappa, n = _ws_parts(ws[0], eps=ws[1], scaled=ws[2], dtype=d.dtype)
        w_b = _blocked(w_hat, geom)
        inv_s = (1 / s_c).view(1, geom.groups, geom.group_out, 1, 1, 1)
    hq, wq = _phase_grid(hp, wp, geom)
    k = geom.kernel[0] * geom.kernel[1]
    per_example = geom.in_channels * hq * wq * geom.stride[0] * geom.stride[1] + geom.out_channels * (
        hq * wq + geom.group_in * (k if (ws is not None or geom.group_in < _Polyphase.GATHER_BELOW) else 1)
    )
    kept = None
    for s in _chunks(b, per_example):
        parts = _instantiator(a[s], d[s], geom)
        if keep and kept is None:
            kept = [
                (rows, cols, d.new_empty(b, *parts.block_shape(i)))
                for i, (_, rows, cols, *_) in enumerate(parts.blocks)
            ]
        n_s = s.stop - s.start
        sq = torch.zeros(n_s, dtype=d.dtype, device=d.device)
        blocks = []
        for index, (_, rows, cols, *_) in enumerate(parts.blocks):
            blk = parts.block(index, out=kept[index][2][s] if kept is not None else None)  # set iff keep
            if ws is not None:  # J needs every block of a channel: the sums first
                blocks.append((rows, cols, blk))
                continue
            if mask_b is not None:
                blk = blk * mask_b[..., rows, cols]
            sq += (blk * blk).sum((1, 2, 3, 4, 5))
        if ws is not None:
            # weight-standardised: J_c g_c = (g_c − (1·g_c/n)1 − (κ/n)(ŵ_c·g_c)ŵ_c)/s_c, applied explicitly
            total = sum(blk.sum((3, 4, 5), keepdim=True) for _, _, blk in blocks)
            dot = sum((blk * w_b[..., r, c]).sum((3, 4, 5), keepdim=True) for r, c, blk in blocks)
            for r, c, blk in blocks:
                raw = (blk - total / n - (kappa / n) * dot * w_b[..., r, c]) * inv_s
                if mask_b is not None:
                    raw = raw * mask_b[..., r, c]
                sq += (raw * raw).sum((1, 2, 3, 4, 5))
        out[s] = sq
    return out, (None if kept is None else KeptGradients(tuple(kept), geom))


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
    stride: tuple[int, ...] = geom.stride
    dilation: tuple[int, ...] = geom.dilation
    padding: tuple[int, ...] = geom.padding
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
    """GroupNorm affine per-sample gradients (Σ_t δ x̂, Σ_t δ) per channel, each (B, C); x̂ is recomputed
    chunk by chunk of examples (bounded scratch) and multiplied by δ in place."""
    b, c = d.shape[:2]
    gw = d.new_empty(b, c)
    for s in _chunks(b, a[0].numel()):
        x_hat = F.group_norm(a[s], num_groups, eps=eps)
        gw[s] = x_hat.mul_(d[s]).reshape(x_hat.shape[0], c, -1).sum(-1)
    return gw, d.reshape(b, c, -1).sum(-1)


def layer_norm_per_sample(
    a: torch.Tensor, d: torch.Tensor, *, normalized_shape: tuple[int, ...], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm affine per-sample gradients (Σ_t δ x̂, Σ_t δ), each (B, *normalized_shape); x̂ recomputed
    chunk by chunk of examples and multiplied by δ in place."""
    b = d.shape[0]
    k = math.prod(normalized_shape)
    gw = d.new_empty(b, k)
    for s in _chunks(b, a[0].numel()):
        x_hat = F.layer_norm(a[s], normalized_shape, eps=eps)
        gw[s] = x_hat.mul_(d[s]).reshape(x_hat.shape[0], -1, k).sum(1)
    return gw.view(b, *normalized_shape), d.reshape(b, -1, k).sum(1).view(b, *normalized_shape)
