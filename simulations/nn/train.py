"""Train a network with DP-SGD or one of its ablations; per-epoch history, privacy label, checkpoints.

One run = one frozen :class:`TrainConfig`. Each step (``dptheory.records``):

    S ~ Poisson(q) over the n training examples (q = batch_size / n),
    ĝ = (1/B)[Σ_{i∈S} φ_i m⊙g_i + ν m⊙ξ],   w ← SGD-with-momentum(w, ĝ, lr_t),   w ← m⊙w,

with the mode deciding clipping (C or none) and ν (σC, σC_ref or 0) exactly as in
``dptheory.records.Optimizer``, and ``clip_rule`` deciding φ_i (``"flat"``: min(1, C/‖g_i‖),
Opacus; ``"normalised"``: C/(‖g_i‖ + 0.01), automatic clipping; ``simulations.nn.engine``). With
``augment``, each sampled example enters as ``augment_multiplicity`` augmented copies whose
gradients are averaged before clipping (``simulations.nn.augment``). Modes can switch at
``switch_epoch`` (either direction). All randomness comes from ``seed`` through separate streams
(model init; batch sampling on a CPU generator; gradient noise; burst displacement; Lanczos start
vectors; augmentation) that every mode consumes identically, so runs that differ only in mode see
the same batches and the same ξ (paired).

Privacy (``dptheory.privacy``): a run is labelled ``"private"`` only if every step is ``dpsgd``
with σ > 0 and its pruning mask is data-independent (``init``, ``random``), taken from a run that
trained on the disjoint public split only (``public``: no private example is touched) or itself
private (``private``, whose ε is COMPOSED into the reported ε). An ``oracle`` mask (magnitudes
after non-private training on the private split) always makes the run "not private". Otherwise ε is reported as ``inf`` and the label says why
(``"not private: ..."``). σ can be calibrated from ``target_epsilon`` (RDP, conservative), for
``epochs × steps_per_epoch`` DP-SGD steps composed with a private mask's mechanisms.

``train(config)`` returns a JSON-able dict::

    {"history": [per-epoch records, epoch 0 = before training],
     "steps": {"batch_size": [...], "clip_fraction": [...], ...}   # per-step cheap diagnostics
     "privacy": {"label", "private", "noise_multiplier", "delta", "sample_rate", "mechanisms",
                 "epsilon_rdp", "epsilon_pld", ... (one per name in ``accountants``), "mask_source"},
     "parameters": d, "kept_parameters": d_kept, "steps_per_epoch": ..., "device": ...}

Splits (``simulations.nn.data``): ``n_val`` validation and ``n_public`` public examples are carved
out of the training pool (disjoint from train and test); with ``n_val > 0`` every history record
also has ``val_loss, val_acc`` (hyperparameters are selected on these, never on the test split).
``train_split="public"`` trains on the public split instead of the private one: such a run never
sees a private example (label ``"public split only ..."``) and can supply a ``public`` mask.

Step-resolution curves: at every global step in ``curve_steps`` (before that step; a step equal to
the run's total steps means "after the last step") the test loss and accuracy on the first
``curve_samples`` test examples are recorded in ``result["curve"]``; with ``layer_diagnostics``
also per-layer statistics on the first ``diagnostic_samples`` training examples
(``simulations.nn.diagnostics.layer_diagnostics``: per-layer per-sample norms, clip fractions,
noise-to-signal, weight norms). These diagnostics are for analysis: they are computed from
training examples and are NOT covered by the run's DP guarantee (nor are the per-step
statistics), only the trained weights are.

σ calibration with ``target_epsilon`` counts the DP-SGD steps: a switched run calibrates σ for
the steps of its ``dpsgd`` phase (every step for an unswitched run, as before).

Each history record has ``epoch, step, mode, lr, train_loss, train_acc, test_loss, test_acc,
epsilon_rdp, seconds`` (ε so far, RDP: cheap; the tighter PLD ε is computed once, in ``privacy``) and the epoch means of the diagnostics (``batch_size,
clip_fraction, mean_clip_factor, norm_q10, norm_q50, norm_q90, noise_norm``; with
``diagnostics="full"`` also ``clip_bias_norm, clip_bias_rel, cosine``; with ``hessian_k > 0``
``hessian_top`` (list), ``hessian_eff_rank`` and, with full diagnostics, ``bias_in_top_k`` (share of
the last step's clipping bias in the top-k Hessian subspace)). ``burst_norm`` is recorded in the
epoch holding ``burst_step``.

``init_state`` starts a run from the weights of an earlier run's ``model.pt`` (e.g. a warm restart of a
cosine schedule); masks are computed before it is loaded, so an ``init`` mask stays data-independent,
and the run is labelled not private (the earlier training is not accounted).

``run_train(config)`` writes a result folder (``config.json``, ``metrics.json``, ``metrics.npz``
with the per-step arrays, ``env.json``, ``model.pt`` = final state dict, ``masks.pt``). With
``out`` set, a checkpoint ``<out>.checkpoint.pt`` is written atomically every
``checkpoint_every`` epochs (model, optimizer, every generator state as a uint8 tensor, history —
tensors and plain data only) and kept when the run finishes; ``resume=True`` continues from it with
results identical to an uninterrupted run (tested bit for bit on CPU), and with a larger ``epochs``
extends a finished run (unless the schedule or a ``target_epsilon`` calibration depends on the total
number of epochs). What was reused is printed in one line. A checkpoint is read with
``torch.load(weights_only=True)`` and validated (format, config key, parameter names and shapes,
random-stream states) before use: a malformed or foreign file is one ``ValueError`` naming it and
nothing in it can execute.

Same seed, same numbers: a run is bit-identical for the same config on the same machine with the
same ``threads`` (torch intra-op threads, default 1, saved in ``config.json`` and part of the
resume key). Another thread count changes the order of floating-point reductions, hence the low
bits and, through training, the results; other machines (CPU instruction sets, BLAS builds) or a
GPU may differ too.

Guards: before anything is loaded, the run's memory (parameters, per-sample gradients, activations,
data, Hessian vectors) and work (steps × batch × parameters) are estimated and refused above the
limits of ``simulations.common.resources`` (:func:`check_training_resources`); σ below 0.1 is
refused when a PLD or PRV accountant reports ε (their grids grow without bound); a non-finite loss
or weight, or a training loss over 100 × its initial value, stops the run with :class:`TrainingDiverged` —
nothing diverged or NaN is ever written or labelled.

Command line (``python -m simulations.nn train``; every field is a flag), a real run and its output::

    $ python -m simulations.nn train --dataset teacher --n-train 400 --n-test 200 --width 32 --depth 1 \
          --epochs 3 --batch-size 40 --target-epsilon 2 --out /tmp/f_cli/run
    epoch 1/3 mode=dpsgd train_acc=0.1375 test_acc=0.1050 eps_rdp=1.331 (0.5s)
    epoch 2/3 mode=dpsgd train_acc=0.1725 test_acc=0.1350 eps_rdp=1.700 (0.3s)
    epoch 3/3 mode=dpsgd train_acc=0.1750 test_acc=0.1300 eps_rdp=2.000 (0.2s)
    /tmp/f_cli/run: test_acc 0.1300, private, sigma 1.631, epsilon at delta=1e-05: rdp 2, pld 1.758

Example (a few seconds on a CPU):
    >>> cfg = TrainConfig(dataset="teacher", n_train=200, n_test=100, width=16, depth=1, epochs=1,
    ...                   batch_size=50, noise_multiplier=1.0, quiet=True)
    >>> res = train(cfg)
    >>> res["privacy"]["label"], len(res["history"])
    ('private', 2)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dptheory.privacy import ACCOUNTANTS, PoissonGaussianMechanism, epsilon, noise_multiplier_for_epsilon
from dptheory.records import Mode, Optimizer
from dptheory.validate import (
    check_finite,
    check_int,
    check_nonnegative,
    check_positive,
    check_positive_or_inf,
    check_scale,
)
from simulations.common.resources import check_threads
from simulations.nn.augment import AUGMENTATIONS, augment_batch
from simulations.nn.diagnostics import average_diagnostics, bias_diagnostics, step_diagnostics
from simulations.nn.engine import CLIP_RULES, METHODS, private_gradient, trainable_parameters
from simulations.nn.masks import SCOPES, apply_masks, magnitude_masks, random_masks
from simulations.nn.sampler import poisson_batch, steps_per_epoch

__all__ = [
    "LR_SCHEDULES",
    "MASK_SOURCES",
    "PUBLIC_LABEL",
    "TRAIN_SPLITS",
    "TrainConfig",
    "checkpoint_path",
    "load_initial_state",
    "main",
    "run_train",
    "train",
]

LR_SCHEDULES = ("constant", "cosine", "step")
MASK_SOURCES = ("init", "random", "public", "private", "oracle")
TRAIN_SPLITS = ("train", "public")
DIAGNOSTICS = ("none", "cheap", "full")
DEVICES = ("auto", "cpu", "cuda")
MODES = tuple(m.value for m in Mode)
TRAIN_MODELS = ("mlp", "cnn", "dpcnn", "wrn", "wrn_ws")  # simulations.nn.models.MODELS
MAX_SCALE = 1e30  # clip norms, noise and burst scales: σC must fit float32 (≈ 3.4e38) with room
MAX_LR = 1e6
# below this σ the PLD and PRV accountants' discretised privacy-loss grids grow without bound (their
# cost rises like 1/σ; near σ = 1e-6 the grid is petabytes); RDP stays cheap down to 1e-30
MIN_SIGMA_GRID_ACCOUNTANTS = 0.1


def check_noise_multiplier(sigma: Any, accountants: tuple[str, ...]) -> float:
    """σ ∈ {0} ∪ [1e-30, 1e6], and σ ≥ 0.1 (or 0) when a PLD or PRV accountant reports ε."""
    value = check_nonnegative("noise_multiplier", sigma, maximum=1e6)
    if value == 0:
        return value
    if value < 1e-30:
        raise ValueError(f"noise_multiplier must be 0 or >= 1e-30, got {sigma!r}")
    grid = [a for a in accountants if a in ("pld", "prv")]
    if grid and value < MIN_SIGMA_GRID_ACCOUNTANTS:
        raise ValueError(
            f"noise_multiplier {value:g} is below {MIN_SIGMA_GRID_ACCOUNTANTS}, where the {'/'.join(grid)} "
            f"accountant's grid grows without bound; use --accountants rdp"
        )
    return value


def _h(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (module docstring). Validated in ``__post_init__`` (ValueError naming the value)."""

    dataset: str = field(default="mnist1d", metadata=_h("dataset name for simulations.nn.data.load_dataset"))
    model: str = field(
        default="mlp",
        metadata=_h(
            "network: mlp | cnn (GroupNorm) | dpcnn (the tanh CNN of DP image work) | wrn | wrn_ws "
            "(WideResNet with GroupNorm, wrn_ws also weight-standardised)",
            choices=TRAIN_MODELS,
        ),
    )
    width: int = field(default=100, metadata=_h("hidden units (mlp) / channels (cnn) / widen factor (wrn)"))
    depth: int = field(default=2, metadata=_h("hidden layers (mlp) / conv layers (cnn) / total depth (wrn)"))
    epochs: int = field(default=10, metadata=_h("epochs (one epoch = round(n/batch_size) Poisson steps)"))
    batch_size: int = field(default=128, metadata=_h("EXPECTED batch size B (sample rate q = B/n)"))
    lr: float = field(default=0.1, metadata=_h("learning rate (peak, for schedules)"))
    momentum: float = field(default=0.0, metadata=_h("SGD momentum in [0, 1)"))
    lr_schedule: str = field(
        default="constant", metadata=_h("constant | cosine (per step, to 0) | step", choices=LR_SCHEDULES)
    )
    lr_step_epochs: int = field(
        default=10, metadata=_h("step schedule: multiply lr by lr_gamma every this many epochs")
    )
    lr_gamma: float = field(default=0.1, metadata=_h("step schedule factor"))
    clip_norm: float = field(default=1.0, metadata=_h("per-sample clipping norm C (modes clip and dpsgd)"))
    clip_rule: str = field(
        default="flat",
        metadata=_h(
            "flat: min(1, C/|g_i|) (Opacus) | normalised: C/(|g_i| + 0.01) (automatic clipping, AUTO-S)",
            choices=CLIP_RULES,
        ),
    )
    noise_multiplier: float | None = field(
        default=None, metadata=_h("noise multiplier sigma (default 1.0 unless target_epsilon is given)")
    )
    target_epsilon: float | None = field(
        default=None, metadata=_h("calibrate sigma (RDP, conservative) so the whole run has this epsilon at delta")
    )
    delta: float = field(default=1e-5, metadata=_h("delta of the reported (epsilon, delta)"))
    accountants: tuple[str, ...] = field(
        default=("rdp", "pld"),
        metadata=_h("accountants for the final epsilon (rdp, pld, prv); the per-epoch history uses rdp"),
    )
    mode: str = field(default="dpsgd", metadata=_h("sgd | clip | noise | dpsgd", choices=MODES))
    ref_clip_norm: float | None = field(default=None, metadata=_h("noise-only mode: noise std sigma*C_ref (default C)"))
    switch_epoch: int | None = field(default=None, metadata=_h("switch to switch_mode from this epoch on (0-based)"))
    switch_mode: str | None = field(default=None, metadata=_h("mode after switch_epoch"))
    switch_lr: float | None = field(
        default=None, metadata=_h("learning rate (peak) from switch_epoch on (default: lr; schedules apply to it)")
    )
    sparsity: float = field(default=0.0, metadata=_h("fraction of prunable weights set to zero, in [0, 1)"))
    prune_scope: str = field(default="global", metadata=_h("global | layer", choices=SCOPES))
    mask_source: str = field(
        default="init",
        metadata=_h(
            "init magnitudes (free) | random (free) | public (run on the public split, free) | "
            "private (earlier DP run, epsilon composed) | oracle (non-private run: never private)",
            choices=MASK_SOURCES,
        ),
    )
    mask_run: str | None = field(default=None, metadata=_h("result folder of the run whose weights give the mask"))
    burst_step: int | None = field(default=None, metadata=_h("global step (0-based) at which to displace the weights"))
    burst_scale: float = field(default=0.0, metadata=_h("burst: w += burst_scale * m*N(0, I) before that step"))
    diagnostics: str = field(
        default="cheap", metadata=_h("none | cheap | full (adds clip bias and cosine)", choices=DIAGNOSTICS)
    )
    hessian_k: int = field(default=0, metadata=_h("top-k Hessian eigenvalues at each epoch end (0 = off)"))
    hessian_samples: int = field(default=512, metadata=_h("training examples used for the Hessian"))
    grad_method: str = field(
        default="auto", metadata=_h("per-sample gradients: auto | bk | vmap | loop", choices=METHODS)
    )
    augment: str = field(
        default="none",
        metadata=_h(
            "augment training images: none | shift (random translations) | shift_flip (also mirror)",
            choices=AUGMENTATIONS,
        ),
    )
    augment_shift: int = field(default=2, metadata=_h("largest translation in pixels (augment)"))
    augment_multiplicity: int = field(
        default=1, metadata=_h("K augmented copies per example, gradients averaged before clipping (augment)")
    )
    seed: int = field(default=0, metadata=_h("seed of model init, sampling, noise"))
    data_seed: int = field(default=0, metadata=_h("seed of the dataset (generation / split)"))
    device: str = field(default="auto", metadata=_h("auto | cpu | cuda", choices=DEVICES))
    data_root: str | None = field(default=None, metadata=_h("folder with downloaded datasets"))
    n_train: int | None = field(default=None, metadata=_h("training examples (default: dataset's)"))
    n_test: int | None = field(default=None, metadata=_h("test examples (default: dataset's)"))
    n_val: int = field(default=0, metadata=_h("validation examples carved out of the training pool (0 = none)"))
    n_public: int = field(default=0, metadata=_h("public examples carved out of the training pool (0 = none)"))
    train_split: str = field(
        default="train",
        metadata=_h("train on the private 'train' split or on the disjoint 'public' split", choices=TRAIN_SPLITS),
    )
    curve_steps: tuple[int, ...] = field(
        default=(), metadata=_h("global steps at which to record test accuracy on a fixed subsample")
    )
    curve_samples: int = field(default=1000, metadata=_h("test (and training) examples used for curve_steps"))
    layer_diagnostics: bool = field(
        default=False, metadata=_h("at curve_steps also record per-layer per-sample norms and noise-to-signal")
    )
    diagnostic_samples: int = field(default=256, metadata=_h("training examples used for layer_diagnostics"))
    eval_batch_size: int = field(default=1024, metadata=_h("batch size for evaluation"))
    out: str | None = field(default=None, metadata=_h("result folder (run_train); also enables checkpoints"))
    resume: bool = field(default=False, metadata=_h("continue from <out>.checkpoint.pt if present"))
    checkpoint_every: int = field(default=1, metadata=_h("epochs between checkpoints (0 = none)"))
    init_state: str | None = field(
        default=None,
        metadata=_h("start from this model.pt of an earlier run_train (weights only; the run is then not private)"),
    )
    quiet: bool = field(default=False, metadata=_h("no progress output"))
    threads: int = field(
        default=1,
        metadata=_h("torch CPU threads (saved: unclipped runs are bit-identical only for the same count; 0 = torch's)"),
    )

    def __post_init__(self) -> None:
        ints = {
            "width": 1,
            "depth": 0,
            "epochs": 1,
            "batch_size": 1,
            "lr_step_epochs": 1,
            "hessian_k": 0,
            "hessian_samples": 1,
            "seed": 0,
            "data_seed": 0,
            "eval_batch_size": 1,
            "checkpoint_every": 0,
            "n_val": 0,
            "n_public": 0,
            "curve_samples": 1,
            "diagnostic_samples": 1,
            "augment_shift": 0,
            "augment_multiplicity": 1,
        }
        for name, minimum in ints.items():
            top = 2**63 - 1 if name in ("seed", "data_seed") else None
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=minimum, maximum=top))
        object.__setattr__(self, "lr", check_scale("lr", self.lr, high=MAX_LR))
        mom = check_finite("momentum", self.momentum)
        if not 0 <= mom < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        object.__setattr__(self, "momentum", mom)
        object.__setattr__(self, "lr_gamma", check_scale("lr_gamma", self.lr_gamma, high=1.0))
        object.__setattr__(self, "clip_norm", check_positive_or_inf("clip_norm", self.clip_norm, maximum=MAX_SCALE))
        if math.isfinite(self.clip_norm):
            check_scale("clip_norm", self.clip_norm, high=MAX_SCALE)
        object.__setattr__(self, "threads", check_threads("threads", self.threads))
        if self.target_epsilon is not None:
            object.__setattr__(
                self, "target_epsilon", check_positive("target_epsilon", self.target_epsilon, maximum=1e6)
            )
            if self.noise_multiplier is not None:
                raise ValueError(
                    f"give noise_multiplier or target_epsilon, not both (got "
                    f"{self.noise_multiplier!r} and {self.target_epsilon!r})"
                )
        accs = tuple(
            str(a).lower()
            for a in (self.accountants if not isinstance(self.accountants, str) else self.accountants.split(","))
        )
        if not accs or any(a not in ACCOUNTANTS for a in accs):
            raise ValueError(
                f"accountants must be a non-empty subset of {', '.join(ACCOUNTANTS)}, got {self.accountants!r}"
            )
        object.__setattr__(self, "accountants", accs)
        if self.noise_multiplier is not None:
            object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier, accs))
        d = check_positive("delta", self.delta)
        if d >= 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        object.__setattr__(self, "mode", Mode.parse(self.mode).value)
        if self.ref_clip_norm is not None:
            object.__setattr__(self, "ref_clip_norm", check_scale("ref_clip_norm", self.ref_clip_norm, high=MAX_SCALE))
        if (self.switch_epoch is None) != (self.switch_mode is None):
            raise ValueError(
                f"switch_epoch and switch_mode go together, got switch_epoch={self.switch_epoch!r} "
                f"and switch_mode={self.switch_mode!r}"
            )
        if self.switch_lr is not None:
            object.__setattr__(self, "switch_lr", check_scale("switch_lr", self.switch_lr, high=MAX_LR))
            if self.switch_epoch is None:
                raise ValueError(f"switch_lr needs switch_epoch and switch_mode, got switch_lr={self.switch_lr!r}")
        if self.switch_epoch is not None:
            object.__setattr__(self, "switch_epoch", check_int("switch_epoch", self.switch_epoch, minimum=0))
            if self.switch_epoch >= self.epochs:
                raise ValueError(
                    f"switch_epoch must be < epochs ({self.epochs}): a switch at or after the last epoch never "
                    f"happens, got {self.switch_epoch}"
                )
            if self.switch_mode is None:
                raise ValueError(f"switch_epoch needs switch_mode, got switch_epoch={self.switch_epoch!r}")
            object.__setattr__(self, "switch_mode", Mode.parse(self.switch_mode).value)
        for m in self.modes_used:
            if (
                Mode(m).noised
                and self.sigma_given > 0
                and not math.isfinite(self.ref_clip_norm if (m == "noise" and self.ref_clip_norm) else self.clip_norm)
            ):
                raise ValueError(
                    f"mode {m!r} adds noise sigma*C and needs a finite clip_norm "
                    f"(or ref_clip_norm for 'noise'), got clip_norm={self.clip_norm!r}"
                )
        s = check_finite("sparsity", self.sparsity)
        if not 0 <= s < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        object.__setattr__(self, "sparsity", s)
        for name, allowed in (
            ("lr_schedule", LR_SCHEDULES),
            ("prune_scope", SCOPES),
            ("mask_source", MASK_SOURCES),
            ("diagnostics", DIAGNOSTICS),
            ("device", DEVICES),
            ("grad_method", METHODS),
            ("clip_rule", CLIP_RULES),
            ("augment", AUGMENTATIONS),
            ("model", TRAIN_MODELS),
            ("train_split", TRAIN_SPLITS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.augment_multiplicity > 1 and self.augment == "none":
            raise ValueError(f"augment_multiplicity {self.augment_multiplicity} needs augment (shift or shift_flip)")
        if self.augment_multiplicity > 64 or self.augment_shift > 16:
            raise ValueError(
                f"augment_multiplicity must be <= 64 and augment_shift <= 16, got "
                f"{self.augment_multiplicity} and {self.augment_shift}"
            )
        if self.clip_rule == "normalised" and not math.isfinite(self.clip_norm):
            raise ValueError(
                "clip_rule='normalised' rescales every per-sample gradient to norm C: clip_norm must be finite"
            )
        if s > 0 and self.mask_source in ("public", "private", "oracle") and not self.mask_run:
            raise ValueError(f"mask_source={self.mask_source!r} needs mask_run (a result folder), got None")
        if self.train_split == "public" and self.n_public < 1:
            raise ValueError(f"train_split='public' needs n_public >= 1, got n_public={self.n_public}")
        steps = self.curve_steps if not isinstance(self.curve_steps, str) else self.curve_steps.split(",")
        if not isinstance(steps, (tuple, list)):
            raise ValueError(f"curve_steps must be a list of steps, got {self.curve_steps!r}")
        curve = tuple(sorted({check_int("curve_steps entry", v, minimum=0) for v in steps if v != ""}))
        object.__setattr__(self, "curve_steps", curve)
        for name in ("layer_diagnostics", "quiet", "resume"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.layer_diagnostics and not self.curve_steps:
            raise ValueError("layer_diagnostics are recorded at curve_steps: give curve_steps too")
        if self.burst_step is not None:
            object.__setattr__(self, "burst_step", check_int("burst_step", self.burst_step, minimum=0))
        object.__setattr__(self, "burst_scale", check_nonnegative("burst_scale", self.burst_scale, maximum=MAX_SCALE))
        if self.burst_step is not None and self.burst_scale == 0:
            raise ValueError(f"burst_step={self.burst_step} needs burst_scale > 0 (a burst of size 0 does nothing)")
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        if self.resume and not self.out:
            raise ValueError("resume needs out (the checkpoint is <out>.checkpoint.pt), got out=None")

    @property
    def sigma_given(self) -> float:
        """σ before calibration: ``noise_multiplier`` or 1.0 (target_epsilon: calibrated in ``train``)."""
        return 1.0 if self.noise_multiplier is None else float(self.noise_multiplier)

    @property
    def modes_used(self) -> tuple[str, ...]:
        """The mode before and (if any) after the switch."""
        return (self.mode,) if self.switch_mode is None else (self.mode, self.switch_mode)

    @property
    def dpsgd_epochs(self) -> int:
        """Number of epochs run in mode ``dpsgd`` (σ calibration counts their steps)."""
        return sum(1 for e in range(self.epochs) if self.mode_at(e) is Mode.DPSGD)

    def mode_at(self, epoch: int) -> Mode:
        """The mode of (0-based) ``epoch``."""
        if self.switch_epoch is not None and epoch >= self.switch_epoch:
            return Mode(self.switch_mode)
        return Mode(self.mode)


def checkpoint_path(config: TrainConfig) -> Path | None:
    """``<out>.checkpoint.pt`` (beside the result folder), or None without ``out``."""
    return None if not config.out else Path(str(config.out).rstrip("/") + ".checkpoint.pt")


# ------------------------------------------------------------------------------------------------
# helpers


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available")
    return torch.device(name)


def _seeds(seed: int) -> dict[str, int]:
    kids = np.random.SeedSequence(seed).generate_state(5, dtype=np.uint64)  # a prefix of a longer draw is the same
    return {
        "sampler": int(kids[0] >> 1),
        "noise": int(kids[1] >> 1),
        "burst": int(kids[2] >> 1),
        "hessian": int(kids[3] >> 1),
        "augment": int(kids[4] >> 1),
    }


def _lr_at(config: TrainConfig, epoch: int, step_in_run: int, total_steps: int) -> float:
    peak = config.lr
    if config.switch_lr is not None and config.switch_epoch is not None and epoch >= config.switch_epoch:
        peak = config.switch_lr
    if config.lr_schedule == "constant":
        return peak
    if config.lr_schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * step_in_run / total_steps))
    return peak * config.lr_gamma ** (epoch // config.lr_step_epochs)


@torch.no_grad()
def _evaluate(model, x, y, batch_size: int) -> tuple[float, float]:
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for s in range(0, x.shape[0], batch_size):
        out = model(x[s : s + batch_size])
        loss += float(torch.nn.functional.cross_entropy(out, y[s : s + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[s : s + batch_size]).sum())
    model.train(was)
    return loss / x.shape[0], correct / x.shape[0]


def _load_mask_run(config: TrainConfig, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list, str]:
    """Weights, mechanisms and label of the run named by ``mask_run``; ValueError naming the file when a
    file is malformed, of another run, or has other parameters (``model.pt`` is read with
    ``weights_only=True``: nothing in it can execute)."""
    from simulations.common.results import read_json

    assert config.mask_run is not None  # the caller reads a mask run only when one is named
    folder = Path(config.mask_run)
    if not folder.is_dir():
        raise FileNotFoundError(f"mask_run folder not found: {str(folder)!r}")
    earlier = read_json(folder / "config.json", expect=dict)
    for key in ("dataset", "model", "width", "depth", "data_seed", "n_train", "n_val", "n_public"):
        default = 0 if key in ("n_val", "n_public") else None  # folders written before the splits existed
        if earlier.get(key, default) != _jsonable(getattr(config, key)):
            raise ValueError(
                f"mask_run {str(folder)!r} has {key}={earlier.get(key)!r}, this run has {getattr(config, key)!r}"
            )
    metrics = read_json(folder / "metrics.json", expect=dict)
    privacy = metrics.get("privacy")
    if not isinstance(privacy, dict) or not isinstance(privacy.get("label"), str):
        raise ValueError(f"{str(folder / 'metrics.json')!r} has no privacy label")
    try:
        mechs = [PoissonGaussianMechanism(**m) for m in privacy["mechanisms"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(folder / 'metrics.json')!r} has malformed privacy mechanisms ({exc})") from None
    state_path = folder / "model.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"mask_run has no model.pt: {str(state_path)!r}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file can fail in many ways; none of them is a crash
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ValueError(f"{str(state_path)!r} is not a saved state dict ({type(exc).__name__}: {first})") from None
    params = trainable_parameters(model)
    if not isinstance(state, dict) or not set(params) <= set(state):
        raise ValueError(f"{str(state_path)!r} holds other parameters than this run's model")
    for k, p in params.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != p.shape:
            raise ValueError(f"{str(state_path)!r}: parameter {k!r} has another shape than this run's")
        if not torch.isfinite(state[k]).all():
            raise ValueError(f"{str(state_path)!r}: parameter {k!r} is not finite")
    label = privacy["label"]
    if earlier.get("train_split", "train") == "public":
        label = PUBLIC_LABEL
    return state, mechs, label


PUBLIC_LABEL = "public split only (no private example used)"


def _jsonable(v: Any) -> Any:
    from simulations.common.results import to_jsonable

    return to_jsonable(v)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resume_key(config: TrainConfig) -> dict[str, Any]:
    """The config fields a checkpoint must agree on (``epochs`` may grow: :func:`_load_checkpoint`)."""
    skip = {"out", "resume", "quiet", "checkpoint_every"}
    return {f.name: _jsonable(getattr(config, f.name)) for f in fields(config) if f.name not in skip}


# ------------------------------------------------------------------------------------------------
# training: a run is a Setup (fixed before the first step) and a State (what a checkpoint holds)


@dataclass
class Setup:
    """What one run is made of before its first step (fixed for the whole run)."""

    device: torch.device
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    steps_per_epoch: int
    sample_rate: float
    total_steps: int
    model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    masks: dict[str, torch.Tensor] | None
    prior: list[PoissonGaussianMechanism]
    reasons: list[str]

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


@dataclass
class State:
    """Everything that changes during a run and is saved in a checkpoint."""

    sigma: float
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]
    hessian_rng: np.random.Generator
    history: list[dict] = field(default_factory=list)
    step_log: dict[str, list[float]] = field(default_factory=dict)
    epoch: int = 0
    global_step: int = 0
    dpsgd_steps: int = 0
    other_steps: dict[str, int] = field(default_factory=dict)
    curve: dict[str, list] = field(default_factory=dict)


def _masks(config: TrainConfig, model: torch.nn.Module, params: dict, device: torch.device):
    """(masks, prior mechanisms, non-private reasons) of the run's pruning mask (None without pruning)."""
    if config.sparsity <= 0:
        return None, [], []
    prior: list[PoissonGaussianMechanism] = []
    reasons: list[str] = []
    if config.mask_source == "random":
        seed = int(np.random.SeedSequence([config.seed, 7331]).generate_state(1)[0] >> 1)
        raw = random_masks(
            {k: v.detach() for k, v in params.items()}, sparsity=config.sparsity, seed=seed, scope=config.prune_scope
        )
        masks = {k: m.to(device) for k, m in raw.items()}
        apply_masks(model, masks)
        return masks, prior, reasons
    if config.mask_source == "init":
        source = {k: v.detach() for k, v in params.items()}
    else:
        state, mechs, label = _load_mask_run(config, model)
        source = {k: state[k] for k in params}
        if config.mask_source == "private":
            if label != "private":
                raise ValueError(
                    f"mask_source='private' needs a private mask_run, but {config.mask_run!r} is labelled {label!r}"
                )
            prior = mechs
        elif config.mask_source == "public":
            if label != PUBLIC_LABEL:
                raise ValueError(
                    f"mask_source='public' needs a mask_run trained on the public split (train_split='public'), "
                    f"but {config.mask_run!r} is labelled {label!r}"
                )
        else:  # oracle: whatever the mask run was, this run is never labelled private
            reasons.append("oracle mask from non-private training")
    masks = {
        k: m.to(device) for k, m in magnitude_masks(source, sparsity=config.sparsity, scope=config.prune_scope).items()
    }
    apply_masks(model, masks)
    return masks, prior, reasons


def parameter_count(config: TrainConfig, input_shape: tuple[int, ...], num_classes: int) -> int:
    """d of ``config``'s network, from the models' own counting functions without building it.

    The count is affine in the depth beyond the first layers (every further hidden layer / block is
    the same), so a huge depth is extrapolated exactly from two small ones instead of looped over.
    """
    from simulations.nn import models

    def count(depth: int) -> int:
        if config.model == "mlp":
            return models.mlp_parameter_count(
                input_dim=math.prod(input_shape), num_classes=num_classes, width=config.width, depth=depth
            )
        if config.model == "cnn":
            return models.cnn_parameter_count(
                input_shape=input_shape, num_classes=num_classes, width=config.width, depth=depth
            )
        return models.wrn_parameter_count(
            in_channels=input_shape[0], num_classes=num_classes, widen=config.width, depth=depth
        )

    if config.model == "dpcnn":  # fixed architecture: width and depth unused
        return models.dpcnn_parameter_count(input_shape=input_shape, num_classes=num_classes)
    if config.model in ("wrn", "wrn_ws"):  # depth = 6n + 4: affine in n for n >= 1
        n = max((config.depth - 4) // 6, 1)
        a, b = count(10), count(16)
        return a + (n - 1) * (b - a)
    low = 2 if config.depth >= 2 else config.depth
    if config.depth <= 3:
        return count(config.depth)
    a, b = count(low), count(low + 1)
    return a + (config.depth - low) * (b - a)


@dataclass(frozen=True)
class TrainingCost:
    """Estimated peak memory (bytes) and work (operations) of one run, with what they are made of."""

    memory: float
    work: float
    memory_detail: str
    work_detail: str


def check_training_resources(config: TrainConfig) -> None:
    """Refuse a run whose arrays exceed the memory limit or whose steps exceed the work limit, before
    anything is loaded (``simulations.common.resources``; the data's own check is in ``load_dataset``).
    The estimate is :func:`training_cost`."""
    from simulations.common.resources import check_memory, check_work

    cost = training_cost(config)
    check_memory("the training run", cost.memory, detail=cost.memory_detail)
    check_work("the training run", cost.work, detail=cost.work_detail)


def training_cost(config: TrainConfig) -> TrainingCost:
    """The memory and work estimate of ``config`` from its fields alone (nothing is loaded or built);
    ``ValueError`` for a model the dataset's shape cannot take.

    Memory (float32): parameters ×6 (weights, gradient, momentum, noise, clipped and unclipped sums),
    the per-sample gradients of one chunk (vmap / loop: min(256, B_max) × d; book-keeping: none), the
    activations of a Poisson batch B_max = B + 6√B + 10 and of an evaluation batch, the data on the
    device (train, validation, public and test splits), the Hessian's Lanczos vectors (dense d × d
    float64 when d <= 300 or k >= d − 1) and the per-sample gradients of the layer diagnostics.
    Work: epochs × steps × B_max × d × 6 (per-sample forward and backward) × the spatial size for
    convolutions, plus an evaluation of the train, test and validation splits per epoch, the curve
    points (evaluation, per-layer gradients) and the Hessian products.
    """
    from simulations.common.resources import array_bytes
    from simulations.nn import models
    from simulations.nn.data import dataset_shape

    shape, classes, n_tr_default, n_te_default = dataset_shape(config.dataset)
    if config.model in ("wrn", "wrn_ws", "dpcnn") and len(shape) != 3:
        raise ValueError(f"{config.model} needs 2-D images (C, H, W); {config.dataset} has input shape {shape}")
    if config.model == "dpcnn" and min(shape[1:]) < models.DPCNN_MIN_SIZE:
        raise ValueError(f"dpcnn needs images of at least {models.DPCNN_MIN_SIZE} pixels a side, got {shape}")
    if config.model in ("wrn", "wrn_ws") and (config.depth < 10 or (config.depth - 4) % 6):
        raise ValueError(f"{config.model} depth must be 6n + 4 (10, 16, 22, ...), got {config.depth}")
    if config.model == "cnn" and config.depth < 1:
        raise ValueError(f"cnn depth must be >= 1, got {config.depth}")
    if config.augment != "none" and len(shape) != 3:
        raise ValueError(f"augment needs image inputs (C, H, W); {config.dataset} has input shape {shape}")
    n_te = config.n_test or n_te_default
    n_pool = (config.n_train or n_tr_default) + config.n_val + config.n_public  # every split of the pool
    n_tr = config.n_public if config.train_split == "public" else (config.n_train or n_tr_default)
    features = math.prod(shape)
    d = float(parameter_count(config, shape, classes))
    spatial = float(math.prod(shape[1:])) if len(shape) > 1 else float(shape[0])
    if config.model == "mlp":
        acts = float(features) + config.depth * float(config.width) + classes
        flops_per_example = d
    elif config.model == "cnn":
        acts = float(features) + config.depth * float(config.width) * spatial
        flops_per_example = d * spatial
    elif config.model == "dpcnn":  # 16 channels at a quarter of the pixels, then 32 at a sixteenth (bounded above)
        acts = float(features) + 16.0 * spatial / 4 * 2 + 32.0 * spatial / 16 * 2
        flops_per_example = d * spatial / 16
    else:
        acts = float(features) + config.depth * 64.0 * config.width * spatial
        flops_per_example = d * spatial
    k_aug = config.augment_multiplicity if config.augment != "none" else 1
    b_max = (config.batch_size + 6 * math.sqrt(config.batch_size) + 10) * k_aug  # rows of a step
    materialised = config.model != "mlp" or config.grad_method in ("vmap", "loop")
    per_sample = array_bytes(min(256, b_max), d, itemsize=4) * 2 if materialised else 0.0
    # layer diagnostics: per-sample gradients of the diagnostic examples (float32, masked copy, float64 squares)
    layer_grads = (
        array_bytes(min(config.diagnostic_samples, n_tr), d, itemsize=4) * 4 if config.layer_diagnostics else 0.0
    )
    dense_hessian = config.hessian_k > 0 and (d <= 300 or config.hessian_k >= d - 1)
    hessian = array_bytes(d, d) * 2 if dense_hessian else array_bytes(config.hessian_k + 3, d) * 3
    hessian = hessian if config.hessian_k > 0 else 0.0
    total = (
        array_bytes(d, itemsize=4) * 6
        + per_sample
        + array_bytes(b_max, acts, itemsize=4) * 4
        + array_bytes(min(config.eval_batch_size, max(n_tr, n_te)), acts, itemsize=4) * 2
        + array_bytes(n_pool + n_te, features, itemsize=4)
        + hessian
        + layer_grads
    )
    steps = float(config.epochs) * max(1.0, round(n_tr / config.batch_size))
    evaluated = float(n_tr + n_te + config.n_val)  # every epoch: the training, test and validation splits
    ops = steps * b_max * flops_per_example * 6 + config.epochs * evaluated * flops_per_example * 2
    points = float(len(config.curve_steps))
    ops += points * min(config.curve_samples, n_te) * flops_per_example * 2
    if config.layer_diagnostics:
        ops += points * min(config.diagnostic_samples, n_tr) * flops_per_example * 6
    if config.hessian_k > 0:
        samples = min(config.hessian_samples, n_tr)
        ops += (config.epochs + 1) * (3.0 * config.hessian_k + 20) * samples * flops_per_example * 4
    return TrainingCost(
        memory=total,
        work=ops,
        memory_detail=f"d = {d:.3g} parameters, B = {config.batch_size}, {n_tr} + {n_te} examples × {features} features",
        work_detail=f"{steps:g} steps × batch {config.batch_size} × d {d:.3g}",
    )


def make_setup(config: TrainConfig) -> Setup:
    """Load the data, build the (masked) model and fix the sampling rate and step counts of ``config``."""
    from simulations.nn.data import load_dataset
    from simulations.nn.models import build_model

    device = _device(config.device)
    ds = load_dataset(
        config.dataset,
        root=config.data_root,
        seed=config.data_seed,
        n_train=config.n_train,
        n_test=config.n_test,
        n_val=config.n_val,
        n_public=config.n_public,
    )
    x_train, y_train = (ds.x_public, ds.y_public) if config.train_split == "public" else (ds.x_train, ds.y_train)
    assert x_train is not None and y_train is not None  # load_dataset carves the public split when n_public > 0
    n = int(x_train.shape[0])
    if config.batch_size > n:
        raise ValueError(
            f"batch_size must be <= the {n} training examples (sample rate q = B/n <= 1), got {config.batch_size}"
        )
    spe = steps_per_epoch(n=n, batch_size=config.batch_size)
    if config.burst_step is not None and config.burst_step >= spe * config.epochs:
        raise ValueError(
            f"burst_step must be < the run's {spe * config.epochs} steps ({config.epochs} epochs × {spe}), "
            f"got {config.burst_step}"
        )
    late = [t for t in config.curve_steps if t > spe * config.epochs]
    if late:
        raise ValueError(
            f"curve_steps entries must be <= the run's {spe * config.epochs} steps ({config.epochs} epochs × {spe}), "
            f"got {late[0]}"
        )
    model = build_model(
        config.model,
        input_shape=ds.input_shape,
        num_classes=ds.num_classes,
        width=config.width,
        depth=config.depth,
        seed=config.seed,
    ).to(device)
    params = trainable_parameters(model)
    masks, prior, reasons = _masks(config, model, params, device)
    if config.init_state is not None:  # after the masks: an init mask stays a function of the init only
        load_initial_state(model, config.init_state)
        if masks is not None:
            apply_masks(model, masks)
        reasons = [*reasons, f"starts from {config.init_state!r}, whose training is not accounted"]
    return Setup(
        device=device,
        x_train=x_train.to(device),
        y_train=y_train.to(device),
        x_test=ds.x_test.to(device),
        y_test=ds.y_test.to(device),
        x_val=None if not config.n_val or ds.x_val is None else ds.x_val.to(device),
        y_val=None if not config.n_val or ds.y_val is None else ds.y_val.to(device),
        steps_per_epoch=spe,
        sample_rate=config.batch_size / n,
        total_steps=spe * config.epochs,
        model=model,
        params=params,
        masks=masks,
        prior=prior,
        reasons=reasons,
    )


def load_initial_state(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load the state dict ``path`` (a ``model.pt`` written by :func:`run_train`) into ``model``.

    Read with ``torch.load(weights_only=True)`` (tensors only, no code). Raises ``FileNotFoundError``
    naming a missing file and ``ValueError`` naming the first key or shape that differs from
    ``model``'s own state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"init_state not found: {str(file)!r}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(own):
        keys = set(state) if isinstance(state, dict) else set()
        diff = sorted(keys ^ set(own))[:3]
        raise ValueError(f"init_state {str(file)!r} does not fit the model: keys differ ({diff})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"init_state {str(file)!r} does not fit the model: {k} has shape {tuple(state[k].shape)}, "
                f"the model {tuple(v.shape)}"
            )
    model.load_state_dict(state)


def _noise_multiplier(config: TrainConfig, setup: Setup) -> float:
    """σ: calibrated to ``target_epsilon`` (RDP, conservative, composed with a private mask) or given."""
    if config.target_epsilon is None:
        return config.sigma_given
    dp_epochs = config.dpsgd_epochs
    steps = setup.total_steps if (dp_epochs == 0 or config.switch_epoch is None) else dp_epochs * setup.steps_per_epoch
    return noise_multiplier_for_epsilon(
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        sample_rate=setup.sample_rate,
        steps=steps,
        accountant="rdp",
        prior_mechanisms=setup.prior,
    )


def new_state(config: TrainConfig, setup: Setup) -> State:
    """The state before the first step: σ, the optimizer and one seeded generator per random stream."""
    sigma = _noise_multiplier(config, setup)
    if config.target_epsilon is not None:
        try:
            check_noise_multiplier(sigma, config.accountants)
        except ValueError as exc:
            raise ValueError(
                f"target_epsilon {config.target_epsilon:g} calibrates sigma = {sigma:.3g}: {exc}"
            ) from None
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=config.lr, momentum=config.momentum)
    seeds = _seeds(config.seed)
    gens = {
        "sampler": torch.Generator().manual_seed(seeds["sampler"]),
        "noise": torch.Generator(device=setup.device).manual_seed(seeds["noise"]),
        "burst": torch.Generator(device=setup.device).manual_seed(seeds["burst"]),
    }
    if config.augment != "none":  # its own stream: the other streams stay those of the run without it
        gens["augment"] = torch.Generator().manual_seed(seeds["augment"])
    return State(sigma=sigma, optimizer=optimizer, generators=gens, hessian_rng=np.random.default_rng(seeds["hessian"]))


CHECKPOINT_FORMAT = "dpbasin-train-checkpoint"
CHECKPOINT_VERSION = 2


def _plain(obj: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars and tuples converted; floats kept as floats,
    NaN included): what ``torch.load(weights_only=True)`` reads back without admitting any class."""
    if isinstance(obj, dict):
        return {(int(k) if isinstance(k, (int, np.integer)) else str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if obj is None or isinstance(obj, (str, torch.Tensor)):
        return obj
    raise TypeError(f"checkpoint entries must be plain data, got {type(obj).__name__}")


def _save_checkpoint(config: TrainConfig, setup: Setup, state: State, path: Path) -> None:
    """Write the checkpoint atomically: tensors and plain data only (the RNG states as uint8 tensors and
    a plain dict), so that :func:`_load_checkpoint` can read it with ``weights_only=True``."""
    _atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "key": _plain(_resume_key(config)),
            "epochs": config.epochs,
            "model": {k: v.detach().cpu() for k, v in setup.model.state_dict().items()},
            "optimizer": _plain(state.optimizer.state_dict()),
            "generators": {k: g.get_state() for k, g in state.generators.items()},
            "hessian_rng": _plain(state.hessian_rng.bit_generator.state),
            "history": _plain(state.history),
            "step_log": _plain(state.step_log),
            "epoch": state.epoch,
            "global_step": state.global_step,
            "dpsgd_steps": state.dpsgd_steps,
            "other_steps": _plain(state.other_steps),
            "sigma": float(state.sigma),
            "curve": _plain(state.curve),
            "masks": None if setup.masks is None else {k: v.cpu() for k, v in setup.masks.items()},
        },
        path,
    )


def _bad_checkpoint(path: Path, what: str) -> ValueError:
    return ValueError(f"checkpoint {str(path)!r} {what}; delete it or start without --resume")


def _extendable(config: TrainConfig) -> str | None:
    """Why a run with more epochs than its checkpoint would differ in its first epochs (None: it would not)."""
    if config.lr_schedule == "cosine":
        return "the cosine schedule depends on the total number of epochs"
    if config.target_epsilon is not None:
        return "sigma calibrated to target_epsilon depends on the total number of epochs"
    return None


def _load_checkpoint(config: TrainConfig, setup: Setup, state: State, path: Path) -> None:
    """Restore ``state`` (and the model, masks) from ``path``; ValueError naming the file if it is not one
    of this run's checkpoints. Read with ``torch.load(weights_only=True)``: nothing in it can execute."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file can fail in many ways; none of them is a crash
        raise _bad_checkpoint(
            path,
            f"cannot be read as a training checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise _bad_checkpoint(path, "is not a dpbasin training checkpoint")
    if saved.get("version") != CHECKPOINT_VERSION:
        raise _bad_checkpoint(path, f"has format version {saved.get('version')!r}, expected {CHECKPOINT_VERSION}")
    key, want = saved.get("key"), _plain(_resume_key(config))
    if not isinstance(key, dict):
        raise _bad_checkpoint(path, "has no config key")
    diff = sorted(k for k in set(key) | set(want) if k != "epochs" and key.get(k) != want.get(k))
    if diff:
        raise ValueError(f"checkpoint {str(path)!r} belongs to a different config (differs in {diff[:4]})")
    done = saved.get("epoch")
    if not isinstance(done, int) or done < 0:
        raise _bad_checkpoint(path, f"has no valid epoch count ({done!r})")
    if done > config.epochs:
        raise ValueError(f"checkpoint {str(path)!r} holds {done} epochs, more than epochs={config.epochs}")
    if key.get("epochs") != want.get("epochs") and _extendable(config) is not None:
        raise ValueError(
            f"checkpoint {str(path)!r} was written for epochs={key.get('epochs')}; it cannot be extended to "
            f"{config.epochs} because {_extendable(config)}"
        )
    model_state = saved.get("model")
    current = setup.model.state_dict()
    if not isinstance(model_state, dict) or set(model_state) != set(current):
        raise _bad_checkpoint(path, "holds other model parameters than this run's")
    for k, v in current.items():
        if not isinstance(model_state[k], torch.Tensor) or model_state[k].shape != v.shape:
            raise _bad_checkpoint(path, f"holds parameter {k!r} of another shape")
        if model_state[k].is_floating_point() and not torch.isfinite(model_state[k]).all():
            raise _bad_checkpoint(path, f"holds non-finite values in parameter {k!r}")
    gens = saved.get("generators")
    if not isinstance(gens, dict) or set(gens) != set(state.generators):
        raise _bad_checkpoint(path, "holds other random streams than this run's")
    for k, g in state.generators.items():
        ref = g.get_state()
        if not isinstance(gens[k], torch.Tensor) or gens[k].dtype != ref.dtype or gens[k].shape != ref.shape:
            raise _bad_checkpoint(path, f"holds a malformed state of the {k!r} random stream")
    masks = saved.get("masks")
    if setup.masks is not None:
        if not isinstance(masks, dict) or set(masks) != set(setup.masks):
            raise _bad_checkpoint(path, "holds other pruning masks than this run's")
        for k, m in setup.masks.items():
            if not isinstance(masks[k], torch.Tensor) or masks[k].shape != m.shape:
                raise _bad_checkpoint(path, f"holds a mask of another shape for {k!r}")
    history, step_log = saved.get("history"), saved.get("step_log")
    if not isinstance(history, list) or len(history) != done + 1 or not all(isinstance(r, dict) for r in history):
        raise _bad_checkpoint(path, "holds a history that does not match its epoch count")
    if not isinstance(step_log, dict) or not all(isinstance(v, list) for v in step_log.values()):
        raise _bad_checkpoint(path, "holds a malformed step log")
    counts = [saved.get(k) for k in ("global_step", "dpsgd_steps")]
    if not all(isinstance(c, int) and c >= 0 for c in counts) or not isinstance(saved.get("other_steps"), dict):
        raise _bad_checkpoint(path, "holds malformed step counts")
    sigma = saved.get("sigma")
    if not isinstance(sigma, float) or not math.isfinite(sigma) or sigma < 0:
        raise _bad_checkpoint(path, f"holds an invalid noise multiplier {sigma!r}")
    try:
        setup.model.load_state_dict(model_state)
        state.optimizer.load_state_dict(saved["optimizer"])
        for k, g in state.generators.items():
            g.set_state(gens[k])
        state.hessian_rng.bit_generator.state = saved["hessian_rng"]
    except Exception as exc:
        raise _bad_checkpoint(path, f"does not fit this run ({type(exc).__name__}: {str(exc)[:200]})") from None
    for group in state.optimizer.state.values():
        buf = group.get("momentum_buffer") if isinstance(group, dict) else None
        if buf is not None and not isinstance(buf, torch.Tensor):
            raise _bad_checkpoint(path, "holds a malformed optimizer state")
    params = list(setup.model.parameters())
    for p, st in zip(params, (state.optimizer.state.get(q, {}) for q in params)):
        buf = st.get("momentum_buffer")
        if buf is not None and buf.shape != p.shape:
            raise _bad_checkpoint(path, "holds an optimizer state of another shape")
    state.history, state.step_log = history, step_log
    steps, dpsgd_steps = (int(c) for c in counts if c is not None)  # checked above: two ints >= 0
    state.epoch, state.global_step = done, steps
    state.dpsgd_steps, state.other_steps, state.sigma = dpsgd_steps, saved["other_steps"], sigma
    curve = saved.get("curve", {})
    if not isinstance(curve, dict) or not all(isinstance(v, list) for v in curve.values()):
        raise _bad_checkpoint(path, "holds malformed step-resolution curves")
    state.curve = curve
    if setup.masks is not None:
        assert isinstance(masks, dict)  # checked above against the run's own masks
        setup.masks = {k: v.to(setup.device) for k, v in masks.items()}


def privacy_so_far(config: TrainConfig, setup: Setup, state: State, accountants: tuple[str, ...]):
    """(ε by accountant, mechanisms) of the steps taken so far; ε = ∞ once any step was not DP-SGD."""
    mechs = setup.prior + [
        PoissonGaussianMechanism(noise_multiplier=state.sigma, sample_rate=setup.sample_rate, steps=state.dpsgd_steps)
    ]
    if state.other_steps or setup.reasons or (state.sigma == 0 and state.dpsgd_steps > 0):
        return dict.fromkeys(accountants, math.inf), mechs
    return {a: epsilon(mechanisms=mechs, delta=config.delta, accountant=a) for a in accountants}, mechs


def _record(
    config: TrainConfig,
    setup: Setup,
    state: State,
    epoch: int,
    mode: str,
    lr: float,
    diag: list[dict],
    extra: dict,
    seconds: float,
) -> dict:
    """The history record after ``epoch`` epochs: losses, accuracies, ε so far, epoch diagnostics."""
    tr_loss, tr_acc = _evaluate(setup.model, setup.x_train, setup.y_train, config.eval_batch_size)
    te_loss, te_acc = _evaluate(setup.model, setup.x_test, setup.y_test, config.eval_batch_size)
    eps, _ = privacy_so_far(config, setup, state, ("rdp",))
    rec = {
        "epoch": epoch,
        "step": state.global_step,
        "mode": mode,
        "lr": lr,
        "train_loss": tr_loss,
        "train_acc": tr_acc,
        "test_loss": te_loss,
        "test_acc": te_acc,
        "epsilon_rdp": eps["rdp"],
        "seconds": seconds,
    }
    if setup.x_val is not None:
        rec["val_loss"], rec["val_acc"] = _evaluate(setup.model, setup.x_val, setup.y_val, config.eval_batch_size)
    rec.update(average_diagnostics(diag))
    bias = extra.pop("_bias", None)
    rec.update(extra)
    if config.hessian_k > 0:
        rec.update(
            _hessian_record(config, setup.model, setup.x_train, setup.y_train, setup.masks, state.hessian_rng, bias)
        )
    return rec


def _step(
    config: TrainConfig,
    setup: Setup,
    state: State,
    mode: Mode,
    clip: float,
    nu: float,
    epoch: int,
    diag: list[dict],
    extra: dict,
) -> float:
    """One DP-SGD (or ablation) step on a Poisson batch; returns its learning rate."""
    lr = _lr_at(config, epoch, state.global_step, setup.total_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if state.global_step in config.curve_steps:
        _curve_point(config, setup, state, clip, nu)
    if config.burst_step is not None and state.global_step == config.burst_step and config.burst_scale > 0:
        extra["burst_norm"] = _burst(setup.model, setup.masks, config.burst_scale, state.generators["burst"])
    idx = poisson_batch(n=setup.n_train, sample_rate=setup.sample_rate, generator=state.generators["sampler"])
    idx = idx.to(setup.device)
    x, y, k_aug = setup.x_train[idx], setup.y_train[idx], 1
    if config.augment != "none":
        k_aug = config.augment_multiplicity
        flip = config.augment == "shift_flip"
        x = augment_batch(
            x, multiplicity=k_aug, shift=config.augment_shift, flip=flip, generator=state.generators["augment"]
        )
        y = y.repeat_interleave(k_aug)
    pg = private_gradient(
        setup.model,
        x,
        y,
        clip_norm=clip,
        noise_std=nu,
        expected_batch_size=config.batch_size,
        generator=state.generators["noise"],
        masks=setup.masks,
        method=config.grad_method,
        keep_sums=config.diagnostics == "full",
        clip_rule=config.clip_rule if math.isfinite(clip) else "flat",
        multiplicity=k_aug,
    )
    if config.diagnostics != "none":
        d = step_diagnostics(pg, clip_norm=config.clip_norm)
        if config.diagnostics == "full":
            d.update(bias_diagnostics(pg))
            if pg.batch_size and pg.clipped_sum is not None and pg.unclipped_sum is not None:
                extra["_bias"] = {k: (pg.clipped_sum[k] - pg.unclipped_sum[k]) / pg.batch_size for k in pg.clipped_sum}
        diag.append(d)
        for k, v in d.items():
            state.step_log.setdefault(k, []).append(v)
    for k, p in setup.params.items():
        p.grad = pg.grads[k]
    state.optimizer.step()
    if setup.masks is not None:
        apply_masks(setup.model, setup.masks)
    state.global_step += 1
    if mode is Mode.DPSGD:
        state.dpsgd_steps += 1
    else:
        state.other_steps[mode.value] = state.other_steps.get(mode.value, 0) + 1
    return lr


def train_epoch(config: TrainConfig, setup: Setup, state: State, epoch: int) -> dict:
    """Run (0-based) ``epoch``: its steps_per_epoch steps in the epoch's mode; return its history record."""
    t0 = time.perf_counter()
    mode = config.mode_at(epoch)
    opt_rec = Optimizer(
        lr=config.lr,
        batch_size=config.batch_size,
        clip_norm=config.clip_norm,
        noise_multiplier=state.sigma,
        mode=mode,
        ref_clip_norm=config.ref_clip_norm,
    )
    clip, nu = opt_rec.effective_clip_norm, opt_rec.noise_std
    diag: list[dict] = []
    extra: dict[str, Any] = {}
    lr = config.lr
    for _ in range(setup.steps_per_epoch):
        lr = _step(config, setup, state, mode, clip, nu, epoch, diag, extra)
    state.optimizer.zero_grad(set_to_none=True)
    if epoch + 1 == config.epochs and setup.total_steps in config.curve_steps:
        _curve_point(config, setup, state, clip, nu)
    return _record(config, setup, state, epoch + 1, mode.value, lr, diag, extra, time.perf_counter() - t0)


def _curve_point(config: TrainConfig, setup: Setup, state: State, clip: float, nu: float) -> None:
    """Record the test loss/accuracy on the curve subsample (and per-layer diagnostics) now."""
    if state.curve.get("step") and state.curve["step"][-1] == state.global_step:
        return  # already recorded after the last step of the run this one extends (resume)
    m = min(config.curve_samples, int(setup.x_test.shape[0]))
    loss, acc = _evaluate(setup.model, setup.x_test[:m], setup.y_test[:m], config.eval_batch_size)
    for key, value in (("step", state.global_step), ("test_loss", loss), ("test_acc", acc)):
        state.curve.setdefault(key, []).append(value)
    if config.layer_diagnostics:
        from simulations.nn.diagnostics import layer_diagnostics

        k = min(config.diagnostic_samples, setup.n_train)
        rec = layer_diagnostics(
            setup.model,
            setup.x_train[:k],
            setup.y_train[:k],
            clip_norm=config.clip_norm if math.isinf(clip) else clip,
            noise_std=nu,
            expected_batch_size=config.batch_size,
            masks=setup.masks,
            clip_rule=config.clip_rule if math.isfinite(clip) else "flat",
        )
        state.curve.setdefault("layers", []).append({"step": state.global_step, **rec})


def _result(config: TrainConfig, setup: Setup, state: State) -> dict:
    """The JSON-able result of a finished run (module docstring)."""
    eps, mechs = privacy_so_far(config, setup, state, config.accountants)
    reasons = list(setup.reasons)
    if state.other_steps:
        reasons.append("non-DP steps: " + ", ".join(f"{v} {k}" for k, v in sorted(state.other_steps.items())))
    if state.sigma == 0 and state.dpsgd_steps > 0:
        reasons.append("noise_multiplier = 0")
    label = "private" if not reasons else "not private: " + "; ".join(reasons)
    if config.train_split == "public" and not setup.reasons:
        label = PUBLIC_LABEL + ("" if not reasons else " [" + "; ".join(reasons) + "]")
    masks, params = setup.masks, setup.params
    kept = int(sum(int(masks[k].sum()) if masks is not None else p.numel() for k, p in params.items()))
    return {
        "history": state.history,
        "steps": state.step_log,
        "curve": state.curve,
        "privacy": {
            "label": label,
            "private": not reasons,
            "noise_multiplier": state.sigma,
            "delta": config.delta,
            "sample_rate": setup.sample_rate,
            "mechanisms": [asdict(m) for m in mechs],
            **{f"epsilon_{a}": e for a, e in eps.items()},
            "mask_source": config.mask_source if masks is not None else None,
        },
        "parameters": int(sum(p.numel() for p in params.values())),
        "kept_parameters": kept,
        "steps_per_epoch": setup.steps_per_epoch,
        "total_steps": state.global_step,
        "device": str(setup.device),
    }


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite (reported as one line, exit status 2; no result is written)."""


DIVERGED_FACTOR = 100.0  # a mean training loss this many times its initial value: the run has blown up


def _check_finite_record(config: TrainConfig, setup: Setup, rec: dict, initial: dict | None = None) -> None:
    """NaN guard: refuse to continue (or to label anything private) once the run has diverged — a loss
    or weight that is not finite, or a mean training loss above 100 × its value before training (for
    cross-entropy ≈ 100 ln C nats: logits blown far past anything a trained network produces)."""
    bad = [k for k in ("train_loss", "test_loss") if not math.isfinite(rec[k])]
    ceiling = DIVERGED_FACTOR * max(float(initial["train_loss"]), 1.0) if initial is not None else math.inf
    if not bad and rec["train_loss"] <= ceiling and all(torch.isfinite(p).all() for p in setup.params.values()):
        return
    if bad:
        what = f"{bad[0]} is {rec[bad[0]]}"
    elif rec["train_loss"] > ceiling and initial is not None:
        what = (
            f"train_loss {rec['train_loss']:.3g} is over {DIVERGED_FACTOR:g}× its initial {initial['train_loss']:.3g}"
        )
    else:
        what = "the weights are not finite"
    raise TrainingDiverged(
        f"training diverged by epoch {rec['epoch']} ({what}; mode {rec['mode']}, lr {config.lr:g}, "
        f"clip_norm {config.clip_norm:g}); lower --lr (or the noise / burst scale)"
    )


def _resume(config: TrainConfig, setup: Setup, state: State, ckpt: Path | None) -> int:
    """Load the checkpoint if ``config.resume`` asks for it; print what was reused; return the epochs reused."""
    if not config.resume or ckpt is None:
        return 0
    if ckpt.exists() and not ckpt.is_file():
        raise ValueError(f"checkpoint path {str(ckpt)!r} exists and is not a file")
    if not ckpt.is_file():
        note = f"resume: no checkpoint at {str(ckpt)!r}; training from scratch"
    else:
        _load_checkpoint(config, setup, state, ckpt)
        if state.epoch == config.epochs:
            note = f"resume: all {state.epoch} epochs reused from {str(ckpt)!r}; nothing left to train"
        else:
            note = (
                f"resume: reused epochs 1-{state.epoch} from {str(ckpt)!r}; training epochs "
                f"{state.epoch + 1}-{config.epochs}"
            )
    if not config.quiet:
        print(note, flush=True)
    return state.epoch


def train(
    config: TrainConfig, *, progress: Callable[[int, dict], None] | None = None, return_model: bool = False
) -> dict | tuple[dict, torch.nn.Module]:
    """Run ``config``; return the result dict of the module docstring (and the model if asked).

    ``progress(epoch, record)`` is called after each epoch's record (and checkpoint) is complete.
    Runs with ``config.threads`` torch threads (restored after). Raises :class:`TrainingDiverged`
    (a ``ValueError``) as soon as a loss or weight is not finite, ``ResourceError`` before loading
    anything if the run cannot fit (:func:`check_training_resources`).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    from simulations.common.resources import torch_threads

    check_training_resources(config)
    with torch_threads(config.threads):
        return _train(config, progress, return_model)


def _train(config: TrainConfig, progress, return_model: bool):
    setup = make_setup(config)
    state = new_state(config, setup)
    ckpt = checkpoint_path(config)
    reused = _resume(config, setup, state, ckpt)
    fresh_checkpoint = ckpt is not None and not ckpt.exists()
    try:
        return _train_epochs(config, setup, state, ckpt, reused, progress, return_model)
    except TrainingDiverged:
        if fresh_checkpoint and ckpt is not None:  # a checkpoint on the way to a divergence is of no use
            ckpt.unlink(missing_ok=True)
        raise


def _train_epochs(config: TrainConfig, setup: Setup, state: State, ckpt, reused: int, progress, return_model: bool):
    if not state.history:
        lr0 = _lr_at(config, 0, 0, setup.total_steps)
        state.history.append(_record(config, setup, state, 0, config.mode_at(0).value, lr0, [], {}, 0.0))
        _check_finite_record(config, setup, state.history[0])
    for epoch in range(state.epoch, config.epochs):
        rec = train_epoch(config, setup, state, epoch)
        _check_finite_record(config, setup, rec, state.history[0])
        state.history.append(rec)
        state.epoch = done = epoch + 1
        if (
            ckpt is not None
            and config.checkpoint_every
            and (done % config.checkpoint_every == 0 or done == config.epochs)
        ):
            _save_checkpoint(config, setup, state, ckpt)
        if progress is not None:
            progress(done, rec)
        elif not config.quiet:
            print(
                f"epoch {done}/{config.epochs} mode={rec['mode']} train_acc={rec['train_acc']:.4f} "
                f"test_acc={rec['test_acc']:.4f} eps_rdp={rec['epsilon_rdp']:.3f} ({rec['seconds']:.1f}s)",
                flush=True,
            )
    result = _result(config, setup, state)
    result["resumed_epochs"] = reused
    result["threads"] = torch.get_num_threads()
    if return_model:
        result["_masks"] = None if setup.masks is None else {k: v.detach().cpu() for k, v in setup.masks.items()}
        return result, setup.model
    return result


def _burst(model, masks, scale: float, generator: torch.Generator) -> float:
    """w ← w + scale·m⊙ξ', ξ' ~ N(0, I) from its own stream; returns the displacement norm."""
    sq = 0.0
    with torch.no_grad():
        for k, p in trainable_parameters(model).items():
            xi = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) * scale
            if masks is not None and k in masks:
                xi = xi * masks[k]
            p.add_(xi)
            sq += float(xi.double().pow(2).sum())
    return math.sqrt(sq)


def _hessian_record(config, model, x, y, masks, rng, bias) -> dict:
    from simulations.nn.hessian import (
        effective_rank,
        flatten,
        make_hvp,
        parameter_dim,
        subspace_fraction,
        top_eigenpairs,
    )

    m = min(config.hessian_samples, x.shape[0])
    hvp = make_hvp(model, x[:m], y[:m], masks=masks)
    dim = parameter_dim(model)
    k = min(config.hessian_k, dim)
    vals, vecs = top_eigenpairs(hvp, dim=dim, k=k, seed=int(rng.integers(2**31)), tol=1e-3)
    out = {"hessian_top": [float(v) for v in vals], "hessian_eff_rank": effective_rank(vals)}
    if bias is not None:
        out["bias_in_top_k"] = subspace_fraction(flatten(bias), vecs)
    return out


def check_checkpoint_path(config: TrainConfig) -> Path | None:
    """Fail fast if the checkpoint beside ``config.out`` cannot be written (a folder in its place, …)."""
    ckpt = checkpoint_path(config)
    if ckpt is None:
        return None
    if ckpt.is_symlink() or (ckpt.exists() and not ckpt.is_file()):
        raise ValueError(f"checkpoint path {str(ckpt)!r} exists and is not a regular file")
    return ckpt


def run_train(config: TrainConfig) -> Path:
    """Train and write the result folder ``config.out`` (module docstring); returns its path.

    The final checkpoint ``<out>.checkpoint.pt`` is kept, so that ``--resume`` with more epochs
    extends a finished run (same numbers as one longer run, for schedules that do not depend on the
    total: not ``cosine``, not ``target_epsilon``).
    """
    from simulations.common.results import check_output_dir, result_folder, write_results

    if not config.out:
        raise ValueError("run_train needs out (the result folder), got out=None")
    check_output_dir(config.out)
    check_checkpoint_path(config)
    result, model = train(config, return_model=True)
    arrays = {k: np.asarray(v, dtype=float) for k, v in result["steps"].items()}
    metrics = {k: v for k, v in result.items() if k not in ("steps", "_masks")}
    with result_folder(config.out) as tmp:
        write_results(tmp, config=config, metrics=metrics, arrays=arrays or None)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        if result["_masks"] is not None:
            torch.save(result["_masks"], tmp / "masks.pt")
    if not config.quiet:
        last, priv = result["history"][-1], result["privacy"]
        eps = ", ".join(f"{k.removeprefix('epsilon_')} {v:.4g}" for k, v in priv.items() if k.startswith("epsilon_"))
        noised = any(Mode(m).noised for m in config.modes_used)
        sigma = f", sigma {priv['noise_multiplier']:.4g}" if noised else ""
        print(
            f"{config.out}: test_acc {last['test_acc']:.4f}, {priv['label']}{sigma}, epsilon at delta={config.delta:g}: {eps}"
        )
    return Path(config.out)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.nn train [options]``: bad input → one line on stderr, exit status 2.

    Without ``--out`` the result folder is ``results/nn/train`` (the library default of ``out`` is
    None: :func:`train` alone writes nothing).
    """
    from simulations.common.cli import run_main

    return run_main(
        TrainConfig,
        run_train,
        argv,
        prog="python -m simulations.nn train",
        description=__doc__.split("\n\n")[0],
        defaults={"out": "results/nn/train"},
    )
