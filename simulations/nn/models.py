"""Networks for the experiments: an MLP (the dimension knob), small CNNs and GroupNorm WideResNets.

``build_model(name, *, input_shape, num_classes, width, depth, seed) -> torch.nn.Module``

=======  ======================================================================  ====================
name     architecture                                                              parameter count d
=======  ======================================================================  ====================
mlp      flatten → depth × (Linear(·, width) → ReLU) → Linear(width, classes)     n₀w + w + (D−1)(w² + w)
                                                                                   + wc + c
cnn      depth × (Conv(k=3, pad=1) → GroupNorm → ReLU [→ MaxPool(2)]) →           ``cnn_parameter_count``
         global average pool → Linear(width, classes); 1-D convolutions for
         inputs (L,) or (C, L), 2-D for (C, H, W)
dpcnn    the tanh CNN of Papernot et al. 2021 (arXiv 2007.14191v1, MNIST model):   ``dpcnn_parameter_count``
         Conv(16, 8×8, stride 2, pad 3) → tanh → MaxPool(2, stride 1) →            (26 010 for 1×28×28,
         Conv(32, 4×4, stride 2) → tanh → MaxPool(2, stride 1) → Linear(·, 32)     10 classes)
         → tanh → Linear(32, classes); any (C, H, W) with H, W ≥ 14 (the flatten
         size follows the input); ``width`` and ``depth`` are not used
wrn      WideResNet-(depth)-(width) (Zagoruyko & Komodakis 2016, arXiv             ``wrn_parameter_count``
         1605.07146v4) with GroupNorm instead of BatchNorm (De et al. 2022, arXiv
         2204.13650v2 §3), for 2-D image inputs (C, H, W)
wrn_ws   the same WideResNet with every convolution weight-standardised             as ``wrn``
         (``simulations.nn.layers.WSConv2d``, scaled WS): the DP WideResNet of De
         et al. 2022 (GroupNorm + weight standardisation)
=======  ======================================================================  ====================

n₀ = prod(input_shape), w = ``width`` (hidden units / channels / widen factor k), D = ``depth``
(hidden layers / conv layers / total WRN depth 6n + 4), c = ``num_classes``. No BatchNorm anywhere:
per-sample gradients (DP-SGD) need layers that do not mix examples in a batch.

Initialisation is PyTorch's default, drawn under ``torch.random.fork_rng`` seeded with ``seed``, so
the same seed gives bit-identical weights and the global torch RNG is left untouched.

Example:
    >>> m = build_model("mlp", input_shape=(40,), num_classes=10, width=100, depth=2, seed=0)
    >>> count_parameters(m) == mlp_parameter_count(input_dim=40, num_classes=10, width=100, depth=2)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dptheory.validate import check_int
from simulations.nn.layers import WSConv2d

MODELS = ("mlp", "cnn", "dpcnn", "wrn", "wrn_ws")


def count_parameters(model: nn.Module) -> int:
    """d: the number of trainable scalar parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int, seed: int
) -> nn.Module:
    """Build network ``name`` (one of ``MODELS``; table in the module docstring) with deterministic seeded
    initialisation. ``width`` and ``depth`` are validated for every name but unused by ``dpcnn``."""
    shape = tuple(check_int("input_shape entry", s, minimum=1) for s in tuple(input_shape))
    if not shape:
        raise ValueError(f"input_shape must be non-empty, got {input_shape!r}")
    num_classes = check_int("num_classes", num_classes, minimum=2)
    width = check_int("width", width, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            depth = check_int("depth", depth, minimum=0)
            return MLP(input_dim=math.prod(shape), num_classes=num_classes, width=width, depth=depth)
        if name == "cnn":
            depth = check_int("depth", depth, minimum=1)
            if len(shape) not in (1, 2, 3):
                raise ValueError(f"cnn needs input_shape (L,), (C, L) or (C, H, W), got {shape}")
            return CNN(input_shape=shape, num_classes=num_classes, width=width, depth=depth)
        if name == "dpcnn":
            if len(shape) != 3 or min(shape[1:]) < DPCNN_MIN_SIZE:
                raise ValueError(
                    f"dpcnn needs an image input_shape (C, H, W) with H, W >= {DPCNN_MIN_SIZE}, got {shape}"
                )
            return DPCNN(input_shape=shape, num_classes=num_classes)
        if name in ("wrn", "wrn_ws"):
            depth = check_int("depth", depth, minimum=10)
            if (depth - 4) % 6 != 0:
                raise ValueError(f"{name} depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
            if len(shape) != 3:
                raise ValueError(f"{name} needs a 2-D image input_shape (C, H, W), got {shape}")
            return WideResNet(
                in_channels=shape[0],
                num_classes=num_classes,
                widen=width,
                depth=depth,
                weight_standardization=name == "wrn_ws",
            )
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


# --------------------------------------------------------------------------------------------
# MLP


def mlp_parameter_count(*, input_dim: int, num_classes: int, width: int, depth: int) -> int:
    """d = n₀w + w + (D − 1)(w² + w) + wc + c for D ≥ 1 hidden layers; n₀c + c for D = 0."""
    if depth == 0:
        return input_dim * num_classes + num_classes
    return input_dim * width + width + (depth - 1) * (width * width + width) + width * num_classes + num_classes


class MLP(nn.Module):
    """Fully connected ReLU network; ``depth`` = number of hidden layers (0 = multinomial logistic)."""

    def __init__(self, *, input_dim: int, num_classes: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------
# CNN


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 dividing ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def cnn_parameter_count(*, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> int:
    """d = Σ_layers (c_in·w·k + w + 2w) + wc + c, k = 3 (1-D) or 9 (2-D), c_in = input channels then w."""
    in_ch = 1 if len(input_shape) == 1 else input_shape[0]
    ksize = 9 if len(input_shape) == 3 else 3
    total = 0
    for layer in range(depth):
        c_in = in_ch if layer == 0 else width
        total += c_in * width * ksize + width + 2 * width  # conv weight + bias, GroupNorm affine
    return total + width * num_classes + num_classes


class CNN(nn.Module):
    """Small CNN with GroupNorm; max-pool by 2 after each layer while the signal is ≥ 4 long."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        two_d = len(input_shape) == 3
        self.unsqueeze = len(input_shape) == 1  # (L,) → (1, L)
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
        in_ch = 1 if len(input_shape) == 1 else input_shape[0]
        size = min(input_shape[1:]) if len(input_shape) > 1 else input_shape[0]
        layers: list[nn.Module] = []
        for layer in range(depth):
            layers += [
                conv(in_ch if layer == 0 else width, width, kernel_size=3, padding=1),
                nn.GroupNorm(_groups(width), width),
                nn.ReLU(),
            ]
            if size >= 4:
                layers.append(pool(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if two_d else nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unsqueeze:
            x = x.unsqueeze(1)
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# the tanh CNN of Papernot et al. 2021

DPCNN_MIN_SIZE = 14  # smallest H, W for which both conv/pool stages leave at least one position


def _dpcnn_feature_hw(h: int, w: int) -> tuple[int, int]:
    """Spatial size after conv(8, s2, p3) → pool(2, s1) → conv(4, s2) → pool(2, s1)."""

    def stage(n: int, k: int, stride: int, pad: int) -> int:
        return (n + 2 * pad - k) // stride + 1 - 1  # conv, then MaxPool(2, stride 1) removes one

    return stage(stage(h, 8, 2, 3), 4, 2, 0), stage(stage(w, 8, 2, 3), 4, 2, 0)


def dpcnn_parameter_count(*, input_shape: tuple[int, ...], num_classes: int) -> int:
    """d = (16·C·64 + 16) + (32·16·16 + 32) + (32·h·w·32 + 32) + (32c + c), (h, w) the feature size."""
    c_in = input_shape[0]
    h, w = _dpcnn_feature_hw(*input_shape[1:])
    return (16 * c_in * 64 + 16) + (32 * 16 * 16 + 32) + (32 * h * w * 32 + 32) + (32 * num_classes + num_classes)


class DPCNN(nn.Module):
    """Papernot et al. 2021 (arXiv 2007.14191v1, their MNIST model) with tanh activations; padding 3
    on the first conv gives their 14×14 map for 28×28 inputs; other sizes change only the flatten size."""

    def __init__(self, *, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        h, w = _dpcnn_feature_hw(*input_shape[1:])
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 16, 8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * h * w, 32), nn.Tanh(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# WideResNet with GroupNorm


def wrn_parameter_count(*, in_channels: int, num_classes: int, widen: int, depth: int) -> int:
    """Hand count of ``WideResNet``: stem conv, 3 groups of n pre-activation blocks, final norm, head.

    Block (c_in → c_out): GN(c_in) 2c_in + conv 9c_in c_out + GN(c_out) 2c_out + conv 9c_out²
    (+ 1×1 shortcut c_in c_out when c_in ≠ c_out or the block strides). Convs have no bias.
    """
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    total = 9 * in_channels * 16
    c_in = 16
    for group, c_out in enumerate(widths[1:]):
        for block in range(n):
            stride = 2 if (group > 0 and block == 0) else 1
            total += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out
            if c_in != c_out or stride != 1:
                total += c_in * c_out
            c_in = c_out
    return total + 2 * c_in + c_in * num_classes + num_classes


class _Block(nn.Module):
    """Pre-activation residual block: GN → ReLU → conv3×3 → GN → ReLU → conv3×3, + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv: type[nn.Conv2d] = nn.Conv2d):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = conv(c_in, c_out, 1, stride=stride, bias=False) if (c_in != c_out or stride != 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-widen: 3 groups of n = (depth − 4)/6 blocks, widths 16k, 32k, 64k; GroupNorm; every conv
    weight-standardised (``WSConv2d``) when ``weight_standardization``."""

    def __init__(self, *, in_channels: int, num_classes: int, widen: int, depth: int, weight_standardization=False):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        conv = WSConv2d if weight_standardization else nn.Conv2d
        self.stem = conv(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = 16
        for group, c_out in enumerate(widths[1:]):
            for block in range(n):
                blocks.append(_Block(c_in, c_out, 2 if (group > 0 and block == 0) else 1, conv))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(_groups(c_in), c_in)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm(self.blocks(self.stem(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))
