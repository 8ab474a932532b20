"""docs/theory-vs-networks.md's numbers, rendered mechanically from a basin result folder.

``python -m simulations.nn basin`` writes ``metrics.json`` (rows of predicted against measured
excess, recovery rows, the per-family ``summary``). This module reads that folder only (it never
trains) and

1. condenses it into a small JSON (``--json``, committed as ``docs/basin-summary.json``): the run,
   the agreement per family (share within the tolerance, within k SE, log–log slope and intercept
   with 95 % CIs, RMS log error) for the model with per-example curvatures, the model with the
   mean-Hessian drift and the two null predictors ∝ d and ∝ √d, per arm (clip-lag: ``clip``; noise:
   ``noise``; both: ``dpsgd``), the linearised network's noise-only checks, the teacher–student
   dimension slopes, the recovery rows, and every row outside the tolerance with the measured facts
   that classify it (:func:`classify`);
2. replaces the block between ``<!-- basin:begin -->`` and ``<!-- basin:end -->`` of ``--markdown``
   with the rendering of that JSON (:func:`render_block`).

``--check`` instead exits 1 if the markdown's block differs from what the JSON renders to (the test
suite runs that check on the committed docs), so the page cannot drift from the run::

    python -m paper.basin_doc results/nn/basin --json docs/basin-summary.json \\
        --markdown docs/theory-vs-networks.md --readme README.md [--cpu-seconds S]
    python -m paper.basin_doc --check --json docs/basin-summary.json --markdown docs/theory-vs-networks.md \\
        --readme README.md

``--readme`` also fills the README's block (between the same markers) with a short version
(:func:`render_readme`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from paper import blocks

PROG = "python -m paper.basin_doc"
BEGIN = "<!-- basin:begin -->"
END = "<!-- basin:end -->"
ARMS = ("clip", "noise", "dpsgd")
ARM_TERMS = {"clip": "clip-lag only", "noise": "noise only", "dpsgd": "clip-lag + noise"}
FAMILY_NAMES = {
    "mlp": "MLPs warm-started at w* (mnist1d)",
    "linearised": "linearised network (exact quadratic)",
    "teacher": "teacher–student (rank K, input dimension D)",
}


def _f(x: Any) -> float:
    """A stored number (JSON writes non-finite floats as strings)."""
    return float(x) if x is not None else math.nan


def _fit(a: dict[str, Any]) -> dict[str, Any]:
    """The compact form of one ``simulations.common.agreement.agreement`` record."""
    fit = a["loglog"]
    return {
        "rows": a["rows"],
        "within_tolerance": a["within_tolerance"],
        "within_k_se": a["within_k_se"],
        "slope": fit["slope"],
        "slope_ci": fit["slope_ci"],
        "intercept": fit["intercept"],
        "intercept_ci": fit["intercept_ci"],
        "fit_rows": fit["n"],
        "excluded": fit["excluded"],
        "rms_log10_error": a["rms_log10_error"],
    }


def classify(row: dict[str, Any], *, k_se: float) -> list[str]:
    """Measured facts about a row outside the tolerance (each a short tag; several may apply).

    ``unresolved``: |measured| ≤ k SE (the excess is not distinguished from SGD's); ``not-relaxed``:
    the arm ran fewer than the required relaxation times; ``sign``: prediction and measurement have
    opposite signs; ``over`` / ``under``: the model over- or under-predicts (by more than the
    tolerance); ``clipped``: the measured clip fraction is ≥ 0.5.
    """
    m, se, p = _f(row["measured_excess"]["mean"]), _f(row["measured_excess"]["se"]), _f(row["predicted_excess"])
    tags = []
    if abs(m) <= k_se * se:
        tags.append("unresolved")
    if not row["relaxation"]["relaxed"]:
        tags.append("not-relaxed")
    if p * m < 0:
        tags.append("sign")
    elif abs(p) > abs(m):
        tags.append("over")
    else:
        tags.append("under")
    if _f(row["measured_clip_fraction"]["mean"]) >= 0.5:
        tags.append("clipped")
    return tags


def condense(metrics: dict[str, Any], *, folder: str, cpu_seconds: float | None = None) -> dict[str, Any]:
    """The small JSON of the page (module docstring) from a basin ``metrics.json``."""
    s = metrics["summary"]
    tol, k = float(s["tolerance"]), float(s["k_se"])
    rows = metrics["rows"]
    out: dict[str, Any] = {
        "command": "python -m simulations.nn basin",
        "folder": folder,
        "wall_seconds": metrics.get("seconds"),
        "cpu_seconds": metrics.get("cpu_seconds", cpu_seconds),
        "tolerance": tol,
        "k_se": k,
        "aggregation": s["aggregation"],
        "networks": [
            {
                "network": n["network"],
                "family": n["family"],
                "dim": n["dim"],
                "lambda_1": _f(n["top_eigenvalues"][0]),
                "steps": n["steps"],
                "lr_times_lambda1": None,
                "gradient_ratio": n["minimum"].get("gradient_ratio"),
                "converged": n["minimum"].get("converged"),
            }
            for n in metrics["networks"]
        ],
        "families": {},
    }
    for net in out["networks"]:
        r = next((r for r in rows if r["network"] == net["network"]), None)
        net["lr_times_lambda1"] = r["lr_times_lambda1"] if r else None
        net["relaxed_rows"] = sum(bool(x["relaxation"]["relaxed"]) for x in rows if x["network"] == net["network"])
        net["rows"] = sum(x["network"] == net["network"] for x in rows)
    for family in ("mlp", "linearised", "teacher"):
        if family not in s:
            continue
        b = s[family]
        fam_rows = [r for r in rows if r["family"] == family]
        block: dict[str, Any] = {
            "model": _fit(b["model"]),
            "null_d": _fit(b["null_d"]),
            "null_sqrt_d": _fit(b["null_sqrt_d"]),
            "model_beats_nulls": b["model_beats_nulls"],
            "per_arm": {a: _fit(v) for a, v in b["per_arm"].items()},
            "relaxed_rows": sum(bool(r["relaxation"]["relaxed"]) for r in fam_rows),
        }
        if "model_mean_hessian" in b:
            block["mean_hessian"] = _fit(b["model_mean_hessian"])
            block["per_arm_mean_hessian"] = {a: _fit(v) for a, v in b["per_arm_mean_hessian"].items()}
        if "exact" in b:
            block["exact"] = _fit(b["exact"])
        if "noise_only" in b:
            block["noise_only"] = b["noise_only"]
        if "dimension_slopes" in b:
            block["dimension_slopes"] = {
                arm: {
                    "input_dims": v["input_dims"],
                    "measured": {x: v["measured_vs_D"][x] for x in ("slope", "slope_ci", "n")},
                    "predicted": {x: v["predicted_vs_D"][x] for x in ("slope", "slope_ci", "n")},
                    "mean_clip_factor": {x: v["mean_clip_factor_vs_D"][x] for x in ("slope", "slope_ci", "n")},
                }
                for arm, v in b["dimension_slopes"].items()
            }
        terms = {}
        for arm in ARMS:
            sub = [r for r in fam_rows if r["arm"] == arm]
            if sub:
                terms[arm] = {
                    "predicted_bias": sum(_f(r["predicted_bias"]) for r in sub) / len(sub),
                    "predicted_noise": sum(_f(r["predicted_noise"]) for r in sub) / len(sub),
                    "measured": sum(_f(r["measured_excess"]["mean"]) for r in sub) / len(sub),
                }
        block["terms"] = terms
        failures = []
        for r in fam_rows:
            m, p = _f(r["measured_excess"]["mean"]), _f(r["predicted_excess"])
            if abs(p - m) <= tol * abs(m):
                continue
            failures.append(
                {
                    "network": r["network"],
                    "arm": r["arm"],
                    "noise_multiplier": r["noise_multiplier"],
                    "clip_factor": r["clip_factor"],
                    "predicted": p,
                    "predicted_mean_hessian": r.get("predicted_mean_hessian"),
                    "measured": r["measured_excess"],
                    "ratio": m / p if p else math.inf,
                    "clip_fraction": r["measured_clip_fraction"]["mean"],
                    "relaxation_times_run": r["relaxation"]["relaxation_times_run"],
                    "tags": classify(r, k_se=k),
                }
            )
        block["failures"] = failures
        out["families"][family] = block
    out["recovery"] = [
        {
            "network": r["network"],
            "arm": r["arm"],
            "direction": r["direction"],
            "predicted": r["predicted_recovery"],
            "measured": r["measured_recovery"],
            "retained": r["retained"],
            "note": r["prediction_note"],
        }
        for r in metrics.get("recovery", [])
    ]
    if "recovery" in s and s["recovery"].get("model"):
        out["recovery_model"] = _fit(s["recovery"]["model"])
    return out


# ---------------------------------------------------------------------------------------------
# rendering


def _pct(x: Any) -> str:
    x = _f(x)
    return "n/a" if math.isnan(x) else f"{100 * x:.0f} %"


def _num(x: Any, digits: int = 2) -> str:
    x = _f(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}f}"


def _g(x: Any, digits: int = 3) -> str:
    x = _f(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def _ci(ci: list[Any]) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _fit_cells(a: dict[str, Any]) -> list[str]:
    return [
        str(a["rows"]),
        _pct(a["within_tolerance"]),
        _pct(a["within_k_se"]),
        f"{_num(a['slope'])} {_ci(a['slope_ci'])}",
        f"{_num(a['intercept'])} {_ci(a['intercept_ci'])}",
        f"{a['fit_rows']} ({a['excluded']} ≤ 0 dropped)",
        _num(a["rms_log10_error"]),
    ]


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return lines


def _done_means(fam: dict[str, Any]) -> list[str]:
    m = fam["model"]
    lo, hi = m["slope_ci"]
    slope_ok = 0.9 <= _f(m["slope"]) <= 1.1
    return [
        f"≥ 80 % of rows within the tolerance: {'**met**' if _f(m['within_tolerance']) >= 0.8 else '**not met**'} "
        f"({_pct(m['within_tolerance'])});",
        f"log–log slope in [0.9, 1.1]: {'**met**' if slope_ok else '**not met**'} "
        f"({_num(m['slope'])}, 95 % CI [{_num(lo)}, {_num(hi)}]);",
        f"beats both nulls (lower RMS log error and at least their share within the tolerance): "
        f"{'**met**' if fam['model_beats_nulls'] else '**not met**'} (RMS log₁₀ error {_num(m['rms_log10_error'])} "
        f"vs ∝ d {_num(fam['null_d']['rms_log10_error'])}, ∝ √d {_num(fam['null_sqrt_d']['rms_log10_error'])}).",
    ]


def render_block(summary: dict[str, Any]) -> str:
    """The markdown block (between the markers) for a condensed summary (:func:`condense`)."""
    tol, k = _f(summary["tolerance"]), _f(summary["k_se"])
    L = [BEGIN, ""]
    cpu = summary.get("cpu_seconds")
    L.append(
        f"Run: `{summary['command']}` → `{summary['folder']}/metrics.json`; wall time "
        f"{_num(summary['wall_seconds'], 0)} s"
        + (f", CPU time {_num(cpu, 0)} s" if cpu is not None else "")
        + f". Tolerance {_pct(tol)} (relative to the measurement); SE agreement at {k:g} SE. "
        f"Aggregation: {summary['aggregation']}."
    )
    L += ["", "### Networks", ""]
    body = [
        [
            n["network"],
            n["family"],
            str(n["dim"]),
            _g(n["lambda_1"]),
            _num(n["lr_times_lambda1"]),
            str(n["steps"]),
            f"{n['relaxed_rows']}/{n['rows']}",
            _g(n["gradient_ratio"], 2),
        ]
        for n in summary["networks"]
    ]
    L += _table(["network", "family", "d", "λ₁", "ηλ₁", "steps T", "rows relaxed (T ≥ 5τ)", "‖ḡ‖/median‖g_i‖"], body)
    for family, fam in summary["families"].items():
        L += ["", f"### {FAMILY_NAMES.get(family, family)}", ""]
        header = ["predictor", "rows", f"within {_pct(tol)}", f"within {k:g} SE", "slope [95 % CI]"]
        header += ["intercept [95 % CI]", "fit rows", "RMS log₁₀ error"]
        body = [["model (per-example curvatures)" if "mean_hessian" in fam else "model", *_fit_cells(fam["model"])]]
        if "mean_hessian" in fam:
            body.append(["model, mean-Hessian drift", *_fit_cells(fam["mean_hessian"])])
        if "exact" in fam:
            body.append(["model on the exact spectrum (all d eigenpairs)", *_fit_cells(fam["exact"])])
        body.append(["null ∝ d (one fitted constant)", *_fit_cells(fam["null_d"])])
        body.append(["null ∝ √d (one fitted constant)", *_fit_cells(fam["null_sqrt_d"])])
        for arm, a in fam["per_arm"].items():
            body.append([f"model, {arm} arm ({ARM_TERMS[arm]})", *_fit_cells(a)])
        for arm, a in fam.get("per_arm_mean_hessian", {}).items():
            body.append([f"mean-Hessian model, {arm} arm", *_fit_cells(a)])
        L += _table(header, body)
        L += [
            "",
            f"Rows relaxed (T ≥ 5 relaxation times of the slowest direction that matters): "
            f"{fam['relaxed_rows']} of {fam['model']['rows']}.",
        ]
        if family == "mlp":
            L += ["", "Done-means on the warm-start grid:", ""] + [f"* {x}" for x in _done_means(fam)]
        L += ["", "Clip-lag and noise terms (row means of the model's split; measured = paired excess):", ""]
        body = [
            [
                arm,
                _g(t["predicted_bias"]),
                _g(t["predicted_noise"]),
                _g(t["predicted_bias"] + t["predicted_noise"]),
                _g(t["measured"]),
            ]
            for arm, t in fam["terms"].items()
        ]
        L += _table(["arm", "predicted clip-lag (bias)", "predicted noise", "predicted total", "measured"], body)
        if "noise_only" in fam:
            L += [
                "",
                "Noise-only arm on the linearised network (no clipping: the model is exact up to the "
                "measured spectrum):",
                "",
            ]
            body = [
                [
                    f"{c['noise_multiplier']:g}",
                    f"{c['clip_factor']:g}",
                    c["prediction"]
                    .replace("predicted_excess", "measured pipeline")
                    .replace("predicted_exact", "exact spectrum"),
                    _g(c["predicted"]),
                    f"{_g(c['measured']['mean'])} ± {_g(c['measured']['se'], 2)}",
                    f"{_f(c['z']):+.2f}",
                    "yes" if c["within_k_se"] else "**no**",
                ]
                for c in fam["noise_only"]
            ]
            L += _table(
                ["σ", "C / median", "prediction from", "predicted", "measured ± SE", "z", f"within {k:g} SE"], body
            )
        if "dimension_slopes" in fam:
            L += [
                "",
                "Excess against the teacher's input dimension D (log–log slope over D; √D scaling is slope 0.5):",
                "",
            ]
            body = []
            for arm, v in fam["dimension_slopes"].items():
                dims = ", ".join(f"{d:g}" for d in v["input_dims"])
                body.append(
                    [
                        arm,
                        dims,
                        f"{_num(v['measured']['slope'])} {_ci(v['measured']['slope_ci'])}",
                        f"{_num(v['predicted']['slope'])} {_ci(v['predicted']['slope_ci'])}",
                        f"{_num(v['mean_clip_factor']['slope'])} {_ci(v['mean_clip_factor']['slope_ci'])}",
                    ]
                )
            L += _table(["arm", "D", "measured slope", "predicted slope", "mean clip factor slope"], body)
        fails = fam["failures"]
        L += ["", f"Rows outside {_pct(tol)}: {len(fails)} of {fam['model']['rows']}."]
        if fails:
            counts: dict[str, int] = {}
            for f in fails:
                for t in f["tags"]:
                    counts[t] = counts.get(t, 0) + 1
            L.append(
                "Measured facts about them (a row may carry several): "
                + ", ".join(f"{t} {n}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                + " (unresolved: |measured| ≤ k SE; not-relaxed: T < 5τ; sign: opposite signs; over/under: "
                "the model's error direction; clipped: measured clip fraction ≥ 0.5)."
            )
            L.append("")
            body = [
                [
                    f["network"],
                    f["arm"],
                    f"{f['noise_multiplier']:g}",
                    f"{f['clip_factor']:g}",
                    _g(f["predicted"]),
                    _g(f["predicted_mean_hessian"]) if f.get("predicted_mean_hessian") is not None else "",
                    f"{_g(f['measured']['mean'])} ± {_g(f['measured']['se'], 2)}",
                    _g(f["ratio"], 2),
                    _num(f["clip_fraction"]),
                    _g(f["relaxation_times_run"], 2),
                    ", ".join(f["tags"]),
                ]
                for f in fails
            ]
            L += _table(
                [
                    "network",
                    "arm",
                    "σ",
                    "C/med",
                    "predicted",
                    "pred. mean-H",
                    "measured ± SE",
                    "meas/pred",
                    "clip frac",
                    "T/τ",
                    "facts",
                ],
                body,
            )
    if summary["recovery"]:
        L += ["", "### Recovery after a displacement", ""]
        if "recovery_model" in summary:
            a = summary["recovery_model"]
            L.append(
                f"Rows with a prediction: {a['rows']}; within {_pct(tol)}: {_pct(a['within_tolerance'])}; "
                f"within {k:g} SE: {_pct(a['within_k_se'])}; RMS log₁₀ error {_num(a['rms_log10_error'])}."
            )
            L.append("")
        body = [
            [
                r["network"],
                r["arm"],
                r["direction"],
                _g(r["predicted"]),
                f"{_g(r['measured']['mean'])} ± {_g(r['measured']['se'], 2)}",
                f"{_num(r['retained']['mean'])} ± {_num(r['retained']['se'])}",
                r["note"],
            ]
            for r in summary["recovery"]
        ]
        L += _table(["network", "arm", "direction", "predicted (steps)", "measured (steps)", "retained", "note"], body)
    L += ["", END]
    return "\n".join(L)


def render_readme(summary: dict[str, Any]) -> str:
    """The README's short block (between the same markers): the headline numbers and the Done-means."""
    tol, k = _f(summary["tolerance"]), _f(summary["k_se"])
    fams = summary["families"]
    L = [
        BEGIN,
        "",
        "The measured-spectrum model (`dptheory.spectral`) against DP-SGD arms warm-started at a converged "
        f"minimum (`{summary['command']}`, CPU default; rendered from `docs/basin-summary.json` by "
        "`python -m paper.basin_doc`; the full tables and where the model fails: docs/theory-vs-networks.md):",
        "",
    ]
    if "mlp" in fams:
        f = fams["mlp"]
        m = f["model"]
        line = (
            f"* **MLPs at w\\***: {_pct(m['within_tolerance'])} of {m['rows']} rows within {_pct(tol)}, "
            f"{_pct(m['within_k_se'])} within {k:g} SE; log–log slope {_num(m['slope'])} {_ci(m['slope_ci'])}; "
            f"RMS log₁₀ error {_num(m['rms_log10_error'])} against {_num(f['null_d']['rms_log10_error'])} (∝ d) "
            f"and {_num(f['null_sqrt_d']['rms_log10_error'])} (∝ √d)"
        )
        if "mean_hessian" in f:
            mh = f["mean_hessian"]
            line += (
                f"; with the mean-Hessian drift {_pct(mh['within_tolerance'])} within {_pct(tol)}, "
                f"RMS {_num(mh['rms_log10_error'])}"
            )
        L.append(line + ".")
        for arm, a in f["per_arm"].items():
            L.append(
                f"  * {ARM_TERMS[arm]} ({arm} arm): {_pct(a['within_tolerance'])} of {a['rows']} within {_pct(tol)}; "
                f"RMS log₁₀ error {_num(a['rms_log10_error'])} over the {a['fit_rows']} rows with both values > 0."
            )
    if "linearised" in fams and "noise_only" in fams["linearised"]:
        checks = [c for c in fams["linearised"]["noise_only"] if c["prediction"] == "predicted_excess"]
        ok = sum(bool(c["within_k_se"]) for c in checks)
        zs = ", ".join(f"{_f(c['z']):+.2f}" for c in checks)
        L.append(
            f"* **Linearised network, noise-only arm**: {ok} of {len(checks)} σ within {k:g} SE of the model "
            f"(z = {zs})."
        )
    if "teacher" in fams and "dimension_slopes" in fams["teacher"]:
        parts = []
        for arm, v in fams["teacher"]["dimension_slopes"].items():
            parts.append(
                f"{arm} measured {_num(v['measured']['slope'])} {_ci(v['measured']['slope_ci'])}, "
                f"predicted {_num(v['predicted']['slope'])}"
            )
        L.append("* **Teacher–student, excess against D** (log–log slope): " + "; ".join(parts) + ".")
    top = [r for r in summary["recovery"] if r["direction"] == "top"]
    if top:
        ratios = [
            _f(r["measured"]["mean"]) / _f(r["predicted"])
            for r in top
            if _f(r["predicted"]) > 0 and math.isfinite(_f(r["measured"]["mean"]))
        ]
        if ratios:
            L.append(
                f"* **Recovery along the top eigenvector**: measured / predicted time from {min(ratios):.2f} to "
                f"{max(ratios):.2f} over {len(ratios)} rows (clipped and unclipped arms)."
            )
    if "mlp" in fams:
        L += ["", "Done-means on the warm-start grid:", ""] + [f"* {x}" for x in _done_means(fams["mlp"])]
    L += ["", END]
    return "\n".join(L)


def replace_block(text: str, block: str) -> str:
    """``text`` with its basin block replaced by ``block`` (ValueError if the markers are missing)."""
    return blocks.replace_block(text, block, begin=BEGIN, end=END)


def check(markdown: str | Path, summary_json: str | Path, readme: str | Path | None = None) -> bool:
    """True if the markdown's block (and the README's, if given) is exactly what ``summary_json`` renders to."""
    text = Path(markdown).read_text()
    summary = json.loads(Path(summary_json).read_text())
    ok = replace_block(text, render_block(summary)) == text
    if readme is not None:
        r = Path(readme).read_text()
        ok = ok and replace_block(r, render_readme(summary)) == r
    return ok


def main(argv: list[str] | None = None) -> int:
    from paper.outputs import OneLineParser, output_file, read_metrics, report_error, write_text_atomic

    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", help="the basin result folder")
    parser.add_argument("--json", required=True, help="condensed summary (written, or read with --check)")
    parser.add_argument("--markdown", required=True, help="markdown file with the basin markers")
    parser.add_argument("--readme", default=None, help="README with the basin markers (short block)")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="CPU time of the run (if not recorded)")
    parser.add_argument("--check", action="store_true", help="only check that the markdown matches the JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (one line, status 2) or --help (status 0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.check:
            ok = check(args.markdown, args.json, args.readme)
            print("basin block matches" if ok else "basin block differs from the summary")
            return 0 if ok else 1
        if not args.folder:
            raise ValueError("a result folder is needed unless --check")
        out_json, md = output_file("--json", args.json), output_file("--markdown", args.markdown)
        readme_path = output_file("--readme", args.readme) if args.readme else None
        metrics = read_metrics(args.folder)
        if metrics.get("what") != "basin":
            raise ValueError(f"{args.folder} is not a basin result folder")
        summary = condense(metrics, folder=args.folder, cpu_seconds=args.cpu_seconds)
        text = json.dumps(summary, indent=2) + "\n"
        saved = json.loads(text)  # render what the JSON stores (the check reads the same)
        page = replace_block(md.read_text(), render_block(saved))
        readme = replace_block(readme_path.read_text(), render_readme(saved)) if readme_path else None
        # everything is computed before anything is written: an error leaves every file as it was
        write_text_atomic(out_json, text)
        write_text_atomic(md, page)
        if readme_path is not None and readme is not None:
            write_text_atomic(readme_path, readme)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:  # a metrics file of the wrong shape
        return report_error(PROG, ValueError(f"malformed basin metrics ({type(exc).__name__}: {exc})"))
    except Exception as exc:
        return report_error(PROG, exc)
    print(f"basin summary -> {args.json}, {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
