"""The GPU validation script on CPU at --small sizes, and its time guard (cut stage, manifest)."""

from __future__ import annotations

import json
import re

from simulations import gpu_validate


def test_small_run_writes_results_and_manifest(tmp_path, capsys):
    # the smoke test of every small stage: each writes its folder and a log without a single "nan"
    out = tmp_path / "gpu"
    rc = gpu_validate.main(["--out", str(out), "--small"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == "cpu" and manifest["small"] is True
    stages = list(gpu_validate.SMALL_STAGES)
    assert [s["stage"] for s in manifest["stages"]] == stages
    assert all(s["status"] == "done" for s in manifest["stages"]), manifest
    for stage in stages:
        metrics = json.loads((out / stage / "metrics.json").read_text())
        assert (out / stage / "config.json").is_file()
        if stage != "basin":  # the claim experiments; basin compares theory and measurement
            assert "claim" in metrics
    captured = capsys.readouterr()
    # each stage's tables go to its log; the terminal gets one status line per stage, no absl spam
    assert "claim 2" in (out / "ablate.log").read_text() and "claim 2" not in captured.out
    assert [
        line.split(":")[1].strip() for line in captured.err.splitlines() if line.startswith("gpu_validate:")
    ] == stages
    assert "WARNING" not in captured.err
    for stage in stages:  # a mean ± SE, a CI or a p-value that is undefined is said so, never printed as nan
        assert not re.search(r"\bnan\b", (out / f"{stage}.log").read_text()), stage


def test_time_guard_cuts_cleanly(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu"
    # a budget spent before the first run: the stage is cut, no half-written folder, the rest skipped
    import time as _time

    real, calls = _time.perf_counter, {"n": 0}

    def clock():  # the first call fixes the start; every later one is a day later
        calls["n"] += 1
        return real() + (0.0 if calls["n"] == 1 else 86400.0)

    monkeypatch.setattr(gpu_validate.time, "perf_counter", clock)
    rc = gpu_validate.main(["--out", str(out), "--small", "--budget-s", "1", "--stages", "switch,ablate"])
    assert rc == 1  # nothing completed, and stderr says so in one line
    assert "no stage completed" in capsys.readouterr().err
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


def test_checked_stage_names_are_the_stages_that_exist(tmp_path):
    # --stages is checked against STAGES / SMALL_STAGES: they must be exactly the stages that run
    for small, names in ((False, gpu_validate.STAGES), (True, gpu_validate.SMALL_STAGES)):
        built = [name for name, _, _ in gpu_validate.stage_configs(small=small, device="cpu", out=tmp_path)]
        assert tuple(built) == names


def test_a_stage_without_a_small_version_is_refused_up_front(tmp_path, capsys):
    missing = next(n for n in gpu_validate.STAGES if n not in gpu_validate.SMALL_STAGES)
    out = tmp_path / "gpu"
    assert gpu_validate.main(["--out", str(out), "--small", "--stages", missing]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and missing in err
    assert not out.exists()
