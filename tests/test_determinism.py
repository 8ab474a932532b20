"""Same seed, same numbers — and what that means exactly (README: "What is bit-identical").

* Synthetic basins (numba): bit-identical for the same seed on the same machine whatever the thread
  count — each replica draws from its own random stream and runs serially; threads only dispatch
  replicas (tested here with 1 and 2 threads).
* Networks (torch): bit-identical for the same seed, machine and thread count (``threads``, saved in
  config.json, default 1; part of the resume key). Another thread count changes the order of float
  reductions and so the low bits (and, through training, the results).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from simulations import basin_dim


def _basin_dim(tmp_path, name, threads):
    out = tmp_path / name
    argv = [
        "--d",
        "300",
        "--rank",
        "3",
        "--points",
        "2",
        "--replicas",
        "4",
        "--window",
        "5",
        "--burn-in",
        "1",
        "--batch-size",
        "4",
        "--theory-points",
        "3",
        "--steps",
        "400",
        "--quiet",
        "--threads",
        str(threads),
        "--out",
        str(out),
    ]
    assert basin_dim.main(argv) == 0
    with np.load(out / "metrics.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return (out / "metrics.json").read_text(), arrays, json.loads((out / "config.json").read_text())


def test_synthetic_results_do_not_depend_on_the_thread_count(tmp_path, monkeypatch, capsys):
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    monkeypatch.setattr(basin_dim, "draw_figure", lambda config: None)
    one, arrays1, cfg1 = _basin_dim(tmp_path, "one", 1)
    two, arrays2, cfg2 = _basin_dim(tmp_path, "two", 2)
    assert one == two
    assert arrays1.keys() == arrays2.keys() and all(np.array_equal(arrays1[k], arrays2[k]) for k in arrays1)
    assert (cfg1["threads"], cfg2["threads"]) == (1, 2)


def test_network_runs_repeat_bit_for_bit_at_a_fixed_thread_count():
    import torch

    from simulations.nn.train import TrainConfig, train

    cfg = TrainConfig(
        dataset="teacher:k=2,d=8",
        n_train=60,
        n_test=30,
        width=4,
        depth=1,
        epochs=2,
        batch_size=6,
        noise_multiplier=1.0,
        accountants=("rdp",),
        mode="sgd",
        quiet=True,
        threads=1,
    )
    before = torch.get_num_threads()
    a, b = train(cfg), train(cfg)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    assert a["threads"] == 1 and torch.get_num_threads() == before  # set for the run, restored after
    assert replace(cfg, threads=0).threads == 0  # 0: torch's own default (not reproducible across machines)
