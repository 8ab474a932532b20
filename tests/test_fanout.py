"""The sweep API and the run store: keys, resume after a crash, and the same bits on every executor.

The identity test runs one small basin_dim sweep three ways — serially in this process, on a Dask
``LocalCluster`` with two worker processes, and against a real ``dask scheduler`` with two
``dask worker`` processes started on 127.0.0.1 — and requires byte-identical ``metrics.json`` and
identical ``metrics.npz`` arrays (the cells' seeds come from their configs, never from the worker;
the serial run uses both cores' numba threads, the workers one each).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from simulations import basin_dim
from simulations.common import fanout, store

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--d",
    "300",
    "--rank",
    "3",
    "--points",
    "2",
    "--replicas",
    "2",
    "--window",
    "5",
    "--burn-in",
    "1",
    "--batch-size",
    "4",
    "--theory-points",
    "3",
    "--quiet",
]


@dataclass(frozen=True)
class Demo:
    d: int = 3
    lr: float = 0.5
    workers: int = fanout.execution_field("workers")
    scheduler: str | None = fanout.execution_field("scheduler")
    threads: int = fanout.execution_field("threads")
    out: str = field(default="results/demo/{config}")
    quiet: bool = False


def test_run_key_ignores_execution_fields_and_sees_every_other_field():
    base = store.run_key(Demo(), experiment="demo", module="simulations.basin_dim")
    for same in (Demo(out="x"), Demo(workers=2), Demo(scheduler="tcp://h:1"), Demo(threads=4), Demo(quiet=True)):
        assert store.run_key(same, experiment="demo", module="simulations.basin_dim") == base
    for other in (Demo(d=4), Demo(lr=0.5000000001)):
        assert store.run_key(other, experiment="demo", module="simulations.basin_dim") != base
    assert store.run_key(Demo(), experiment="demo2", module="simulations.basin_dim") != base
    assert store.run_key(Demo(), experiment="demo", module="simulations.switch") != base  # other code


def test_resolve_out_places_the_key_and_keeps_explicit_folders():
    path = store.resolve_out(Demo(), experiment="demo", module="simulations.basin_dim")
    key = store.run_key(Demo(), experiment="demo", module="simulations.basin_dim")
    assert path == Path("results/demo") / key[:12]
    assert store.resolve_out(Demo(out="/tmp/here"), experiment="demo", module="simulations.basin_dim") == Path(
        "/tmp/here"
    )


def test_canonical_arrays_and_floats_are_exact():
    a = np.arange(5.0)
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)
    assert store.digest(store.canonical(a)) != store.digest(store.canonical(b))
    assert store.digest(store.canonical(a)) == store.digest(store.canonical(a.copy()))
    assert store.canonical(float("inf")) == "inf"
    with pytest.raises(TypeError):
        store.canonical(object())


def test_code_version_is_the_ast_without_docstrings(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('"""Doc."""\n\ndef f(x):\n    """Say."""\n    return x + 1  # comment\n')
    base = store.source_digest(src)
    src.write_text('"""Other doc."""\n\n\ndef f(x):\n    """Other."""\n    return (x + 1)\n')
    assert store.source_digest(src) == base  # docstrings, comments, layout: same code
    src.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert store.source_digest(src) != base


def test_import_closure_follows_lazy_imports_and_stops_at_the_code_packages():
    closure = store.import_closure("simulations.basin_dim")
    assert "dptheory.clipped_dynamics" in closure  # imported inside a function
    assert "simulations.basin.reduced" in closure and "simulations" in closure
    assert not any(m.startswith(("paper", "proofs")) for m in closure)  # figures never enter the key
    assert "simulations.nn.train" not in closure and "simulations.prune" not in closure
    assert set(store.code_version("simulations.basin_dim")["modules"]) == set(closure)


CALLS: list[int] = []


def flaky(*, x: int, fail: bool = False) -> int:
    CALLS.append(x)
    if fail and x == 2:
        raise RuntimeError("cell 2 crashed")
    return x * 10


def test_finished_cells_are_stored_as_they_complete_and_reused_after_a_crash(tmp_path):
    cache = store.CellCache(tmp_path / "run")
    crashing = [fanout.Cell(flaky, {"x": x, "fail": True}) for x in range(4)]
    CALLS.clear()
    with pytest.raises(RuntimeError, match="cell 2 crashed"):
        fanout.run_cells(crashing, cache=cache, quiet=True)
    assert CALLS == [0, 1, 2]
    assert len(list(cache.folder.glob("*.pkl"))) == 2  # cells 0 and 1 survived the crash
    # resume: same cells with the fault gone (same keys for 0, 1: "fail" only matters at x = 2)
    cells = [fanout.Cell(flaky, {"x": x, "fail": x != 2}) for x in range(4)]
    CALLS.clear()
    assert fanout.run_cells(cells, cache=cache, quiet=True) == [0, 10, 20, 30]
    assert CALLS == [2, 3]
    CALLS.clear()
    assert fanout.run_cells(cells, cache=cache, quiet=True) == [0, 10, 20, 30]
    assert CALLS == []


def test_a_finished_run_reuses_nothing_stale_and_removes_its_cell_cache(tmp_path):
    out = tmp_path / "bd"
    assert basin_dim.main(TINY + ["--out", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    config = basin_dim.BasinDimConfig(**{**json.loads((out / "config.json").read_text()), "out": str(out)})
    assert record["key"] == store.run_key(config, experiment="basin_dim", module="simulations.basin_dim")
    assert store.is_complete(out, record["key"]) and not store.is_complete(out, "0" * 64)
    assert not store.CellCache(out).folder.exists()
    assert json.loads((out / "config.json").read_text())["threads"] >= 1  # the thread count is saved


def test_the_default_folder_is_content_addressed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert basin_dim.main(TINY) == 0
    assert basin_dim.main(TINY + ["--seed", "1"]) == 0
    folders = sorted(p.name for p in (tmp_path / "results" / "basin_dim").iterdir())
    assert len(folders) == 2 and all(len(f) == 12 for f in folders)  # two configs, two folders
    for f in folders:
        record = json.loads((tmp_path / "results" / "basin_dim" / f / "run.json").read_text())
        assert record["key"].startswith(f)


def test_bad_executor_settings_are_one_line(capsys, tmp_path):
    assert basin_dim.main(TINY + ["--scheduler", "nowhere", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "scheduler must be an address" in err
    assert not (tmp_path / "x").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_results(a: Path, b: Path) -> None:
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    with np.load(a / "metrics.npz") as x, np.load(b / "metrics.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            assert np.array_equal(x[k], y[k]), k


def test_serial_local_cluster_and_a_real_scheduler_give_identical_results(tmp_path):
    pytest.importorskip("distributed")
    serial, local, remote = tmp_path / "serial", tmp_path / "local", tmp_path / "remote"
    assert basin_dim.main(TINY + ["--out", str(serial)]) == 0
    assert basin_dim.main(TINY + ["--workers", "2", "--out", str(local)]) == 0
    _same_results(serial, local)
    assert json.loads((local / "run.json").read_text())["execution"]["kind"] == "local"

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            dask + ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    worker + ["--host", "127.0.0.1"],
                    env=env,
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        import distributed

        deadline = time.monotonic() + 60
        while True:
            try:
                with distributed.Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
                    assert len(client.scheduler_info()["workers"]) == 2
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert basin_dim.main(TINY + ["--scheduler", address, "--out", str(remote)]) == 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    _same_results(serial, remote)
    record = json.loads((remote / "run.json").read_text())
    assert record["execution"] == {"kind": "scheduler", "workers": None, "scheduler": address, "threads_per_worker": 1}


def test_execution_records_and_validation():
    assert fanout.Execution().kind == "serial"
    assert fanout.Execution(workers=2, threads=3).describe()["threads_per_worker"] == 3
    with pytest.raises(ValueError, match="workers"):
        fanout.Execution(workers=-1)
    with fanout.session(fanout.Execution()) as runner:
        assert fanout.execution_of(replace(Demo(), d=5)) == runner.execution
    assert fanout.active_execution() is None


def test_shared_arguments_go_to_the_cluster_once_and_arrive_intact():
    # cells holding the same objects (a network and its data in the basin arms): scattered once, and
    # every container kind arrives whole (Client.scatter alone would split a dict or a list into items)
    pytest.importorskip("distributed")
    big = {"x": np.arange(2_000_000, dtype=np.float64), "empty": {}}
    shared = [big, {}, [1, 2, 3], np.ones(5)]
    cells = [
        fanout.Cell(dict, {"a": shared[i % 4], "b": shared[(i + 1) % 4], "k": i}, token=f"share-{i}") for i in range(8)
    ]
    serial = fanout.run_cells(cells, quiet=True)
    with fanout.session(fanout.Execution(workers=2)) as runner:
        assert runner._share(list(enumerate(cells))).keys() == {id(v) for v in shared}
        fanned = fanout.run_cells(cells, quiet=True)
    for s, f in zip(serial, fanned):
        assert s.keys() == f.keys() and s["k"] == f["k"]
        for key in ("a", "b"):
            if isinstance(s[key], dict) and "x" in s[key]:
                assert np.array_equal(s[key]["x"], f[key]["x"]) and f[key]["empty"] == {}
            elif isinstance(s[key], np.ndarray):
                assert np.array_equal(s[key], f[key])
            else:
                assert s[key] == f[key]


def test_local_workers_start_without_the_nannys_malloc_trim_threshold(monkeypatch):
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold and makes a
    # torch step ~1.4x slower (module docstring); local workers start without it, and a worker that
    # has it gets the thresholds back once
    pytest.importorskip("distributed")
    with fanout.session(fanout.Execution(workers=1)) as runner:
        env = runner.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        assert list(env.values()) == [None]
    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(fanout, "_MALLOC_RESTORED", False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    fanout._restore_malloc()
    assert calls == []  # no nanny variable: glibc's dynamic defaults stay
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    fanout._restore_malloc()
    fanout._restore_malloc()
    assert calls == [(-1, fanout.TRIM_THRESHOLD), (-3, fanout.MMAP_THRESHOLD)]  # once per process
