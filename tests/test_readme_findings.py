"""The README's findings cannot drift from the results: its block is what the verdict files render
to, and the synthetic verdict file is what the four synthetic commands compute today."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from paper import readme

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "docs" / "synthetic-verdicts.json", ROOT / "docs" / "verdicts.json"]


def test_readme_block_is_what_the_verdict_files_render_to():
    assert readme.check(ROOT / "README.md", FILES)
    text = (ROOT / "README.md").read_text()
    block = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0]
    n = sum(len(json.loads(p.read_text())["verdicts"]) for p in FILES)
    assert block.count("\n| ") - block.count("\n| where |") == n  # one row per verdict record


def test_check_detects_an_edited_verdict(tmp_path):
    rec = {
        "command": "python -m simulations.switch",
        "folder": "results/switch",
        "verdict": {"claim": "1", "statement": "s", "estimate": 1.5, "ci95": [1.0, 2.0], "held": True, "unit": "z"},
    }
    (tmp_path / "v.json").write_text(json.dumps({"verdicts": [rec]}))
    md = tmp_path / "README.md"
    md.write_text(f"intro\n{readme.BEGIN}\n{readme.END}\ntail\n")
    assert readme.main(["render", str(tmp_path / "v.json"), "--readme", str(md)]) == 0
    assert readme.check(md, [tmp_path / "v.json"])
    assert "**held**" in md.read_text() and md.read_text().startswith("intro\n")
    md.write_text(md.read_text().replace("**held**", "not held"))
    assert not readme.check(md, [tmp_path / "v.json"])
    assert readme.main(["check", str(tmp_path / "v.json"), "--readme", str(md)]) == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert readme.main(["render", str(tmp_path / "bad.json"), "--readme", str(tmp_path / "none.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


@pytest.mark.slow
def test_synthetic_verdict_file_is_what_the_commands_compute(tmp_path):
    """Rerun the four synthetic commands at their defaults: same statements, verdicts and estimates."""
    saved = json.loads(FILES[0].read_text())["verdicts"]
    folders = []
    for name in readme.SYNTHETIC_COMMANDS:
        out = tmp_path / name
        res = subprocess.run(
            [sys.executable, "-m", f"simulations.{name}", "--quiet", "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr
        folders.append(out)
    fresh = readme.collect(folders)
    assert [r["command"] for r in fresh] == [r["command"] for r in saved]
    for new, old in zip(fresh, saved, strict=True):
        a, b = new["verdict"], old["verdict"]
        assert (a["claim"], a["statement"], a["held"]) == (b["claim"], b["statement"], b["held"])
        # same seed, same numbers: bit-identical on one machine; across machines the last digits of
        # float sums may differ, far below the rendered three significant digits
        assert math.isclose(float(a["estimate"]), float(b["estimate"]), rel_tol=1e-6)
