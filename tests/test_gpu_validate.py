"""The GPU validation script on CPU at --small sizes, and its time guard (cut stage, manifest)."""

from __future__ import annotations

import json

from simulations import gpu_validate


def test_small_run_writes_results_and_manifest(tmp_path, capsys):
    out = tmp_path / "gpu"
    rc = gpu_validate.main(["--out", str(out), "--small", "--stages", "ablate,switch"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == "cpu" and manifest["small"] is True
    assert [s["stage"] for s in manifest["stages"]] == ["ablate", "switch"]
    assert all(s["status"] == "done" for s in manifest["stages"]), manifest
    for stage in ("ablate", "switch"):
        metrics = json.loads((out / stage / "metrics.json").read_text())
        assert "claim" in metrics
        assert (out / stage / "config.json").is_file()
    assert "claim 2" in capsys.readouterr().out


def test_time_guard_cuts_cleanly(tmp_path):
    out = tmp_path / "gpu"
    # a budget spent before the first run: the stage is cut, no half-written folder, the rest skipped
    rc = gpu_validate.main(["--out", str(out), "--small", "--budget-s", "1e-9", "--stages", "switch,ablate"])
    assert rc == 1  # nothing completed
    manifest = json.loads((out / "manifest.json").read_text())
    statuses = [(s["stage"], s["status"]) for s in manifest["stages"]]
    assert statuses == [("ablate", "cut"), ("switch", "skipped")]
    assert not (out / "ablate").exists()
    partial = json.loads((out / "ablate.partial.json").read_text())
    assert partial["completed_runs"] == []


def test_time_guard_keeps_completed_runs(tmp_path, monkeypatch):
    # let exactly two runs start, then the budget is spent: their histories are kept
    import time as _time

    calls = {"n": 0}
    real = _time.perf_counter

    def clock():
        return real() + (1e9 if calls["n"] >= 2 else 0.0)

    original = gpu_validate._common.run_training

    def counting(config, **kw):
        result = original(config, **kw)
        calls["n"] += 1
        return result

    monkeypatch.setattr(gpu_validate._common, "run_training", counting)
    monkeypatch.setattr(gpu_validate.time, "perf_counter", clock)
    out = tmp_path / "gpu"
    gpu_validate.main(["--out", str(out), "--small", "--stages", "switch"])
    partial = json.loads((out / "switch.partial.json").read_text())
    assert len(partial["completed_runs"]) == 2
    assert partial["completed_runs"][0]["history"][0]["epoch"] == 0
