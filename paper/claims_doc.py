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
``--markdown`` with the rendered sentences. Numbers in the prose are markers too:
``<!--s:FOLDER:KEY:SCALE:UNIT-->text<!--/s-->`` is re-rendered from ``metrics.json`` of the result
folder named FOLDER (its base name) at the dotted KEY (a paired test → "estimate unit (95 % CI lo to
hi; n seeds)", a summary → "mean ± se unit", a number → "value unit"), scaled by SCALE. The values
are stored in the JSON too. ``--check`` instead exits 1 if the markdown differs from what the JSON
renders to (the test suite runs that check on the committed docs).

Command line: result folders and files are untrusted input — a missing or malformed ``metrics.json``,
a verdict record without its fields, a stat marker whose key is not in the metrics, a ``--json``
path that is a folder, a markdown file without the markers — each is one line on stderr and exit
status 2, and nothing is written: both outputs are computed first and then each replaced
atomically. Without arguments it prints one usage line and exits 2 (``--json`` and ``--markdown``
are required). ``--check`` exits 0 when the markdown matches, 1 when it differs.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from paper import blocks
from paper.outputs import OneLineParser, output_file, read_metrics, report_error, write_text_atomic

PROG = "python -m paper.claims_doc"
BEGIN = "<!-- verdicts:begin -->"
END = "<!-- verdicts:end -->"
COMMANDS = {"1": "switch", "2": "ablate", "3": "width", "4": "prune", "epsilon": "epsilon"}
STAT = re.compile(r"<!--s:([^:>]+):([^:>]+):([^:>]+):([^>]*?)-->(.*?)<!--/s-->", re.S)


def _num(x: Any) -> float:
    """A stored number (JSON writes non-finite floats as the strings "nan", "inf")."""
    return float(x)


def render(v: dict[str, Any], *, source: str = "") -> str:
    """One sentence for verdict record ``v`` (numbers as stored, scaled by ``v["scale"]``).

    An accuracy effect below 3 points measured with fewer than 10 seeds is flagged for a 10-seed re-run.

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
    opposite = (est < 0) if v.get("direction") == "greater" else (est > 0) if v.get("direction") == "less" else False
    if not v["held"] and opposite and not math.isnan(p) and p <= _num(v.get("alpha", 0.05)):
        held = "**not held: the opposite is significant**"
    text = (
        f"Claim {v['claim']}, {v['task']}: {v['statement']} — estimate {est:+.2f} {v.get('unit', '')}".rstrip()
        + f" (95 % CI {lo:+.2f} to {hi:+.2f}; {v['test']}; {p_txt}; {v['n_seeds']} seeds): {held}."
    )
    if v.get("unit") == "points" and abs(est) < 3 and int(v["n_seeds"]) < 10:
        text += " (effect below 3 points with fewer than 10 seeds: to be re-run with 10)"
    if source:
        text += f" [{source}]"
    return text


def collect(folders: list[str | Path]) -> list[dict[str, Any]]:
    """The verdict records of the result folders, each with the command, folder and key it came from."""
    out = []
    for folder in map(Path, folders):
        metrics = read_metrics(folder)
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
    return blocks.replace_block(text, block, begin=BEGIN, end=END)


def lookup(metrics: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of ``metrics`` (list entries by index)."""
    value: Any = metrics
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def render_stat(value: Any, *, scale: float, unit: str) -> str:
    """The prose form of a stored statistic (module docstring)."""
    u = f" {unit}" if unit else ""
    if isinstance(value, dict) and "estimate" in value:
        lo, hi = (_num(value["ci95"][0]) * scale, _num(value["ci95"][1]) * scale)
        n = value.get("n", value.get("n_seeds"))
        return f"{_num(value['estimate']) * scale:+.2f}{u} (95 % CI {lo:+.2f} to {hi:+.2f}; {n} seeds)"
    if isinstance(value, dict) and "mean" in value:
        return f"{_num(value['mean']) * scale:.2f} ± {_num(value['se']) * scale:.2f}{u}"
    return f"{_num(value) * scale:.3g}{u}"


def collect_stats(text: str, folders: list[str | Path]) -> dict[str, Any]:
    """The stored values of every stat marker in ``text``, read from the named result folders."""
    by_name = {Path(f).name: Path(f) for f in folders}
    out = {}
    for name, key, _, _, _ in STAT.findall(text):
        if name not in by_name:
            raise ValueError(f"stat marker names folder {name!r}, not among {sorted(by_name)}")
        out[f"{name}:{key}"] = lookup(read_metrics(by_name[name]), key)
    return out


def fill_stats(text: str, stats: dict[str, Any]) -> str:
    """``text`` with every stat marker's text re-rendered from ``stats``."""

    def one(m: re.Match) -> str:
        name, key, scale, unit, _ = m.groups()
        body = render_stat(stats[f"{name}:{key}"], scale=float(scale), unit=unit)
        return f"<!--s:{name}:{key}:{scale}:{unit}-->{body}<!--/s-->"

    return STAT.sub(one, text)


def check(markdown: str | Path, records_json: str | Path) -> bool:
    """True if the markdown's verdict block and stat markers are exactly what ``records_json`` renders to."""
    text = Path(markdown).read_text()
    saved = json.loads(Path(records_json).read_text())
    expected = fill_stats(replace_block(text, render_block(saved["verdicts"])), saved["stats"])
    return expected == text


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="result folders of the claim experiments")
    parser.add_argument("--json", required=True, help="collected verdict records (written, or read with --check)")
    parser.add_argument("--markdown", required=True, help="markdown file with the verdict markers")
    parser.add_argument("--check", action="store_true", help="only check that the markdown matches the JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.check:
            ok = check(args.markdown, args.json)
            print("verdict block matches" if ok else "verdict block differs from the records")
            return 0 if ok else 1
        out_json, md = output_file("--json", args.json), output_file("--markdown", args.markdown)
        records = collect(args.folders)
        text = md.read_text()
        stats = collect_stats(text, args.folders)
        rendered = fill_stats(replace_block(text, render_block(records)), stats)
        payload = json.dumps({"verdicts": records, "stats": stats}, indent=2) + "\n"
        write_text_atomic(out_json, payload)
        write_text_atomic(md, rendered)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:  # a record or key of the wrong shape
        return report_error(PROG, ValueError(f"malformed verdict record or stat value ({type(exc).__name__}: {exc})"))
    except Exception as exc:
        return report_error(PROG, exc)
    print(f"{len(records)} verdicts -> {args.json}, {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
