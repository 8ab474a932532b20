"""benchmarks/render_bench.py: goal verdicts and the README block come from the JSON, nothing by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("render_bench", ROOT / "benchmarks" / "render_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(np_s, dp_s, hooks_s, ghost_s, mem_np, mem_dp):
    return {
        "description": "d",
        "parameters": 10,
        "batch": 256,
        "timed_rounds": 3,
        "dpbasin_per_sample_method": "bk",
        "errors": {},
        "samples_per_s": {"nonprivate": np_s, "dpbasin": dp_s, "opacus_hooks": hooks_s, "opacus_ghost": ghost_s},
        "ratios": {
            "dp_over_nonprivate": np_s / dp_s,
            "speedup_vs_opacus_hooks": dp_s / hooks_s,
            "speedup_vs_opacus_ghost": dp_s / ghost_s,
            "memory_dp_over_nonprivate": mem_dp / mem_np,
        },
        "peak_memory_mb": {"batch": 1024, "nonprivate": mem_np, "dpbasin": mem_dp},
    }


DATA = {
    "config": {"torch": "t", "opacus": "o", "threads": 1, "device": "cpu", "batch": 256, "mem_batch": 1024},
    "models": {
        "cnn": _model(100.0, 80.0, 40.0, 60.0, 10.0, 12.0),  # 1.25 ✓, 2.0 ✓, 1.33 ✗, 1.2 ✓
        "wrn": _model(100.0, 50.0, 10.0, 20.0, 10.0, 14.0),  # 2.0 ✗, 5 ✓, 2.5 ✓, 1.4 ✗
    },
}


def test_verdicts_follow_the_bounds():
    rb = _module()
    got = {(g["model"], g["ratio"]): (g["met"], g["margin"]) for g in rb.verdicts(DATA)}
    assert got[("cnn", "dp_over_nonprivate")][0] is True
    assert got[("cnn", "speedup_vs_opacus_hooks")][0] is True  # exactly on the bound counts as met
    assert got[("cnn", "speedup_vs_opacus_ghost")] == (False, pytest.approx(1 - (80 / 60) / 1.5))
    assert got[("wrn", "dp_over_nonprivate")] == (False, pytest.approx(2.0 / 1.3 - 1))
    assert got[("wrn", "memory_dp_over_nonprivate")][0] is False
    assert got[("cnn", "memory_dp_over_nonprivate")][0] is True


def test_render_and_readme_block(tmp_path):
    rb = _module()
    src = tmp_path / "bench.json"
    src.write_text(json.dumps(DATA))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{rb.README_START}\nold table\n{rb.README_END}\noutro\n")
    out = tmp_path / "bench.md"
    assert rb.main([str(src), "--out", str(out), "--readme", str(readme)]) == 0
    doc = out.read_text()
    assert "**missed** by 54 %" in doc  # wrn time: 2.0 against ≤ 1.3
    assert "| 80 |" in doc and "5 of 12 goals met, 3 missed, 4 not measured" in doc
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert "wrn step time / non-private (2.00, goal <= 1.3)" in text
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        rb.main([str(src), "--out", str(out), "--readme", str(readme)])
