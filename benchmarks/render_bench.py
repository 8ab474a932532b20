"""Render ``docs/benchmarks.md`` (and the README's network-speed table) from a ``bench_nn.py --json`` file.

Nothing here is typed by hand: every number, the machine line and the goal verdicts come from the JSON.
The goals are those of the speed issue (CPU, batch 256 for time, batch 1 024 for memory):

* the CNNs (the GroupNorm CNN ``cnn`` and the tanh DP image CNN ``dpcnn``) and WRN: dpbasin step time
  ≤ 1.3 × the non-private step, ≥ 2 × the samples/s of Opacus hooks and ≥ 1.5 × that of Opacus ghost
  clipping; dpbasin peak memory ≤ 1.3 × non-private;
* MLP: no regression against the engine before the speed work (``--compare`` JSON of
  ``bench_nn.py --models mlp --compare-engine OLD_ENGINE``, when given).

Run:  python benchmarks/render_bench.py benchmarks/results/bench_nn_cpu.json --out docs/benchmarks.md --readme README.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

METHOD_LABELS = {
    "nonprivate": "non-private",
    "dpbasin": "dpbasin",
    "opacus_hooks": "Opacus hooks",
    "opacus_ghost": "Opacus ghost",
}
# (model key, ratio key, comparison, bound, what it says)
GOALS = [
    (key, ratio, op, bound, text)
    for key in ("cnn", "dpcnn", "wrn")
    for ratio, op, bound, text in (
        ("dp_over_nonprivate", "<=", 1.3, "step time / non-private"),
        ("speedup_vs_opacus_hooks", ">=", 2.0, "samples/s / Opacus hooks"),
        ("speedup_vs_opacus_ghost", ">=", 1.5, "samples/s / Opacus ghost"),
        ("memory_dp_over_nonprivate", "<=", 1.3, "peak memory / non-private"),
    )
]
README_START, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _num(v, spec: str, suffix: str = "") -> str:
    return format(v, spec) + suffix if isinstance(v, (int, float)) and not math.isnan(v) else "n/a"


def table(data: dict) -> str:
    """The markdown table: samples/s per method, the three time ratios and the memory ratio."""
    cfg = data["config"]
    rows = [
        "| model | parameters | batch | "
        + " | ".join(f"{label} samples/s" for label in METHOD_LABELS.values())
        + " | dp / non-private (time) | vs Opacus hooks | vs Opacus ghost "
        + f"| peak memory dp / non-private (batch {cfg.get('mem_batch')}) |",
        "|---|--:|--:|" + "--:|" * len(METHOD_LABELS) + "--:|--:|--:|--:|",
    ]
    for key, r in data["models"].items():
        s, q = r["samples_per_s"], r["ratios"]
        rows.append(
            f"| {key}: {r['description']} | {r['parameters']:,} | {r['batch']} | "
            + " | ".join(_num(s.get(m), ",.0f") for m in METHOD_LABELS)
            + "".join(
                f" | {_num(q.get(k), '.2f', '×')}"
                for k in (
                    "dp_over_nonprivate",
                    "speedup_vs_opacus_hooks",
                    "speedup_vs_opacus_ghost",
                    "memory_dp_over_nonprivate",
                )
            )
            + " |"
        )
    return "\n".join(rows)


def memory_table(data: dict) -> str:
    rows = [
        "| model | " + " | ".join(f"{label} MiB" for label in METHOD_LABELS.values()) + " |",
        "|---|" + "--:|" * len(METHOD_LABELS),
    ]
    for key, r in data["models"].items():
        m = r.get("peak_memory_mb", {})
        rows.append(f"| {key} | " + " | ".join(_num(m.get(k), ",.0f") for k in METHOD_LABELS) + " |")
    return "\n".join(rows)


def verdicts(data: dict, compare: dict | None = None) -> list[dict]:
    """One entry per goal: measured value, bound, met (None when not measured) and the margin."""
    out = []
    for key, ratio, op, bound, text in GOALS:
        value = data["models"].get(key, {}).get("ratios", {}).get(ratio)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        margin = None if value is None else (value / bound - 1 if op == "<=" else 1 - value / bound)
        out.append(dict(model=key, ratio=ratio, text=text, op=op, bound=bound, value=value, met=met, margin=margin))
    if compare is not None:
        r = compare["models"]["mlp"]["ratios"].get("dpbasin_over_compare_engine_time")
        # time of this engine / time of the old one; "no regression" = within 5 % (timing noise on a shared machine)
        out.append(
            dict(
                model="mlp",
                ratio="dpbasin_over_compare_engine_time",
                text="step time / engine before the speed work",
                op="<=",
                bound=1.05,
                value=r,
                met=None if r is None else r <= 1.05,
                margin=None if r is None else r / 1.05 - 1,
            )
        )
    return out


def _verdict_rows(goals: list[dict]) -> str:
    rows = ["| model | measure | goal | measured | verdict |", "|---|---|--:|--:|---|"]
    for g in goals:
        if g["met"] is None:
            verdict = "not measured"
        elif g["met"]:
            verdict = "met"
        else:
            verdict = f"**missed** by {100 * g['margin']:.0f} %"
        rows.append(
            f"| {g['model']} | {g['text']} | {g['op']} {g['bound']:g} | {_num(g['value'], '.2f')} | {verdict} |"
        )
    return "\n".join(rows)


def _machine_line(cfg: dict) -> str:
    m = cfg.get("machine", {})
    load = m.get("load_average_at_start")
    load_s = "n/a" if not load else " / ".join(f"{v:.1f}" for v in load)
    parts = [
        f"{m.get('cpu', 'unknown CPU')} ({m.get('logical_cores', '?')} logical cores)",
        f"load average at start {load_s} (1 / 5 / 15 min)",
        f"{cfg.get('threads')} torch thread(s)",
        f"torch {cfg.get('torch')}",
        f"Opacus {cfg.get('opacus')}",
        f"Python {m.get('python', '?')}",
        f"device {cfg.get('device')}" + (f" ({m['gpu']})" if m.get("gpu") else ""),
    ]
    return "; ".join(parts)


def profile_table(prof: dict) -> str:
    """Per-step milliseconds (``profile_bk.py``): where dpbasin's extra time over the non-private step goes."""
    rows = [
        "| model | non-private ms | dpbasin ms | extra ms | per-sample norms | GroupNorm/LayerNorm closed forms "
        "| clipped weight sums | rest − non-private (forward, δ-backward, hooks, noise) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, r in prof["models"].items():
        ms = r["median_ms"]
        extra = ms["dpbasin"] - ms["nonprivate"]
        parts = [ms["norms"], ms["norm_layers"], ms["sums"], ms["rest"] - ms["nonprivate"]]
        rows.append(
            f"| {key} | {ms['nonprivate']:.1f} | {ms['dpbasin']:.1f} | {extra:.1f} | "
            + " | ".join(f"{v:.1f}" for v in parts)
            + " |"
        )
    return "\n".join(rows)


def render(
    data: dict,
    source: str,
    compare: dict | None = None,
    compare_source: str | None = None,
    prof: dict | None = None,
    prof_source: str | None = None,
) -> str:
    cfg = data["config"]
    goals = verdicts(data, compare)
    lines = [
        "# Network DP-SGD step: speed and memory",
        "",
        f"Generated by `benchmarks/render_bench.py` from `{source}` (written by `benchmarks/bench_nn.py --json`);",
        "do not edit by hand.",
        "",
        f"Machine: {_machine_line(cfg)}.",
        "",
        f"Time: {cfg.get('time')}; batch {cfg.get('batch')}, C = {cfg.get('clip_norm')}, "
        f"σ = {cfg.get('noise_multiplier')}. Memory: {cfg.get('memory')}; batch {cfg.get('mem_batch')}.",
        "Rounds timed per model: "
        + ", ".join(f"{k} {r.get('timed_rounds')}" for k, r in data["models"].items())
        + ". dpbasin's per-sample method: "
        + ", ".join(f"{k} `{r.get('dpbasin_per_sample_method')}`" for k, r in data["models"].items())
        + ".",
        "",
        table(data),
        "",
        f"Peak memory over each process's own baseline at batch {cfg.get('mem_batch')}:",
        "",
        memory_table(data),
        "",
    ]
    errors = [(k, m, e) for k, r in data["models"].items() for m, e in r.get("errors", {}).items()]
    if errors:
        lines += ["Not measured / errors:", ""] + [f"* {k}, {m}: {e}" for k, m, e in errors] + [""]
    lines += ["## Goals", "", _verdict_rows(goals), ""]
    if compare is not None:
        r = compare["models"]["mlp"]
        s = r["samples_per_s"]
        lines += [
            f"MLP regression check (`{compare_source}`, its own interleaved run, {r.get('timed_rounds')} rounds): "
            f"dpbasin {_num(s.get('dpbasin'), ',.0f')} samples/s vs the engine before the speed work "
            f"{_num(s.get('dpbasin_compare'), ',.0f')} samples/s (non-private {_num(s.get('nonprivate'), ',.0f')}).",
            "",
        ]
    if prof is not None:
        first = next(iter(prof["models"].values()))
        lines += [
            "## Where the extra time goes",
            "",
            f"`{prof_source}` (`benchmarks/profile_bk.py`: wall-clock timers around the per-sample kernels, "
            f"non-private and dpbasin steps alternating, median of {first['rounds']} rounds at batch "
            f"{first['batch']}, {prof.get('threads')} thread; a separate run from the table above, so its "
            "totals differ from it by the machine's load):",
            "",
            profile_table(prof),
            "",
        ]
        for g in goals:
            rec = prof["models"].get(g["model"], {})
            r = rec.get("median_ms")
            if g["met"] is not False or r is None:
                continue
            if g["ratio"] == "dp_over_nonprivate":
                sps = data["models"][g["model"]]["samples_per_s"]
                np_ms, dp_ms = (1e3 * data["config"]["batch"] / sps[m] for m in ("nonprivate", "dpbasin"))
                kernels = r["norms"] + r["norm_layers"] + r["sums"]
                lines += [
                    f"* {g['model']}, time: in the table's run dpbasin's step takes {dp_ms:.1f} ms against "
                    f"{np_ms:.1f} ms non-private (+{dp_ms - np_ms:.1f} ms). In the profile run the per-sample "
                    f"kernels alone take {kernels:.1f} ms per step (norms {r['norms']:.1f}, norm-layer closed forms "
                    f"{r['norm_layers']:.1f}, clipped sums {r['sums']:.1f}), which the backward without weight "
                    "gradients only partly pays back."
                ]
        lines += [""]
    for g in goals:
        r = data["models"].get(g["model"], {})
        if g["met"] is not False:
            continue
        s, q = r["samples_per_s"], r["ratios"]
        if g["ratio"] == "speedup_vs_opacus_hooks" and s.get("opacus_hooks") and s.get("nonprivate"):
            hooks = s["nonprivate"] / s["opacus_hooks"]
            lines += [
                f"* {g['model']}, vs Opacus hooks: here Opacus hooks' step is only {hooks:.2f}× the non-private "
                f"step ({r['parameters']:,} parameters: its per-sample gradients are small), so ≥ {g['bound']:g}× "
                f"needs dpbasin within {hooks / g['bound']:.2f}× of the non-private step; it is at "
                f"{_num(q.get('dp_over_nonprivate'), '.2f')}×."
            ]
        if g["ratio"] == "memory_dp_over_nonprivate":
            mem = r.get("peak_memory_mb", {})
            held = None if prof is None else prof["models"].get(g["model"], {}).get("held_mib")
            pb = None if prof is None else prof["models"].get(g["model"], {}).get("batch")
            line = (
                f"* {g['model']}, memory: dpbasin peaks {_num(mem.get('dpbasin'), ',.0f')} MiB against "
                f"{_num(mem.get('nonprivate'), ',.0f')} MiB non-private (+{_num(mem['dpbasin'] - mem['nonprivate'], ',.0f')} MiB)"
            )
            if held is not None and pb:
                line += (
                    f"; book-keeping holds each layer's (a, δ) pair (or its kept per-sample gradients) from the "
                    f"backward until the clipped sums, {held * data['config']['mem_batch'] / pb:,.0f} MiB at batch "
                    f"{data['config']['mem_batch']} (profile run: {held:,.0f} MiB at batch {pb}, scaled), memory the "
                    "non-private backward frees layer by layer"
                )
            lines += [line + "."]
    lines += [""]
    missed = [g for g in goals if g["met"] is False]
    met = [g for g in goals if g["met"]]
    lines += [
        f"{len(met)} of {len(goals)} goals met, {len(missed)} missed, {len(goals) - len(met) - len(missed)} not measured."
    ]
    return "\n".join(lines) + "\n"


def readme_block(data: dict, source: str, compare: dict | None = None) -> str:
    cfg = data["config"]
    goals = verdicts(data, compare)
    met = [f"{g['model']} {g['text']}" for g in goals if g["met"]]
    missed = [
        f"{g['model']} {g['text']} ({_num(g['value'], '.2f')}, goal {g['op']} {g['bound']:g})"
        for g in goals
        if g["met"] is False
    ]
    return (
        f"{README_START}\n"
        f"One DP-SGD step on a network (forward, per-sample clipping at C = {cfg.get('clip_norm')}, noise, update), "
        f"one run of `{cfg.get('command', 'python benchmarks/bench_nn.py --threads 1')}` on {_machine_line(cfg)}; "
        "all methods timed "
        f"interleaved in one process on the same weights and batch (`{source}`; rendered by "
        "`benchmarks/render_bench.py`, with peak memory, goals and a time breakdown in "
        "[docs/benchmarks.md](docs/benchmarks.md)):\n\n"
        f"{table(data)}\n\n"
        f"Goals met: {'; '.join(met) or 'none'}. Missed: {'; '.join(missed) or 'none'}.\n"
        f"{README_END}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="bench_nn.py --json output")
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--compare", default=None, help="bench_nn.py --models mlp --compare-engine OLD --json output")
    ap.add_argument("--profile", default=None, help="profile_bk.py --json output")
    ap.add_argument("--readme", default=None, help="replace the block between bench-nn markers in this file")
    args = ap.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    compare = json.loads(Path(args.compare).read_text()) if args.compare else None
    prof = json.loads(Path(args.profile).read_text()) if args.profile else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(data, args.json, compare, args.compare, prof, args.profile))
    if args.readme:
        text = Path(args.readme).read_text()
        pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{args.readme} has no {README_START} … {README_END} block")
        Path(args.readme).write_text(pattern.sub(lambda _: readme_block(data, args.json, compare), text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
