"""The study's report, ``report.md``: one section per claim, drawn from the manifest and the result folders.

Reads only files: the manifest written by ``python -m simulations.study`` (``study-<scale>.json``:
every experiment's claims, command, folder, key) and each folder's ``metrics.json``. For every claim
the report gives the claim, then per experiment the command and folder behind its numbers, a table
of theory beside measurement, the experiment's verdict records (``metrics["verdicts"]``, or the
network experiments' own criteria) and its figures with captions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLAIMS = {
    1: "DP-SGD progresses more slowly early, but the **late** phase determines the final result.",
    2: "Noise introduces errors that gradient descent **recovers** from when gradients are not clipped; "
    "**clipping** has the larger impact.",
    3: "Both effects are **amplified in higher dimensions**, where the loss basin occupies a lower-dimensional space.",
    4: "**Magnitude pruning** is a suitable dimension reduction; heavy pruning can improve DP-SGD test accuracy.",
}

CAPTIONS = {
    "basin_dim": "Synthetic rank-r basin in d dimensions, four ablation modes. Left: stationary excess loss; "
    "middle: fraction of clipped per-sample gradients; right: steps to recover 90 % of a displacement. "
    "Lines: mean-field theory (`dptheory.clipped_dynamics`); points: Monte Carlo ± k SE (batch means), "
    "offset slightly in d so coinciding modes stay visible.",
    "basin_dim_heldout": "The same runs: squared error in the flat directions (a random walk the training loss "
    "cannot see) and the held-out loss, curved where training is flat. Lines: theory; points: simulation ± k SE.",
    "recovery": "Recovery after a displacement at stationarity: excess loss over the stationary level, "
    "normalised by its initial value, per d (first panels; dotted: the recovery threshold), and the recovery "
    "time vs d (last panel). Lines: theory; points: simulation ± k SE (bootstrap over replicas).",
    "switch": "Switching between SGD and DP-SGD at step s of T, both directions. Left: final training loss "
    "(thick: mean-field theory; thin dotted: the linear model); right: held-out loss. Points: simulation ± k SE.",
    "switch_curves": "The two pure runs step by step from a large initial error (the early phase): mean-field "
    "theory lines, simulated means ± k SE; the dotted vertical line marks the 'early' step of the table.",
    "prune": "Magnitude pruning at fixed ε: stationary excess loss vs the fraction of weights kept, for a basin "
    "aligned with the coordinate axes and a rotated one. Lines: theory (pruning bias + DP term); filled points: "
    "simulation ± k SE; open points: not yet stationary at T (compare with care). Oracle masks use the optimum "
    "and are not private.",
    "net_ablate": "Networks (mnist1d MLP): final test accuracy per mode (mean ± 1 SE over seeds) and the excess "
    "training loss after a weight burst, with and without clipping.",
    "net_switch": "Networks: final test accuracy after switching between SGD and DP-SGD at epoch s; horizontal "
    "lines: the pure runs. DP-SGD → SGD runs are not private.",
    "net_width": "Networks: test accuracy and the SGD − DP-SGD gap vs the parameter count d (MLP width), at "
    "fixed ε (σ calibrated) and at fixed σ; mean ± 1 SE over seeds.",
    "net_prune": "Networks: DP-SGD test accuracy at a fixed total ε vs the fraction of weights pruned, per mask "
    "source; private masks spend part of ε (composed); oracle masks are not private.",
    "net_epsilon": "Networks: DP-SGD test accuracy vs ε (σ calibrated per ε; RDP ε, PLD ε in the table), dense "
    "and pruned with a public magnitude mask (no privacy cost), with the ε = ∞ anchors SGD and clip only "
    "(mean ± 1 SE over seeds; each arm's lr tuned per ε on the validation split).",
    "net_basin": "Theory vs networks: DP-SGD arms warm-started at a converged minimum w* of the regularised "
    "objective; x: the spectral model's excess (arm − SGD, window average) from the measured Hessian spectrum "
    "(top-k + SLQ) and per-example gradients; y: the measured paired excess ± k SE over seeds; filled: the arm ran "
    "≥ 5 relaxation times of the slowest direction that matters; grey band: ±25 %. C is set from measured norms: "
    "not private.",
}


def _num(x: Any) -> float:
    if isinstance(x, dict):
        x = x.get("mean", math.nan)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def pm(est: Any, k: float = 1.0, scale: float = 1.0) -> str:
    """``mean ± k·SE`` of an estimate record ``{"mean", "se"}``."""
    if not isinstance(est, dict):
        return fmt(est)
    return f"{fmt(_num(est['mean']) * scale)} ± {fmt(k * _num(est.get('se', math.nan)) * scale, 2)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- numbers


def numbers_basin_dim(m: dict) -> str:
    k = float(m.get("k_se", 2))
    rows = []
    for r in m["rows"]:
        if r["mode"] not in ("clip", "dpsgd", "sgd"):
            continue
        rows.append(
            [
                str(r["dim"]),
                r["mode"],
                fmt(r["pred_clip_fraction"]),
                fmt(r["pred_loss"]),
                pm(r["sim_loss"], k),
                fmt(r["pred_recovery_time"]),
                f"{fmt(r['sim_recovery_time'])} ± {fmt(k * _num(r['sim_recovery_time_se']), 2)}",
            ]
        )
    head = [
        "d",
        "mode",
        "clip fraction (theory)",
        "loss theory",
        f"loss simulated ± {k:g} SE",
        "recovery theory",
        "recovery simulated",
    ]
    inside = m.get("loss_rows_within_ci")
    note = f"\n\nStationary loss within ± {k:g} SE of the theory: {inside} of {len(m['rows'])} rows (all four modes)."
    return table(head, rows) + (note if inside is not None else "")


def numbers_recovery(m: dict) -> str:
    k = float(m.get("k_se", 2))
    rows = [
        [
            str(r["dim"]),
            r["mode"],
            fmt(r["pred_stationary"]),
            pm(r["sim_stationary"], k),
            fmt(r["pred_recovery_time"]),
            f"{fmt(r['sim_recovery_time'])} ± {fmt(k * _num(r['sim_recovery_time_se']), 2)}",
        ]
        for r in m["rows"]
    ]
    return table(
        ["d", "mode", "stationary loss theory", f"simulated ± {k:g} SE", "recovery theory (steps)", "simulated"], rows
    )


def numbers_switch(m: dict) -> str:
    k = float(m.get("k_se", 2))
    rows = [
        [
            r["direction"],
            str(r["switch_step"]),
            fmt(r["pred_mean_field"]),
            pm(r["sim_loss"], k),
            fmt(r["pred_heldout_linear"]),
            pm(r["sim_heldout"], k),
        ]
        for r in m["rows"]
    ]
    horizon = ", ".join(f"{mode} {fmt(h)}" for mode, h in m.get("memory_horizon", {}).items())
    return (
        table(["direction", "switch step", "training loss theory", "simulated", "held-out theory", "simulated"], rows)
        + f"\n\nMemory horizon (steps until a phase's influence falls below 5 %): {horizon}."
    )


def numbers_prune(m: dict) -> str:
    k = float(m.get("k_se", 2))
    rows = [
        [
            r["basis"],
            f"{r['mask']} ({r['privacy']})" if r["mask"] == "oracle" else r["mask"],
            f"{_num(r['keep_fraction']):.3g}",
            fmt(r["pred_loss"]),
            pm(r["sim_loss"], k),
            "yes" if r.get("stationary", True) else "no",
        ]
        for r in m["rows"]
    ]
    return (
        table(["basis", "mask", "keep fraction", "loss theory", f"simulated ± {k:g} SE", "stationary"], rows)
        + f"\n\nEvery point at ε = {fmt(m.get('epsilon'))} (δ = {fmt(m.get('delta'))}, {m.get('accountant', 'rdp')})."
    )


def paired(t: Any, scale: float = 100.0) -> str:
    """A paired test record as "estimate [lo, hi]" (scaled; its 95 % CI)."""
    ci = t.get("ci95") or [math.nan, math.nan]
    return f"{fmt(_num(t['estimate']) * scale)} [{fmt(_num(ci[0]) * scale)}, {fmt(_num(ci[1]) * scale)}]"


def numbers_net_ablate(m: dict) -> str:
    diff = m.get("accuracy_minus_sgd", {})
    rows = [[arm, pm(v, 1, 100), paired(diff[arm]) if arm in diff else "–"] for arm, v in m["test_accuracy"].items()]
    text = table(["arm (each tuned)", "test accuracy % (mean ± 1 SE)", "minus SGD, points [95 % CI]"], rows)
    for ref, t in m.get("noise_minus_clip", {}).items():
        text += f"\n\n{ref} − clip only: {paired(t)} points (paired by seed)."
    for arm, r in m.get("burst", {}).items():
        text += f" Burst in {arm}: recovered {pm(r['recovered_fraction'], 1, 100)} % of the excess loss."
    return text


def numbers_net_switch(m: dict) -> str:
    parts = []
    for schedule, s in m["per_schedule"].items():
        rows = [
            [
                str(r["switch_epoch"]),
                pm(r["acc_sgd_then_dpsgd"], 1, 100),
                pm(r["acc_dpsgd_then_sgd"], 1, 100),
                paired(r["dominance_numerator"]) if isinstance(r.get("dominance_numerator"), dict) else "–",
            ]
            for r in s["per_switch"]
        ]
        head = ["switch epoch", "SGD → DP-SGD acc %", "DP-SGD → SGD acc %", "late − early phase, points [95 % CI]"]
        parts.append(
            f"**{schedule} lr.** "
            + f"Pure runs: SGD {pm(s['acc_sgd'], 1, 100)} %, DP-SGD {pm(s['acc_dpsgd'], 1, 100)} %.\n\n"
            + table(head, rows)
        )
    return "\n\n".join(parts)


def numbers_net_width(m: dict) -> str:
    rows = [
        [
            str(r.get("width", "–")),
            str(r["dim"]),
            pm(r["sgd"]["test_accuracy"], 1, 100),
            pm(r["dpsgd"]["test_accuracy"], 1, 100),
            paired(r["gap_sgd_minus_dpsgd"]),
            pm(r["clip_fraction"], 1, 1),
        ]
        for r in m["per_width"]
    ]
    head = ["width", "parameters d", "SGD acc %", "DP-SGD (fixed ε) acc %", "gap, points [95 % CI]", "clip fraction"]
    return table(head, rows)


def numbers_net_prune(m: dict) -> str:
    rows = [
        [
            str(r["arm"]),
            f"{_num(r['sparsity']):.2f}",
            pm(r["test_accuracy"], 1, 100),
            paired(r["minus_dense"]) if isinstance(r.get("minus_dense"), dict) else "–",
            ", ".join(r.get("privacy", [])),
        ]
        for r in m["per_source"]
    ]
    head = ["mask (arm)", "sparsity", "test acc %", "minus dense DP-SGD, points [95 % CI]", "label"]
    return (
        table(head, rows)
        + f"\n\nDense SGD: {pm(m['sgd_dense'], 1, 100)} %; dense DP-SGD: {pm(m['dpsgd_dense'], 1, 100)} %."
    )


def numbers_net_epsilon(m: dict) -> str:
    rows = [
        [
            fmt(r["epsilon"]),
            fmt(r["noise_multiplier"]),
            f"{fmt(r['dense']['epsilon_rdp'])} / {fmt(r['dense']['epsilon_pld'])}",
            pm(r["dense"]["test_accuracy"], 1, 100),
            pm(r["pruned"]["test_accuracy"], 1, 100),
            paired(r["pruned_minus_dense"]),
            paired(r["clip_minus_dense"]),
        ]
        for r in m["curve"]
    ]
    head = [
        "target ε",
        "σ",
        "ε RDP / PLD",
        "dense DP-SGD acc %",
        "pruned DP-SGD acc %",
        "pruned − dense, points [95 % CI]",
        "clip only − dense, points [95 % CI]",
    ]
    return (
        table(head, rows)
        + f"\n\nAnchors at ε = ∞ (each tuned): SGD {pm(m['sgd'], 1, 100)} %, clip only {pm(m['clip'], 1, 100)} %."
    )


def numbers_net_basin(m: dict) -> str:
    rows = []
    summary = m.get("summary", {})
    for family in ("mlp", "linearised", "teacher"):
        block = summary.get(family)
        if not block:
            continue
        for name in ("model", "null_d", "null_sqrt_d"):
            a = block[name]
            fit = a["loglog"]
            rows.append(
                [
                    family,
                    name,
                    str(a["rows"]),
                    f"{_num(a['within_tolerance']):.0%}",
                    f"{_num(a['within_k_se']):.0%}",
                    f"{fmt(fit['slope'])} [{fmt(fit['slope_ci'][0])}, {fmt(fit['slope_ci'][1])}]",
                    fmt(a["rms_log10_error"]),
                ]
            )
    text = table(
        ["family", "predictor", "rows", "within 25 %", "within k SE", "log-log slope [95 % CI]", "RMS log10"], rows
    )
    for check in summary.get("linearised", {}).get("noise_only", []):
        text += f"\n\nLinearised noise-only σ={fmt(check['noise_multiplier'])} ({check['prediction']}): z = {fmt(check['z'])}."
    return text


NUMBERS: dict[str, Callable[[dict], str]] = {
    "basin_dim": numbers_basin_dim,
    "recovery": numbers_recovery,
    "switch": numbers_switch,
    "prune": numbers_prune,
    "net_ablate": numbers_net_ablate,
    "net_switch": numbers_net_switch,
    "net_width": numbers_net_width,
    "net_prune": numbers_net_prune,
    "net_epsilon": numbers_net_epsilon,
    "net_basin": numbers_net_basin,
}


# --------------------------------------------------------------------------------------- verdicts


def verdict_records(metrics: dict) -> list[dict]:
    """The verdict records of an experiment: ``verdicts`` (list) / ``verdict`` (record or list), else the
    network experiments' boolean criteria (``clipping_hurts_more``, ``grows_with_d``, …) as records."""
    for key in ("verdicts", "verdict"):
        v = metrics.get(key)
        if isinstance(v, list):
            return [r for r in v if isinstance(r, dict)]
        if isinstance(v, dict):
            return [v]
    found = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(v, bool) and k not in ("private", "stationary"):
                    found.append(
                        {"statement": f"{path}{k.replace('_', ' ')}", "held": v, "test": metrics.get("criterion", "")}
                    )
                elif isinstance(v, dict):
                    walk(v, f"{path}{k}: ")

    walk(metrics, "")
    return found


def render_verdicts(records: list[dict]) -> str:
    if not records:
        return "_No verdict record in this result folder._"
    rows = []
    for v in records:
        scale = float(v.get("scale", 1.0) or 1.0)
        est = v.get("estimate")
        ci = v.get("ci95") or []
        ci_text = (
            f"[{fmt(_num(ci[0]) * scale)}, {fmt(_num(ci[1]) * scale)}]"
            if len(ci) == 2 and not math.isnan(_num(ci[0]))
            else "–"
        )
        held = v.get("held")
        rows.append(
            [
                str(v.get("claim", "")),
                str(v.get("statement", "")),
                str(v.get("test", "")),
                fmt(_num(est) * scale) if est is not None else "–",
                ci_text,
                fmt(v.get("theory")) if "theory" in v else "–",
                fmt(v.get("p_value")) if "p_value" in v else "–",
                "**held**" if held is True else ("**not held**" if held is False else "–"),
            ]
        )
    return table(["claim", "statement", "test", "estimate", "95 % CI", "theory", "p", "verdict"], rows)


# ------------------------------------------------------------------------------------------ report


def write_report(
    manifest: dict, figures: dict[str, list[str]], build: Path, *, failures: dict[str, str] | None = None
) -> Path:
    """Write ``build/report.md`` from the manifest, the folders and the drawn figures (name → files)."""
    failures = failures or {}
    experiments = manifest["experiments"]
    lines = [
        "# dpbasin: the study",
        "",
        f"Scale: **{manifest['scale']}**. Every number below is read from the result folder named beside it; "
        "each folder's `config.json` holds the full configuration, `run.json` the run key (config + code version) "
        "and `env.json` the package versions. Rerun everything with `python -m paper"
        + (" --quick" if manifest["scale"] == "quick" else "")
        + "` (stored results are reused).",
        "",
        "Conventions in every figure: **lines are theory, points are measurements** with ± k SE error bars "
        "(k stated per figure; networks: ± 1 SE over seeds); open markers are points that do not meet the theory's "
        "assumption (named in the legend); each mode keeps its colour, marker and line style in every figure.",
        "",
        "| experiment | claims | status | seconds | result folder |",
        "|---|---|---|---|---|",
    ]
    for e in experiments:
        status = "reused" if e.get("reused") else e["status"]
        lines.append(
            f"| {e['name']} | {', '.join(map(str, e['claims']))} | {status} | {e.get('seconds', 0):.1f} | `{e['folder']}` |"
        )
    for claim, text in CLAIMS.items():
        members = [e for e in experiments if claim in e["claims"]]
        if not members:
            continue
        lines += ["", f"## Claim {claim}", "", f"> {text}", ""]
        for e in members:
            lines += [
                f"### {e['title']}",
                "",
                f"Command: `{e['command']}`  ",
                f"Result folder: `{e['folder']}` (key `{e['key'][:12]}`)",
                "",
            ]
            if e["status"] != "ok":
                lines += [f"**This experiment failed**: {e.get('error', 'unknown error')}", ""]
                continue
            try:
                metrics = json.loads((Path(e["folder"]) / "metrics.json").read_text())
            except (OSError, ValueError) as exc:
                lines += [f"_Result folder unreadable: {exc}_", ""]
                continue
            recs = [v for v in verdict_records(metrics) if str(v.get("claim", claim)) in (str(claim), "")]
            lines += ["**Verdicts**", "", render_verdicts(recs), ""]
            fn = NUMBERS.get(e["name"])
            if fn is not None:
                try:
                    lines += ["**Theory and measurement**", "", fn(metrics), ""]
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    lines += [f"_Numbers not rendered ({type(exc).__name__}: {exc})._", ""]
            for path in figures.get(e["name"], []):
                name = Path(path).stem
                lines += [f"![{name}]({Path(path).name})", "", f"*Figure `{name}`.* {CAPTIONS.get(name, '')}", ""]
            if e["name"] in failures:
                lines += [f"_Figure not drawn: {failures[e['name']]} (the results are in `{e['folder']}`)._", ""]
    build.mkdir(parents=True, exist_ok=True)
    report_path = build / "report.md"
    report_path.write_text("\n".join(lines) + "\n")
    return report_path
