"""The README's findings block, rendered mechanically from committed verdict files.

The README never types a verdict or a number by hand. Its block between ``<!-- findings:begin -->``
and ``<!-- findings:end -->`` is rendered from verdict files — JSON of the form
``{"verdicts": [{"command": ..., "folder": ..., "verdict": {...}}, ...]}`` — that were collected from
result folders (``docs/synthetic-verdicts.json`` by this module, ``docs/verdicts.json`` by
``paper.claims_doc``). One table per claim: where it was tested, the statement, the estimate with
its 95 % CI (and the theory's value where there is one), and the verdict as computed by the
experiment.

    python -m paper.readme collect results/basin_dim results/recovery results/switch results/prune \\
        --json docs/synthetic-verdicts.json
    python -m paper.readme render docs/synthetic-verdicts.json docs/verdicts.json --readme README.md
    python -m paper.readme check docs/synthetic-verdicts.json docs/verdicts.json --readme README.md

``check`` exits 1 if the README's block differs from what the files render to; the test suite runs
it on the committed files, so the README cannot drift from the numbers.

Command line: a missing or malformed result folder or verdict file, a record of the wrong shape, an
output path that is a folder, a README without the markers — each is one line on stderr and exit
status 2, and nothing is written (the output is computed first, then replaced atomically).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from paper import blocks
from paper.outputs import OneLineParser, output_file, read_metrics, report_error, write_text_atomic

PROG = "python -m paper.readme"
BEGIN = "<!-- findings:begin -->"
END = "<!-- findings:end -->"
CLAIMS = {
    "1": "DP-SGD is slower early, but the late phase decides the result",
    "2": "gradient descent recovers from noise when not clipped; clipping hurts more than noise",
    "3": "both effects grow with the dimension",
    "4": "magnitude pruning is a suitable dimension reduction; heavy pruning can improve DP-SGD",
}
SYNTHETIC_COMMANDS = {
    "basin_dim": "python -m simulations.basin_dim",
    "recovery": "python -m simulations.recovery",
    "switch": "python -m simulations.switch",
    "prune": "python -m simulations.prune",
}


def _num(x: Any) -> float:
    """A stored number (JSON writes non-finite floats as the strings "nan", "inf"); NaN if absent."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _g(x: float) -> str:
    """A compact number: 3 significant digits, signed only where the sign is the point."""
    if math.isnan(x):
        return "–"
    return f"{x:.3g}"


def estimate_text(v: dict[str, Any]) -> str:
    """``estimate unit [lo, hi]`` of a verdict record, scaled by its ``scale``; theory appended if present.

    Example:
        >>> estimate_text({"estimate": 0.4287, "ci95": [0.4244, 0.4329], "theory": 0.4377, "unit": "slope"})
        '0.429 slope [0.424, 0.433]; theory 0.438'
        >>> estimate_text({"estimate": -0.0653, "ci95": [-0.074, -0.056], "unit": "points", "scale": 100})
        '-6.53 points [-7.4, -5.6]'
    """
    s = _num(v.get("scale", 1.0))
    s = 1.0 if math.isnan(s) else s
    est = _num(v.get("estimate")) * s
    ci = v.get("ci95") or [math.nan, math.nan]
    lo, hi = _num(ci[0]) * s, _num(ci[1]) * s
    text = f"{_g(est)} {v.get('unit', '')}".rstrip()
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{_g(lo)}, {_g(hi)}]"
    if "theory" in v and not math.isnan(_num(v["theory"])):
        text += f"; theory {_g(_num(v['theory']) * s)}"
    return text


def verdict_text(v: dict[str, Any]) -> str:
    """The verdict as the experiment computed it (``held``, and whether the opposite is significant)."""
    if v.get("held") is True:
        return "**held**"
    est, p = _num(v.get("estimate")), _num(v.get("p_value"))
    direction = v.get("direction")
    opposite = (est < 0) if direction == "greater" else (est > 0) if direction == "less" else False
    if opposite and not math.isnan(p) and p <= _num(v.get("alpha", 0.05)):
        return "not held (opposite significant)"
    return "not held"


def collect(folders: list[str | Path]) -> list[dict[str, Any]]:
    """The verdict records of synthetic result folders, with the command and folder behind each."""
    out = []
    for folder in map(Path, folders):
        metrics = read_metrics(folder)
        name = folder.name if folder.name in SYNTHETIC_COMMANDS else folder.parent.name
        command = SYNTHETIC_COMMANDS.get(name, f"python -m simulations.{name}")
        for v in metrics.get("verdicts", []):
            out.append({"command": command, "folder": str(folder), "verdict": v})
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_block(records: list[dict[str, Any]]) -> str:
    """The README block: per claim, a count of verdicts held and one table row per verdict.

    Example:
        >>> rec = {"command": "python -m simulations.switch", "folder": "results/switch",
        ...        "verdict": {"claim": "1", "statement": "s", "estimate": 1.5, "ci95": ["nan", "nan"],
        ...                    "held": True, "unit": "z", "test": "t"}}
        >>> print(render_block([rec]).splitlines()[3])
        **Claim 1** — DP-SGD is slower early, but the late phase decides the result: 1 of 1 verdicts held.
    """
    lines = [BEGIN, "<!-- rendered by `python -m paper.readme render`; do not edit by hand -->", ""]
    for claim, text in CLAIMS.items():
        mine = [r for r in records if str(r["verdict"].get("claim", "")).split(" ")[0] == claim]
        if not mine:
            continue
        held = sum(1 for r in mine if r["verdict"].get("held") is True)
        lines += [f"**Claim {claim}** — {text}: {held} of {len(mine)} verdicts held.", ""]
        lines += ["| where | statement | estimate [95 % CI] | verdict | command |", "|---|---|---|---|---|"]
        for r in mine:
            v = r["verdict"]
            where = v.get("task") or "synthetic basin"
            lines.append(
                f"| {_cell(where)} | {_cell(v.get('statement', ''))} | {_cell(estimate_text(v))} | "
                f"{verdict_text(v)} | `{r['command']}` |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with its findings block replaced by ``block`` (ValueError if the markers are missing)."""
    return blocks.replace_block(text, block, begin=BEGIN, end=END)


def load(paths: list[str | Path]) -> list[dict[str, Any]]:
    """The records of every verdict file, in the order given."""
    from paper.figures import read_json_file

    records: list[dict[str, Any]] = []
    for path in paths:
        data = read_json_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("verdicts"), list):
            raise ValueError(f"{path}: expected an object with a 'verdicts' list")
        records += data["verdicts"]
    return records


def check(readme: str | Path, paths: list[str | Path]) -> bool:
    """True if the README's findings block is exactly what the verdict files render to."""
    text = Path(readme).read_text()
    return replace_block(text, render_block(load(paths))) == text


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("collect", "render", "check"))
    parser.add_argument("paths", nargs="+", help="result folders (collect) or verdict files (render, check)")
    parser.add_argument("--json", help="collect: the verdict file to write")
    parser.add_argument("--readme", default="README.md", help="render/check: the README with the markers")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.action == "collect":
            if not args.json:
                raise ValueError("collect needs --json PATH")
            out = output_file("--json", args.json)
            records = collect(args.paths)
            write_text_atomic(out, json.dumps({"verdicts": records}, indent=2) + "\n")
            print(f"{len(records)} verdicts -> {args.json}")
        elif args.action == "render":
            readme = output_file("--readme", args.readme)
            write_text_atomic(readme, replace_block(readme.read_text(), render_block(load(args.paths))))
            print(f"findings block of {readme} rendered from {len(args.paths)} verdict files")
        else:
            ok = check(args.readme, args.paths)
            print("findings block matches" if ok else "findings block differs from the verdict files")
            return 0 if ok else 1
    except (KeyError, TypeError, IndexError, AttributeError) as exc:  # a record of the wrong shape
        return report_error(PROG, ValueError(f"malformed verdict record ({type(exc).__name__}: {exc})"))
    except Exception as exc:
        return report_error(PROG, exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
