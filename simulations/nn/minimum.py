"""A network's minimum w*, found once and cached: cosine SGD, an L-BFGS polish, the basin measurement.

One :class:`MinimumSpec` names a network (MLP width/depth on a dataset, optional magnitude mask)
and how its minimum is found:

1. **SGD** — ``simulations.nn.train.run_train`` with a cosine schedule to 0 (``epochs``, peak
   ``lr``, ``momentum``, expected batch ``batch_size``, Poisson sampling, cross-entropy), seeded by
   ``seed``. Sparse networks: ``mask="init"`` prunes by the initial magnitudes (data-independent);
   ``mask="wstar"`` prunes by the magnitudes of the *dense* network's SGD endpoint and starts from
   that endpoint masked (``mask_source="oracle"`` with ``init_state``: not private).
2. **Polish** — full-batch L-BFGS on L_μ(w) = (1/n) Σ_i ℓ_i(w) + (μ/2)‖m⊙w‖² from the SGD endpoint
   (``simulations.nn.warmstart.polish_minimum``, ``polish_iter`` iterations). Cross-entropy alone has
   no finite minimum on data the network can interpolate; μ = ``weight_decay`` > 0 gives one.
   **Plateau criterion** (recorded, :attr:`Minimum.converged`): the mean per-example gradient is small
   against the per-example gradients, ‖(1/n) Σ_i g̃_i(w*)‖ ≤ ``converged_ratio`` · median_i ‖g̃_i(w*)‖
   — the model's assumption mean_i g̃_i(w*) = 0, to the stated precision.
3. **Measurement** — ``simulations.nn.measure.measure_basin`` at w* on the whole training set.

**Cache.** Each step is keyed by the SHA-256 of its settings (and of the steps before it) and
stored under ``cache``: ``sgd-<key>/`` (a ``run_train`` result folder: ``config.json``,
``metrics.json``, ``model.pt``, ``masks.pt``), ``wstar-<key>.pt`` (state dict) with
``wstar-<key>.json`` (the polish record), ``measure-<key>.npz``. A step whose files exist is not
rerun; files are written atomically (temporary name, then ``os.replace``) and state dicts are read
with ``torch.load(weights_only=True)`` (tensors only, never code). Deleting the folder is always safe.

Nothing here is private: w* is fitted to the training data without noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dptheory.validate import check_int, check_nonnegative, check_positive
from simulations.nn.measure import BasinMeasurement, load_measurement, measure_basin

__all__ = ["MASKS", "Minimum", "MinimumSpec", "cache_key", "find_minimum", "measured_minimum"]

MASKS = ("dense", "init", "wstar")


def cache_key(obj: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``obj`` as sorted JSON (dataclasses as dicts)."""
    from simulations.common.results import to_jsonable

    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MinimumSpec:
    """One network and the recipe for its minimum (module docstring); validated on construction."""

    dataset: str = "mnist1d"
    n_train: int | None = None
    n_test: int | None = None
    width: int = 64
    depth: int = 2
    sparsity: float = 0.0
    mask: str = "dense"
    epochs: int = 40
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 128
    seed: int = 0
    weight_decay: float = 1e-3
    polish_iter: int = 500
    converged_ratio: float = 1e-2
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, minimum in (("width", 1), ("depth", 0), ("epochs", 1), ("batch_size", 1), ("seed", 0)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=minimum))
        object.__setattr__(self, "polish_iter", check_int("polish_iter", self.polish_iter, minimum=0))
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        check_positive("converged_ratio", self.converged_ratio)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}")
        if (self.sparsity > 0) != (self.mask != "dense"):
            raise ValueError(f"sparsity > 0 needs mask 'init' or 'wstar' (and 0 needs 'dense'), got {self.mask!r}")

    def dense(self) -> MinimumSpec:
        """The same network without pruning."""
        from dataclasses import replace

        return replace(self, sparsity=0.0, mask="dense")


@dataclass
class Minimum:
    """A found minimum: the network at w* (``model``), its ``masks`` (or None), the data and the record.

    ``info``: the SGD run's folder and final history record, the polish record (objective and
    gradient norm before and after, iterations) and, once measured, ``gradient_ratio`` =
    ‖mean_i g̃_i‖ / median_i ‖g̃_i‖ and ``converged`` (≤ ``converged_ratio``).
    """

    spec: MinimumSpec
    model: torch.nn.Module
    masks: dict[str, torch.Tensor] | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> bool | None:
        """The plateau criterion (module docstring); None before the measurement."""
        return self.info.get("converged")


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _sgd_config(spec: MinimumSpec, out: Path, dense_folder: Path | None) -> Any:
    from simulations.nn.train import TrainConfig

    extra: dict[str, Any] = {}
    if spec.mask == "init":
        extra = {"sparsity": spec.sparsity, "mask_source": "init"}
    elif spec.mask == "wstar":
        assert dense_folder is not None
        extra = {
            "sparsity": spec.sparsity,
            "mask_source": "oracle",
            "mask_run": str(dense_folder),
            "init_state": str(dense_folder / "model.pt"),
        }
    return TrainConfig(
        dataset=spec.dataset,
        n_train=spec.n_train,
        n_test=spec.n_test,
        model="mlp",
        width=spec.width,
        depth=spec.depth,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        momentum=spec.momentum,
        lr_schedule="cosine",
        mode="sgd",
        diagnostics="none",
        accountants=("rdp",),
        seed=spec.seed,
        device=spec.device,
        checkpoint_every=0,
        quiet=True,
        out=str(out),
        **extra,
    )


def _sgd_folder(spec: MinimumSpec, cache: Path) -> Path:
    """Run (or reuse) the cosine SGD run of ``spec``; returns its result folder."""
    from simulations.nn.train import run_train

    dense = _sgd_folder(spec.dense(), cache) if spec.mask == "wstar" else None
    probe = _sgd_config(spec, Path("-"), dense)
    key = cache_key({k: v for k, v in asdict(probe).items() if k not in ("out", "quiet")})
    folder = cache / f"sgd-{key}"
    if not (folder / "model.pt").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        threads = torch.get_num_threads()
        try:
            run_train(_sgd_config(spec, folder, dense))
        finally:  # writing a result folder imports numba, which resets torch's intra-op threads
            torch.set_num_threads(threads)
    return folder


def find_minimum(spec: MinimumSpec, *, cache: str | os.PathLike[str]) -> Minimum:
    """The network of ``spec`` at its polished minimum w* (module docstring), from the cache when there.

    Raises:
        ValueError: for an invalid spec (from :class:`MinimumSpec` or the training config).
    """
    from simulations.nn.data import load_dataset
    from simulations.nn.models import build_model
    from simulations.nn.train import load_initial_state
    from simulations.nn.warmstart import polish_minimum

    cache = Path(cache)
    folder = _sgd_folder(spec, cache)
    device = torch.device(spec.device)
    ds = load_dataset(spec.dataset, seed=0, n_train=spec.n_train, n_test=spec.n_test)
    model = build_model(
        "mlp",
        input_shape=ds.input_shape,
        num_classes=ds.num_classes,
        width=spec.width,
        depth=spec.depth,
        seed=spec.seed,
    )
    load_initial_state(model, folder / "model.pt")
    model = model.to(device)
    masks = None
    if (folder / "masks.pt").is_file():
        masks = {k: v.to(device) for k, v in torch.load(folder / "masks.pt", weights_only=True).items()}
    x_tr, y_tr = ds.x_train.to(device), ds.y_train.to(device)
    key = cache_key({"sgd": folder.name, "weight_decay": spec.weight_decay, "polish_iter": spec.polish_iter})
    state_path, info_path = cache / f"wstar-{key}.pt", cache / f"wstar-{key}.json"
    if state_path.is_file() and info_path.is_file():
        load_initial_state(model, state_path)
        polish = json.loads(info_path.read_text())
    else:
        polish = (
            polish_minimum(model, x_tr, y_tr, weight_decay=spec.weight_decay, masks=masks, max_iter=spec.polish_iter)
            if spec.polish_iter > 0
            else {"iterations": 0}
        )
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _atomic(state_path, lambda p: torch.save(state, p))
        _atomic(info_path, lambda p: p.write_text(json.dumps(polish, indent=2) + "\n"))
    history = json.loads((folder / "metrics.json").read_text())["history"]
    info = {
        "sgd_folder": str(folder),
        "sgd_final": {k: history[-1][k] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")},
        "polish": polish,
        "wstar_key": key,
    }
    return Minimum(
        spec=spec,
        model=model,
        masks=masks,
        x_train=x_tr,
        y_train=y_tr,
        x_test=ds.x_test.to(device),
        y_test=ds.y_test.to(device),
        info=info,
    )


def measured_minimum(
    spec: MinimumSpec,
    *,
    cache: str | os.PathLike[str],
    top_k: int = 16,
    top_steps: int | None = None,
    probes: int = 10,
    lanczos_steps: int = 100,
    flat_steps: int = 40,
    curvatures: bool = True,
    sketch: int = 0,
) -> tuple[Minimum, BasinMeasurement]:
    """:func:`find_minimum` and the :class:`~simulations.nn.measure.BasinMeasurement` at w* (cached).

    The measurement's seed is ``spec.seed``; ``info`` gains ``gradient_ratio`` and ``converged``.
    """
    cache = Path(cache)
    found = find_minimum(spec, cache=cache)
    settings: dict[str, Any] = {
        "top_k": top_k,
        "top_steps": top_steps,
        "probes": probes,
        "lanczos_steps": lanczos_steps,
        "flat_steps": flat_steps,
        "curvatures": curvatures,
        "sketch": sketch,
    }
    path = cache / f"measure-{cache_key({'wstar': found.info['wstar_key'], **settings})}.npz"
    if path.is_file():
        meas = load_measurement(path)
    else:
        meas = measure_basin(
            found.model,
            found.x_train,
            found.y_train,
            masks=found.masks,
            weight_decay=spec.weight_decay,
            seed=spec.seed,
            **settings,
        )
        _atomic(path, lambda p: _save_npz(meas, p))
    median = float(np.median(meas.norms))
    ratio = meas.mean_gradient_norm / median if median > 0 else math.inf
    found.info.update(gradient_ratio=ratio, converged=bool(ratio <= spec.converged_ratio), measure_file=str(path))
    return found, meas


def _save_npz(meas: BasinMeasurement, path: Path) -> None:
    with open(path, "wb") as fh:  # a file object: numpy must not append ".npz" to the temporary name
        meas.save(fh)
