"""Per-step diagnostics of a DP-SGD gradient: how much clipping and noise distort the update.

From one :class:`simulations.nn.engine.PrivateGradient` (batch S, per-sample norms ‖g_i‖, clip
factors φ_i, noise norm ν‖ξ‖):

cheap (always):
    ``batch_size`` |S|; ``clip_fraction`` = (1/|S|) Σ 1{‖g_i‖ > C} with C the clip norm (in the
    unclipped modes the reference C: "how many samples *would* be clipped"); ``mean_clip_factor``
    = (1/|S|) Σ min(1, C/(‖g_i‖+1e-6)); ``norm_q10``/``norm_q50``/``norm_q90`` quantiles of ‖g_i‖;
    ``noise_norm`` = ν‖m⊙ξ‖ (on the sum).
costly (on demand, needs ``keep_sums=True`` in the engine — both sums come from the same pass):
    ``clip_bias_norm`` = ‖(1/|S|) Σ (φ_i − 1) g_i‖ (mean clipped − mean unclipped gradient);
    ``clip_bias_rel`` = clip_bias_norm / ‖(1/|S|) Σ g_i‖;
    ``cosine`` = cos(ĝ, (1/|S|) Σ g_i) between the private update direction (clipped + noise) and
    the non-private batch gradient.
An empty batch gives NaN for the per-sample statistics (there are none).

per layer (:func:`layer_diagnostics`, on a fixed diagnostic subsample, materialised per-sample
gradients by ``vmap``): for every trainable tensor L with d_L kept coordinates,
    ``norm_q50``/``norm_q90`` of ‖m⊙g_i^L‖; ``share`` = mean_i ‖g_i^L‖² / ‖g_i‖² (the layer's share
    of the flat norm that the flat clip acts on); ``clip_fraction`` = fraction of examples whose
    layer norm alone exceeds C; ``signal_norm`` = ‖(1/n) Σ_i φ_i m⊙g_i^L‖ (the clipped mean, φ_i the
    flat clip factors); ``noise_to_signal`` = (ν/B)√d_L / signal_norm (the norm of the layer's share
    of the noise on the averaged update over its clipped signal); ``weight_norm`` = ‖w_L‖.
    Plus the flat ``clip_fraction`` and ``norm_q50`` over all layers.

Example:
    >>> import torch
    >>> from simulations.nn.engine import private_gradient
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> pg = private_gradient(model, x, y, clip_norm=1e9, noise_std=0.0, expected_batch_size=8,
    ...                       generator=torch.Generator().manual_seed(0), keep_sums=True)
    >>> d = bias_diagnostics(pg)
    >>> d["clip_bias_norm"] < 1e-6, abs(d["cosine"] - 1) < 1e-5
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from simulations.nn.engine import PrivateGradient

__all__ = [
    "average_diagnostics",
    "bias_diagnostics",
    "flat_dot",
    "flat_norm",
    "layer_diagnostics",
    "step_diagnostics",
]

NAN = float("nan")


def flat_dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """⟨a, b⟩ of two parameter-shaped dicts viewed as one flat vector (float64)."""
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def flat_norm(a: Mapping[str, torch.Tensor]) -> float:
    """‖a‖ of a parameter-shaped dict viewed as one flat vector."""
    return math.sqrt(max(flat_dot(a, a), 0.0))


def step_diagnostics(pg: PrivateGradient, *, clip_norm: float) -> dict[str, float]:
    """The cheap statistics (module docstring); ``clip_norm`` = the C that counts as "clipped"."""
    norms = pg.per_sample_norms.double()
    out = {"batch_size": float(pg.batch_size), "noise_norm": float(pg.noise_norm)}
    if norms.numel() == 0:
        out.update(clip_fraction=NAN, mean_clip_factor=NAN, norm_q10=NAN, norm_q50=NAN, norm_q90=NAN)
        return out
    q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9], dtype=norms.dtype, device=norms.device))
    if math.isinf(clip_norm):
        frac, factor = 0.0, 1.0
    else:
        frac = float((norms > clip_norm).double().mean())
        factor = float((clip_norm / (norms + 1e-6)).clamp(max=1.0).mean())
    out.update(
        clip_fraction=frac, mean_clip_factor=factor, norm_q10=float(q[0]), norm_q50=float(q[1]), norm_q90=float(q[2])
    )
    return out


def bias_diagnostics(pg: PrivateGradient) -> dict[str, float]:
    """The costly statistics (module docstring); needs ``pg`` computed with ``keep_sums=True``."""
    if pg.unclipped_sum is None or pg.clipped_sum is None:
        raise ValueError("bias_diagnostics needs a PrivateGradient computed with keep_sums=True")
    n = pg.batch_size
    if n == 0:
        return {"clip_bias_norm": NAN, "clip_bias_rel": NAN, "cosine": NAN}
    diff = {k: (pg.clipped_sum[k] - pg.unclipped_sum[k]) / n for k in pg.unclipped_sum}
    mean = {k: v / n for k, v in pg.unclipped_sum.items()}
    bias = flat_norm(diff)
    mnorm = flat_norm(mean)
    gnorm = flat_norm(pg.grads)
    cos = flat_dot(pg.grads, mean) / (gnorm * mnorm) if gnorm > 0 and mnorm > 0 else NAN
    return {"clip_bias_norm": bias, "clip_bias_rel": bias / mnorm if mnorm > 0 else NAN, "cosine": cos}


def average_diagnostics(records: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-key mean over steps, ignoring NaN (e.g. an epoch's worth of per-step records)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rec in records:
        for k, v in rec.items():
            if v is not None and not math.isnan(v):
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
            else:
                sums.setdefault(k, 0.0)
                counts.setdefault(k, 0)
    return {k: (sums[k] / counts[k] if counts[k] else NAN) for k in sums}


def layer_diagnostics(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip_norm: float,
    noise_std: float,
    expected_batch_size: float,
    masks: Mapping[str, torch.Tensor] | None = None,
    clip_rule: str = "flat",
) -> dict:
    """Per-layer clipping and noise statistics on the examples (x, y) (module docstring).

    ``clip_norm`` = C (``inf``: nothing clipped), ``noise_std`` = ν on the sum, ``expected_batch_size``
    = B, ``masks`` = the pruning masks (pruned coordinates count neither in norms nor in d_L),
    ``clip_rule`` = the engine's rule for the clip factors (``simulations.nn.engine.clip_factors``).
    Returns ``{"clip_fraction", "norm_q50", "layers": {name: {...}}}`` with plain floats.
    """
    from simulations.nn.engine import clip_factors, per_sample_gradients, trainable_parameters

    grads = per_sample_gradients(model, x, y, method="vmap")
    params = trainable_parameters(model)
    if masks is not None:
        grads = {k: g * masks[k] if k in masks else g for k, g in grads.items()}
    sq = {k: g.reshape(g.shape[0], -1).double().pow(2).sum(1) for k, g in grads.items()}
    total = torch.stack(list(sq.values())).sum(0)
    norms = total.sqrt()
    phi = clip_factors(norms, clip_norm, clip_rule)
    qs = torch.tensor([0.5, 0.9], dtype=norms.dtype)
    out: dict[str, Any] = {
        "clip_fraction": float((norms > clip_norm).double().mean()) if norms.numel() else NAN,
        "norm_q50": float(torch.quantile(norms, 0.5)) if norms.numel() else NAN,
        "layers": {},
    }
    n = max(int(x.shape[0]), 1)
    for k, g in grads.items():
        layer = sq[k].sqrt()
        d_kept = float(masks[k].sum()) if masks is not None and k in masks else float(params[k].numel())
        mean_clipped = torch.einsum("b,b...->...", phi.to(g.dtype), g).double() / n
        signal = float(mean_clipped.norm())
        noise = noise_std / expected_batch_size * math.sqrt(d_kept)
        lq = torch.quantile(layer, qs) if layer.numel() else torch.full((2,), NAN)
        out["layers"][k] = {
            "dim": d_kept,
            "norm_q50": float(lq[0]),
            "norm_q90": float(lq[1]),
            "share": float((sq[k] / total.clamp(min=1e-30)).mean()),
            "clip_fraction": float((layer > clip_norm).double().mean()),
            "signal_norm": signal,
            "noise_to_signal": noise / signal if signal > 0 else math.inf,
            "weight_norm": float(params[k].detach().double().norm()),
        }
    return out
