"""Weight-standardised convolutions: the conv layers of the GroupNorm + WS WideResNet used for DP training.

For output channel c with raw weights w_c ∈ ℝⁿ (n = fan-in = (C_in/groups)·Πkernel) the layer convolves
with the standardised weights

    ŵ_c = (w_c − μ_c 1) / s_c,   μ_c = (1/n) Σ_k w_ck,   v_c = (1/n) Σ_k (w_ck − μ_c)²,   s_c = √(κ (v_c + ε)),

κ = n (``scaled=True``, the default: "scaled weight standardisation", Brock et al. 2021, arXiv 2101.08692v2
§4, without its learnable gain — the GroupNorm affine that follows provides it) or κ = 1 (``scaled=False``:
weight standardisation of Qiao et al. 2019, arXiv 1903.10520v2 eq. 5, population variance, ε inside the
root). De et al. 2022 (arXiv 2204.13650v2 §3) train their DP WideResNets with GroupNorm and these layers.

The per-sample gradient with respect to the RAW weights is the Jacobian J_c = ∂ŵ_c/∂w_c applied to the
gradient with respect to ŵ_c (``simulations.nn.persample`` derives J_c and the per-sample norm from it).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> conv = WSConv2d(3, 4, 3, padding=1)
    >>> w = standardize_weight(conv.weight, eps=conv.eps, scaled=False)
    >>> bool(torch.allclose(w.flatten(1).mean(1), torch.zeros(4), atol=1e-6))
    True
    >>> v = conv.weight.detach().flatten(1).var(1, unbiased=False)   # mean square of ŵ is v / (v + ε)
    >>> bool(torch.allclose(w.flatten(1).pow(2).mean(1), v / (v + conv.eps), rtol=1e-5))
    True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WS_EPS", "WSConv1d", "WSConv2d", "standardize_weight"]

WS_EPS = 1e-5


def standardize_weight(weight: torch.Tensor, *, eps: float, scaled: bool) -> torch.Tensor:
    """ŵ = (w − μ)/√(κ(v + ε)) per output channel (dim 0), κ = fan-in if ``scaled`` else 1 (module docstring)."""
    flat = weight.flatten(1)
    n = flat.shape[1]
    mean = flat.mean(1, keepdim=True)
    var = (flat - mean).pow(2).mean(1, keepdim=True)
    kappa = float(n) if scaled else 1.0
    return ((flat - mean) * torch.rsqrt(kappa * (var + eps))).view_as(weight)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with the standardised weight ŵ (module docstring); same arguments plus
    ``eps`` = ε and ``scaled`` (κ = fan-in when True, 1 when False)."""

    def __init__(self, *args, eps: float = WS_EPS, scaled: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.scaled = bool(scaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight, eps=self.eps, scaled=self.scaled), self.bias)


class WSConv1d(nn.Conv1d):
    """``nn.Conv1d`` with standardised weights (see :class:`WSConv2d`)."""

    def __init__(self, *args, eps: float = WS_EPS, scaled: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.scaled = bool(scaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight, eps=self.eps, scaled=self.scaled), self.bias)
