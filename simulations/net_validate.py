"""Theory vs trained networks: does the clipped-dynamics model rank the DP-SGD excess loss correctly?

For each sweep point — MLP widths (sparsity 0) and magnitude-pruning sparsities (init masks, at the
largest width) — and seed, an SGD and a DP-SGD run (fixed σ, momentum 0: the step the theory models)
are trained. On the SGD-trained network (the nearest thing to the basin's minimum) we *measure*

* d   — trainable, unpruned parameters;
* s   — per-sample gradient spread, s² = (1/d) · (1/N) Σ_i ‖g_i − ḡ‖² over N training examples
        (the theory's g_i = H e + s ζ_i with ζ_i ~ N(0, I_d));
* λ_1…λ_k — the top-k Hessian eigenvalues of the training loss (Lanczos, ``simulations.nn.hessian``),
        their participation-ratio effective rank r_eff;

and build ``Basin(dim=d, curvatures=(positive λ_j), sample_std=s)`` and the run's
``Optimizer(lr, batch_size, clip_norm, noise_multiplier, mode="dpsgd")``. The theory
(``dptheory.clipped_dynamics``) predicts the stationary excess loss and the clip fraction; the
measured excess loss is the paired difference of final training losses DP-SGD − SGD (same seed).
Predicted and measured are printed side by side with the Spearman rank correlation across points.

What the comparison can and cannot show: the theory is a quadratic basin with isotropic per-sample
noise and a rank given by the top-k spectrum; a trained network has a non-quadratic loss, a
non-isotropic gradient covariance, a Hessian tail beyond k, and DP-SGD ends where it ends (not
necessarily at stationarity around the SGD minimum). So the absolute numbers are a stress test; the
rank correlation asks the weaker question whether the theory orders the configurations correctly.

Example (the defaults; 20 runs + 10 measurements, ~7 minutes on 2 shared CPU cores)::

    $ python -m simulations.nn validate --out results/nn/validate
    validate: mnist1d mlp depth 2, 10 epochs, lr=0.5, B=128, C=1.0, sigma=1.0, seeds=2
    width  sparsity  d      s       lambda_1  r_eff  clip frac pred/meas  excess pred    excess meas
    -----  --------  -----  ------  --------  -----  -------------------  -------------  -------------
    16     0.00      1098   0.232   4.31      7.0    1.00/0.99            0.001 ± 0.000  0.364 ± 0.028
    64     0.00      7434   0.104   4.25      7.5    1.00/0.99            0.001 ± 0.000  0.489 ± 0.017
    256    0.00      78858  0.033   3.6       7.8    1.00/0.99            0.001 ± 0.000  0.767 ± 0.015
    256    0.50      39690  0.0428  3.75      7.7    1.00/0.98            0.001 ± 0.000  0.632 ± 0.013
    256    0.90      8356   0.0529  3.32      5.6    1.00/0.91            0.000 ± 0.000  0.243 ± 0.017
      Spearman (excess, point means): rho = +0.70 (p = 0.19, n = 5)
      Spearman (excess, all runs): rho = +0.67 (p = 0.033, n = 10)
      Spearman (clip fraction): undefined (constant values or too few points), n = 5
      predicted / measured excess: 0.000798 … 0.00156

Reading it: the predictions agree with the saturated closed form r η C s √d σ²/(4B²)
(r = 8 measured directions: ≈ 6·10⁻⁴), i.e. a stationary *noise floor*; the
measured excess (0.25–0.76) is ~10³ times larger. It is dominated by the not-yet-converged,
step-length-limited (clipped) optimisation, which a stationary formula does not describe; the
correct ranking across points is weak evidence (n = 5 points, 2 seeds).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import spearman, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    CLIP_FRACTION,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    check_fraction_list,
    check_sweep,
    opt,
    select,
    train_config,
)


@dataclass(frozen=True)
class ValidateConfig(NetExperiment):
    """Measured basin quantities → theory prediction vs measured excess loss (width and sparsity)."""

    widths: tuple[int, ...] = opt((16, 64, 256), "MLP widths (sparsity 0)")
    sparsities: tuple[float, ...] = opt((0.5, 0.9), "init-mask sparsities at the largest width")
    seeds: tuple[int, ...] = opt((0, 1), "seeds; runs with the same seed are paired")
    lr: float = opt(0.5, "learning rate")
    momentum: float = opt(0.0, "must be 0: the theory models plain (DP-)SGD steps")
    hessian_k: int = opt(8, "top-k Hessian eigenvalues measured")
    measure_samples: int = opt(512, "training examples used for s and the Hessian")
    out: str = opt("results/nn/validate", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.momentum != 0:
            raise ValueError(f"momentum must be 0 for validate (the theory models plain steps), got {self.momentum}")
        widths = tuple(sorted({int(w) for w in self.widths}))
        if not widths or widths[0] < 1:
            raise ValueError(f"widths must be integers >= 1, got {self.widths}")
        object.__setattr__(self, "widths", widths)
        sp = tuple(sorted(set(check_fraction_list("sparsities", self.sparsities)) - {0.0}))
        object.__setattr__(self, "sparsities", sp)
        if len(widths) + len(sp) < 3:
            raise ValueError(
                "validate needs at least 3 sweep points (widths + sparsities) for a rank correlation, "
                f"got widths={widths} sparsities={sp}"
            )
        if int(self.hessian_k) < 1 or int(self.measure_samples) < 2:
            raise ValueError(
                f"hessian_k must be >= 1 and measure_samples >= 2, got {self.hessian_k}, {self.measure_samples}"
            )

    def probe_runs(self) -> list[dict[str, Any]]:
        """Both modes at the largest width, the most pruned point, and the Hessian measurement (as a
        one-epoch run with ``hessian_k`` on ``measure_samples`` examples)."""
        top = {"width": self.widths[-1], "seed": max(self.seeds)}
        probes = [{**top, "mode": m} for m in ("sgd", "dpsgd")]
        if self.sparsities:
            probes.append({**top, "mode": "dpsgd", "sparsity": self.sparsities[-1], "mask_source": "init"})
        probes.append(
            {**top, "mode": "sgd", "epochs": 1, "hessian_k": self.hessian_k, "hessian_samples": self.measure_samples}
        )
        return probes

    def planned_runs(self) -> int:
        return 2 * len(self.seeds) * len(self.points())

    def points(self) -> list[dict[str, Any]]:
        pts = [{"width": w, "sparsity": 0.0} for w in self.widths]
        return pts + [{"width": self.widths[-1], "sparsity": p} for p in self.sparsities]


def jobs(config: ValidateConfig) -> list[tuple[dict, Any]]:
    out = []
    for seed in config.seeds:
        for pt in config.points():
            extra = {"sparsity": pt["sparsity"], "mask_source": "init"} if pt["sparsity"] > 0 else {}
            for mode in ("sgd", "dpsgd"):
                out.append(
                    (
                        {"seed": seed, **pt, "mode": mode},
                        train_config(**config.base_fields(seed=seed, width=pt["width"], mode=mode, **extra)),
                    )
                )
    return out


# --------------------------------------------------------------------------------------------
# measurement on a trained network


def measure(
    model: Any, x: Any, y: Any, *, masks: dict | None, hessian_k: int, seed: int, chunk: int = 256
) -> dict[str, Any]:
    """d, s, ‖ḡ‖, per-sample norm quantiles, top-k Hessian eigenvalues and r_eff of ``model`` on (x, y).

    d counts trainable scalars kept by ``masks``; s² = (1/d)(1/N) Σ_i ‖m⊙(g_i − ḡ)‖² (population
    variance over the N given examples).
    """
    import torch

    from simulations.nn.engine import per_sample_gradients, trainable_parameters
    from simulations.nn.hessian import effective_rank, make_hvp, parameter_dim, top_eigenpairs

    params = trainable_parameters(model)
    dim_total = parameter_dim(model)
    keep = {k: (masks[k] if masks is not None and k in masks else torch.ones_like(p)) for k, p in params.items()}
    dim = int(sum(float(m.sum()) for m in keep.values()))
    total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    sq_sum = 0.0
    norms = []
    for start in range(0, x.shape[0], chunk):
        gs = per_sample_gradients(model, x[start : start + chunk], y[start : start + chunk], method="vmap")
        sq = 0.0
        for k, g in gs.items():
            g = (g * keep[k]).double()
            total[k] += g.sum(0)
            sq = sq + g.reshape(g.shape[0], -1).pow(2).sum(1)
        norms.append(torch.as_tensor(sq).sqrt())
        sq_sum += float(torch.as_tensor(sq).sum())
    n = x.shape[0]
    mean_sq = sum(float((t / n).pow(2).sum()) for t in total.values())  # ‖ḡ‖²
    spread_sq = max(sq_sum / n - mean_sq, 0.0)  # (1/N) Σ ‖g_i − ḡ‖² = mean ‖g_i‖² − ‖ḡ‖²
    all_norms = torch.cat(norms).numpy()
    hvp = make_hvp(model, x, y, masks=masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eigs, _ = top_eigenpairs(hvp, dim=dim_total, k=min(hessian_k, dim_total), seed=seed, tol=1e-3, max_iter=300)
    return {
        "dim": dim,
        "sample_std": math.sqrt(spread_sq / dim),
        "mean_gradient_norm": math.sqrt(mean_sq),
        "norm_q50": float(np.median(all_norms)),
        "eigenvalues": np.asarray(eigs, dtype=float),
        "effective_rank": effective_rank(np.asarray(eigs)),
        "lanczos_warnings": [str(w.message) for w in caught],
    }


def predict(
    *, measured: dict[str, Any], lr: float, batch_size: int, clip_norm: float, noise_multiplier: float
) -> dict[str, float]:
    """The theory's stationary excess loss and clip fraction for the measured basin quantities."""
    from dptheory.clipped_dynamics import stationary_clip_fraction, stationary_excess_loss
    from dptheory.records import Basin, Optimizer

    curv = tuple(float(v) for v in measured["eigenvalues"] if v > 0)
    if not curv or not measured["sample_std"] > 0:
        return {"excess_loss": math.nan, "clip_fraction": math.nan, "rank": len(curv)}
    basin = Basin(dim=int(measured["dim"]), curvatures=curv, sample_std=float(measured["sample_std"]))
    optimizer = Optimizer(
        lr=lr, batch_size=batch_size, clip_norm=clip_norm, noise_multiplier=noise_multiplier, mode="dpsgd"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fixed-point step-cap warnings are reported below
        excess = stationary_excess_loss(basin=basin, optimizer=optimizer)
        frac = stationary_clip_fraction(basin=basin, optimizer=optimizer)
    return {"excess_loss": float(excess), "clip_fraction": float(frac), "rank": len(curv)}


def trained_model(result: dict) -> tuple[Any, dict | None]:
    """(model, masks) of a finished training run, from the engine's result dict."""
    model = result.get("model")
    if model is None:
        raise RuntimeError("the training result holds no 'model'; validate needs the trained network")
    return model, result.get("masks")


def measurement_batch(config: ValidateConfig, seed: int) -> tuple[Any, Any]:
    """The first ``measure_samples`` training examples (the same data the runs trained on)."""
    from simulations.nn.data import load_dataset

    ds = load_dataset(
        config.dataset,
        root=config.data_root,
        seed=data_seed(seed),
        n_train=config.n_train,
        n_test=config.n_test,
        n_val=config.n_val,
        n_public=config.n_public,
    )
    n = min(config.measure_samples, ds.n_train)
    return ds.x_train[:n], ds.y_train[:n]


def data_seed(seed: int) -> int:
    """The dataset seed the engine uses for a run with ``seed``."""
    return 0


def attach_measurements(config: ValidateConfig, results: list[dict], *, quiet: bool = True) -> None:
    """Measure every SGD-trained network (in place: ``r["measured"]``) and drop the model objects."""
    from simulations.common.cli import Progress
    from simulations.net_common import torch_threads

    sgd_runs = [r for r in results if r["tags"]["mode"] == "sgd"]
    with (
        torch_threads(config.threads),
        Progress(total=len(sgd_runs), label="measure", quiet=quiet, min_seconds=0.0) as bar,
    ):
        for r in sgd_runs:
            model, masks = trained_model(r["result"])
            x, y = measurement_batch(config, r["tags"]["seed"])
            device = next(model.parameters()).device
            r["measured"] = measure(
                model, x.to(device), y.to(device), masks=masks, hessian_k=config.hessian_k, seed=r["tags"]["seed"]
            )
            bar.update(note=f"width={r['tags']['width']} sparsity={r['tags']['sparsity']} d={r['measured']['dim']}")
    for r in results:
        r["result"].pop("model", None)


def analyse(config: ValidateConfig, results: list[dict]) -> dict:
    """Predicted vs measured excess loss per point and seed, and their rank correlation."""
    from simulations.net_common import final

    points = []
    pairs_pred, pairs_meas = [], []
    for pt in config.points():
        per_seed = []
        for seed in config.seeds:
            sgd = select(results, seed=seed, mode="sgd", **pt)[0]
            dp = select(results, seed=seed, mode="dpsgd", **pt)[0]
            m = sgd["measured"]
            pred = predict(
                measured=m,
                lr=config.lr,
                batch_size=config.batch_size,
                clip_norm=config.clip_norm,
                noise_multiplier=config.noise_multiplier,
            )
            measured_excess = final(dp["result"], TRAIN_LOSS) - final(sgd["result"], TRAIN_LOSS)
            per_seed.append(
                {
                    "seed": seed,
                    "dim": m["dim"],
                    "sample_std": m["sample_std"],
                    "mean_gradient_norm": m["mean_gradient_norm"],
                    "norm_q50": m["norm_q50"],
                    "top_eigenvalue": float(m["eigenvalues"][0]),
                    "effective_rank": m["effective_rank"],
                    "eigenvalues": m["eigenvalues"],
                    "predicted_excess": pred["excess_loss"],
                    "measured_excess": measured_excess,
                    "predicted_clip_fraction": pred["clip_fraction"],
                    "measured_clip_fraction": final(dp["result"], CLIP_FRACTION),
                    "lanczos_warnings": m["lanczos_warnings"],
                }
            )
            pairs_pred.append(pred["excess_loss"])
            pairs_meas.append(measured_excess)
        col = {k: [s[k] for s in per_seed] for k in per_seed[0] if k not in ("eigenvalues", "lanczos_warnings")}
        points.append(
            {
                **pt,
                "dim": int(np.mean(col["dim"])),
                **{
                    k: summary(col[k])
                    for k in (
                        "sample_std",
                        "top_eigenvalue",
                        "effective_rank",
                        "predicted_excess",
                        "measured_excess",
                        "predicted_clip_fraction",
                        "measured_clip_fraction",
                        "norm_q50",
                    )
                },
                "per_seed": per_seed,
            }
        )
    pred_means = [p["predicted_excess"]["mean"] for p in points]
    meas_means = [p["measured_excess"]["mean"] for p in points]
    ratio = np.asarray(pred_means) / np.asarray(meas_means)
    return {
        "what": "theory (dptheory.clipped_dynamics.stationary_excess_loss on measured d, s, top-k Hessian) vs "
        "measured final train-loss excess DP-SGD - SGD (paired by seed)",
        "points": points,
        "spearman_point_means": spearman(pred_means, meas_means),
        "spearman_all_pairs": spearman(pairs_pred, pairs_meas),
        "spearman_clip_fraction": spearman(
            [p["predicted_clip_fraction"]["mean"] for p in points],
            [p["measured_clip_fraction"]["mean"] for p in points],
        ),
        "predicted_over_measured": {
            "min": float(np.nanmin(ratio)) if np.isfinite(ratio).any() else math.nan,
            "max": float(np.nanmax(ratio)) if np.isfinite(ratio).any() else math.nan,
        },
    }


def report(config: ValidateConfig, metrics: dict) -> None:
    print(
        f"validate: {config.dataset} mlp depth {config.depth}, {config.epochs} epochs, lr={config.lr}, "
        f"B={config.batch_size}, C={config.clip_norm}, sigma={config.noise_multiplier}, seeds={len(config.seeds)}"
    )
    rows = [["width", "sparsity", "d", "s", "lambda_1", "r_eff", "clip frac pred/meas", "excess pred", "excess meas"]]
    for p in metrics["points"]:
        rows.append(
            [
                str(p["width"]),
                f"{p['sparsity']:.2f}",
                str(p["dim"]),
                f"{p['sample_std']['mean']:.3g}",
                f"{p['top_eigenvalue']['mean']:.3g}",
                f"{p['effective_rank']['mean']:.1f}",
                f"{p['predicted_clip_fraction']['mean']:.2f}/{p['measured_clip_fraction']['mean']:.2f}",
                fmt_stat(p["predicted_excess"], 1, 3),
                fmt_stat(p["measured_excess"], 1, 3),
            ]
        )
    print_table(rows)
    for key, label in (
        ("spearman_point_means", "excess, point means"),
        ("spearman_all_pairs", "excess, all runs"),
        ("spearman_clip_fraction", "clip fraction"),
    ):
        r = metrics[key]
        if math.isfinite(r["rho"]):
            print(f"  Spearman ({label}): rho = {r['rho']:+.2f} (p = {r['p_value']:.2g}, n = {r['n']})")
        else:  # constant values (e.g. every clip fraction 1.0) have no rank correlation
            print(f"  Spearman ({label}): undefined (constant values or too few points), n = {r['n']}")
    r = metrics["predicted_over_measured"]
    print(f"  predicted / measured excess: {r['min']:.3g} … {r['max']:.3g}")


def run(config: ValidateConfig) -> dict:
    check_output_dir(config.out)
    check_sweep(config, config.planned_runs())
    import dptheory.clipped_dynamics  # noqa: F401 - fail before training if the theory is missing

    results = Sweep.of("validate", config).run(jobs(config), keep_model=lambda tags: tags["mode"] == "sgd")
    attach_measurements(config, results, quiet=config.quiet)
    if not config.quiet:
        import sys

        sys.stderr.write("validate: measurements done\n")
    metrics = analyse(config, results)
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics)
    report(config, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        ValidateConfig, run, argv, prog="python -m simulations.nn validate", description=__doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
