"""Untrusted files never execute and never crash a reader: a pickle payload in a CIFAR-10 batch, in the
mnist1d cache, in a checkpoint given to --resume and in a mask run's model.pt never runs, and every
malformed file is one ValueError naming the file and what is wrong (a damaged cache is regenerated)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch

from simulations.common.results import read_json
from simulations.nn.data import SafeUnpickler, load_dataset, read_idx, safe_unpickle
from simulations.nn.train import TrainConfig, checkpoint_path, run_train, train

torch.set_num_threads(1)


class Payload:
    """Unpickling this would run code: it creates the file at ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _cifar(root, batches):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in batches.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else pickle.dumps(content))
    return folder


def _good_batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}


NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def test_the_payload_is_live(tmp_path):
    """The marker appears when the payload is unpickled by the standard unpickler (the test can fail)."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("where", ["data", "labels", "top"])
def test_cifar_batch_payload_never_runs(tmp_path, where):
    marker = tmp_path / "PWNED"
    batch = _good_batch()
    bad = Payload(marker) if where == "top" else {**batch, where.encode(): Payload(marker)}
    _cifar(tmp_path, {**{n: _good_batch() for n in NAMES}, "data_batch_3": bad})
    with pytest.raises(ValueError, match=r"data_batch_3.*(not allowed|not a CIFAR)") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_real_numpy_pickles(protocol):
    """What numpy writes under every protocol (``_reconstruct`` or ``_frombuffer``) is admitted."""
    batch = _good_batch()
    back = safe_unpickle(pickle.dumps(batch, protocol=protocol))
    assert np.array_equal(back[b"data"], batch[b"data"]) and back[b"labels"] == batch[b"labels"]


@pytest.mark.parametrize(
    "blob",
    [
        pickle.dumps(np.array([None, 1], dtype=object)),  # object arrays may hold anything
        pickle.dumps(os.system),  # a callable global
        pickle.dumps(ValueError("x")),  # any class
        pickle.dumps(np.float64(1.0)),  # numpy scalar reconstruction is not in the format
        b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00Q\x94.",  # a persistent id
    ],
)
def test_restricted_unpickler_refuses_everything_else(blob):
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(blob)
    assert issubclass(SafeUnpickler, pickle.Unpickler)


def test_restricted_unpickler_refuses_oversized_reconstruction():
    class Huge:  # names numpy's own reconstructor, with a 10¹²-element shape
        def __reduce__(self):
            from numpy._core.multiarray import _reconstruct

            return (_reconstruct, (np.ndarray, (10**12,), b"b"))

    with pytest.raises(pickle.UnpicklingError, match="shape"):
        safe_unpickle(pickle.dumps(Huge()))


@pytest.mark.parametrize(
    "content,match",
    [
        ({b"data": np.full((3, 3072), np.nan), b"labels": [0, 1, 2]}, "uint8"),
        ({b"data": np.zeros((3, 3072), dtype=np.uint8), b"labels": [None, 1, 2]}, "integers"),
        ({b"data": np.zeros((3, 3072), dtype=np.uint8), b"labels": ["a", "b", "c"]}, "integers"),
        ({b"data": np.zeros((3, 3072), dtype=np.uint8), b"labels": [0, 1, 12]}, "out of range"),
        ({b"data": np.zeros((0, 3072), dtype=np.uint8), b"labels": []}, "no images"),
        ({b"data": [1, 2, 3], b"labels": [0]}, "uint8"),
        ([1, 2, 3], "does not hold a dict"),
        (b"\x80\x04garbage", "not a CIFAR-10"),
        (b"", "not a CIFAR-10"),
    ],
)
def test_malformed_cifar_batches_are_one_line_naming_the_file(tmp_path, content, match):
    _cifar(tmp_path, {**{n: _good_batch() for n in NAMES}, "test_batch": content})
    with pytest.raises(ValueError, match=match) as info:
        load_dataset("cifar10", root=tmp_path)
    assert "test_batch" in str(info.value) and "\n" not in str(info.value)


def test_corrupt_gzip_and_empty_split_and_data_root_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    with pytest.raises(ValueError, match="cannot read idx file"):
        read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    # a gzip stream whose header declares more than the file holds, and a header declaring 4 GiB
    blob = bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + b"\x00" * 10
    (tmp_path / "short.gz").write_bytes(gzip.compress(blob))
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 2**16, 2**16))
    with pytest.raises(ValueError, match="more than an idx file holds"):
        read_idx(tmp_path / "huge")
    folder = tmp_path / "empty"
    folder.mkdir()

    def idx(name, array):
        array = np.asarray(array, dtype=np.uint8)
        (folder / name).write_bytes(
            bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
        )

    idx("train-images-idx3-ubyte", np.zeros((4, 28, 28)))
    idx("train-labels-idx1-ubyte", np.zeros(4))
    idx("t10k-images-idx3-ubyte", np.zeros((0, 28, 28)))
    idx("t10k-labels-idx1-ubyte", np.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        load_dataset("mnist", root=folder)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        load_dataset("mnist", root=tmp_path / "short.gz")


BASE = TrainConfig(
    dataset="teacher:k=2,d=8",
    n_train=60,
    n_test=30,
    width=4,
    depth=1,
    epochs=2,
    batch_size=6,
    noise_multiplier=1.0,
    accountants=("rdp",),
    quiet=True,
)


def test_checkpoint_payload_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = replace(BASE, out=str(tmp_path / "run"), resume=True)
    torch.save({"format": Payload(marker)}, checkpoint_path(cfg))
    with pytest.raises(ValueError, match="cannot be read as a training checkpoint") as info:
        train(cfg)
    assert "run.checkpoint.pt" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_mask_run_payload_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    first = run_train(replace(BASE, out=str(tmp_path / "dp")))
    torch.save(Payload(marker), first / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt") as info:
        train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(first)))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def _checkpoint(tmp_path):
    cfg = replace(BASE, out=str(tmp_path / "run"))
    run_train(cfg)
    return cfg, checkpoint_path(cfg), torch.load(checkpoint_path(cfg), weights_only=True)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: os.urandom(100), "cannot be read"),
        (lambda d: [1, 2], "not a dpbasin training checkpoint"),
        (lambda d: {**d, "format": "other"}, "not a dpbasin training checkpoint"),
        (lambda d: {**d, "version": 99}, "format version"),
        (lambda d: {**d, "key": {**d["key"], "lr": 5.0}}, "different config"),
        (lambda d: {**d, "model": {k: v[:1] for k, v in d["model"].items()}}, "another shape"),
        (lambda d: {**d, "model": {}}, "other model parameters"),
        (lambda d: {**d, "generators": {"noise": d["generators"]["noise"]}}, "random streams"),
        (lambda d: {**d, "generators": {k: v[:10] for k, v in d["generators"].items()}}, "malformed state"),
        (lambda d: {**d, "history": d["history"][:1]}, "history"),
        (lambda d: {**d, "sigma": "x"}, "noise multiplier"),
        (lambda d: {**d, "epoch": 7}, "more than epochs"),
        (lambda d: {**d, "hessian_rng": {"bit_generator": "nope"}}, "does not fit"),
        (lambda d: {**d, "model": {k: v * float("nan") for k, v in d["model"].items()}}, "non-finite"),
    ],
)
def test_malformed_checkpoints_are_one_line_naming_the_file(tmp_path, edit, match):
    cfg, path, saved = _checkpoint(tmp_path)
    changed = edit(saved)
    if isinstance(changed, bytes):
        path.write_bytes(changed)
    else:
        torch.save(changed, path)
    with pytest.raises(ValueError, match=match) as info:
        train(replace(cfg, resume=True))
    assert "\n" not in str(info.value)


def test_checkpoint_path_that_is_a_folder(tmp_path):
    cfg = replace(BASE, out=str(tmp_path / "run"), resume=True)
    checkpoint_path(cfg).mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        run_train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "files,match",
    [
        ({"config.json": b"\xff\xfe"}, "not UTF-8"),
        ({"config.json": b"[1, 2]"}, "JSON list"),
        ({"config.json": b"{bad"}, "not valid JSON"),
    ],
)
def test_malformed_mask_run_folders(tmp_path, files, match):
    folder = tmp_path / "mask"
    folder.mkdir()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    with pytest.raises(ValueError, match=match):
        train(replace(BASE, sparsity=0.5, mask_source="oracle", mask_run=str(folder)))


def test_mask_run_with_other_keys_or_shapes(tmp_path):
    first = run_train(replace(BASE, out=str(tmp_path / "dp")))
    state = torch.load(first / "model.pt", weights_only=True)
    torch.save({k + "x": v for k, v in state.items()}, first / "model.pt")
    with pytest.raises(ValueError, match="parameters"):
        train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(first)))
    torch.save({k: v[:1] for k, v in state.items()}, first / "model.pt")
    with pytest.raises(ValueError, match="shape"):
        train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(first)))
    metrics = json.loads((first / "metrics.json").read_text())
    metrics["privacy"]["mechanisms"] = [{"noise_multiplier": "x"}]
    (first / "metrics.json").write_text(json.dumps(metrics))
    torch.save(state, first / "model.pt")
    with pytest.raises(ValueError, match="mechanisms"):
        train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(first)))


def test_read_json_names_the_file(tmp_path):
    p = tmp_path / "m.json"
    p.write_bytes(b"\x80abc")
    with pytest.raises(ValueError, match=r"m\.json.*not UTF-8"):
        read_json(p)
    p.write_text("[]")
    with pytest.raises(ValueError, match="JSON list, expected a dict"):
        read_json(p, expect=dict)


@pytest.mark.parametrize("kind", ["object-array", "garbage", "wrong-shape"])
def test_mnist1d_cache_payload_never_runs_and_is_regenerated(tmp_path, monkeypatch, kind):
    # the mnist1d disk cache ($DPBASIN_CACHE) is a data folder too: it is read with allow_pickle=False
    from simulations.nn import data

    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    path = data.mnist1d_cache_path(5, 10_000)
    path.parent.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    if kind == "object-array":
        np.savez(path, x=np.array([Payload(marker)], dtype=object), y=np.arange(3))
    elif kind == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    else:
        np.savez(path, x=np.zeros((3, 40)), y=np.zeros(3, dtype=np.int64))
    fresh = (np.ones((10_000, 40)), np.arange(10_000) % 10)
    monkeypatch.setattr(data, "_mnist1d_generate", lambda seed, total: fresh)
    data._mnist1d_raw.cache_clear()
    try:
        x, y = data._mnist1d_raw(5, 10_000)
    finally:
        data._mnist1d_raw.cache_clear()
    assert not marker.exists()
    assert x is fresh[0] and y is fresh[1]  # regenerated, not read
    with np.load(path, allow_pickle=False) as saved:  # and the cache file replaced by a clean one
        assert np.array_equal(saved["x"], fresh[0])
