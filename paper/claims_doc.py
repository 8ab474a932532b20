"""The "what we found" sentences of the network claims, rendered mechanically from verdict records.

Every claim experiment (``python -m simulations.nn ablate|switch|width|prune|epsilon``) writes a list
of verdict records into its ``metrics.json`` (``"verdicts"``: claim, statement, test, estimate,
ci95, p_value, n_seeds, held, unit, scale, task, key — computed from the runs). This module reads
result folders only (figures and reports never train) and turns each record into one sentence, so
that the docs and the README cannot drift from the numbers:

    python -m paper.claims_doc results/nn/ablate results/nn/switch ... \\
        --json docs/verdicts.json --markdown docs/network-claims.md

writes the collected records (with the command and folder they came from) to ``--json`` and
replaces the block between ``<!-- verdicts:begin -->`` and ``<!-- verdicts:end -->`` of
``--markdown`` with the rendered sentences. ``--check`` instead exits 1 if the block differs from
what the JSON renders to (the test suite runs that check on the committed docs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- verdicts:begin -->"
END = "<!-- verdicts:end -->"
COMMANDS = {"1": "switch", "2": "ablate", "3": "width", "4": "prune", "epsilon": "epsilon"}


def _num(x: Any) -> float:
    """A stored number (JSON writes non-finite floats as the strings "nan", "inf")."""
    return float(x)


def render(v: dict[str, Any], *, source: str = "") -> str:
    """One sentence for verdict record ``v`` (numbers as stored, scaled by ``v["scale"]``).

    Example:
        >>> v = {"claim": "2", "statement": "clip-only loses more than noise-only", "task": "mnist1d n=36000",
        ...      "estimate": -0.1234, "ci95": [-0.15, -0.09], "unit": "points", "scale": 100.0,
        ...      "test": "paired t (two-sided), df = 4", "p_value": 0.0012, "adjustment": "holm",
        ...      "n_seeds": 5, "held": False, "key": "k"}
        >>> render(v)
        'Claim 2, mnist1d n=36000: clip-only loses more than noise-only — estimate -12.34 points (95 % CI -15.00 to -9.00; paired t (two-sided), df = 4; p = 0.0012, Holm-adjusted; 5 seeds): **not held**.'
    """
    s = _num(v.get("scale", 1.0))
    est, lo, hi = (_num(v["estimate"]) * s, _num(v["ci95"][0]) * s, _num(v["ci95"][1]) * s)
    p = _num(v.get("p_value", math.nan))
    p_txt = "no p-value (decided by the interval)" if math.isnan(p) else f"p = {p:.2g}"
    if not math.isnan(p) and v.get("adjustment") == "holm":
        p_txt += ", Holm-adjusted"
    held = "**held**" if v["held"] else "**not held**"
    text = (
        f"Claim {v['claim']}, {v['task']}: {v['statement']} — estimate {est:+.2f} {v.get('unit', '')}".rstrip()
        + f" (95 % CI {lo:+.2f} to {hi:+.2f}; {v['test']}; {p_txt}; {v['n_seeds']} seeds): {held}."
    )
    if source:
        text += f" [{source}]"
    return text


def collect(folders: list[str | Path]) -> list[dict[str, Any]]:
    """The verdict records of the result folders, each with the command, folder and key it came from."""
    out = []
    for folder in map(Path, folders):
        metrics = json.loads((folder / "metrics.json").read_text())
        claim = str(metrics.get("claim", ""))
        command = COMMANDS.get(claim.split(":")[0].split(" ")[0].split("-")[0], "?")
        for v in metrics.get("verdicts", []):
            out.append({"command": f"python -m simulations.nn {command}", "folder": str(folder), "verdict": v})
    return out


def render_block(records: list[dict[str, Any]]) -> str:
    """The markdown block (between the markers) for the collected records."""
    lines = [BEGIN]
    for r in records:
        v = r["verdict"]
        source = f"`{r['command']}` → `{r['folder']}/metrics.json`, verdict `{v['key']}`"
        lines.append(f"- {render(v, source=source)}")
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with its verdict block replaced by ``block`` (ValueError if the markers are missing)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"markdown has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def check(markdown: str | Path, records_json: str | Path) -> bool:
    """True if the markdown's verdict block is exactly what the records in ``records_json`` render to."""
    text = Path(markdown).read_text()
    records = json.loads(Path(records_json).read_text())
    return replace_block(text, render_block(records)) == text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper.claims_doc", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="result folders of the claim experiments")
    parser.add_argument("--json", required=True, help="collected verdict records (written, or read with --check)")
    parser.add_argument("--markdown", required=True, help="markdown file with the verdict markers")
    parser.add_argument("--check", action="store_true", help="only check that the markdown matches the JSON")
    args = parser.parse_args(argv)
    try:
        if args.check:
            ok = check(args.markdown, args.json)
            print("verdict block matches" if ok else "verdict block differs from the records")
            return 0 if ok else 1
        records = collect(args.folders)
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
        md = Path(args.markdown)
        md.write_text(replace_block(md.read_text(), render_block(records)))
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"python -m paper.claims_doc: error: {exc}\n")
        return 2
    print(f"{len(records)} verdicts -> {args.json}, {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
