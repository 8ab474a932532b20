"""Claim experiments: the tuning and the paired statistics on a stand-in engine with known answers,
the CLI contract (exit 2 with one line and no folder on bad input), and tiny real runs of every
command on the real engine."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats as st

from simulations import net_ablate as ablate
from simulations import net_common as _common
from simulations import net_epsilon as epsilon
from simulations import net_prune as prune
from simulations import net_switch as switch
from simulations import net_tune as tune
from simulations import net_width as width
from simulations.nn import __main__ as nn_main

# --------------------------------------------------------------------------------------------
# a stand-in engine whose accuracies follow closed forms (so the analyses have known answers)


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    dataset: str = "mnist1d"
    model: str = "mlp"
    width: int = 8
    depth: int = 1
    epochs: int = 8
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.0
    clip_norm: float = 1.0
    clip_rule: str = "flat"
    noise_multiplier: float | None = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    mode: str = "sgd"
    ref_clip_norm: float | None = None
    switch_epoch: int | None = None
    switch_mode: str | None = None
    switch_lr: float | None = None
    lr_schedule: str = "constant"
    sparsity: float = 0.0
    prune_scope: str = "global"
    mask_source: str = "init"
    mask_run: str | None = None
    out: str | None = None
    burst_step: int | None = None
    burst_scale: float = 0.0
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    n_val: int = 0
    n_public: int = 0
    train_split: str = "train"
    curve_steps: tuple[int, ...] = ()
    layer_diagnostics: bool = False
    data_root: str | None = None
    device: str = "cpu"
    quiet: bool = True
    threads: int = 1  # TrainConfig's torch thread count (saved with every run)
    augment: str = "none"
    augment_shift: int = 2
    augment_multiplicity: int = 1


QUALITY = {"sgd": 0.8, "clip": 0.65, "noise": 0.75, "dpsgd": 0.5}
LR_VAL = {"sgd": 0.5, "clip": 2.5, "noise": 0.1, "dpsgd": 2.5}  # validation accuracy peaks here
LR_TEST = {**LR_VAL, "sgd": 2.5}  # ... and test accuracy here (different for sgd: selection must use validation)
RHO = {"sgd": 0.3, "clip": 0.9}  # per-epoch decay of a burst's excess loss
SPEED = {"sgd": 2.0, "dpsgd": 10.0}  # steps to (1 - 1/e) of the final accuracy
MASK_GAIN = {"public": 0.1, "random": -0.05, "init": 0.0, "private": 0.05, "oracle": 0.2}


def _seed_offset(seed: int) -> float:
    return 0.01 * math.sin(1.7 * seed + 0.3)  # a deterministic per-seed effect, shared by paired runs


def _lr_penalty(lr: float, best: float) -> float:
    return 0.02 * math.log2(lr / best) ** 2


def _phase_quality(mode: str, lr: float, ref: float | None, table: dict) -> float:
    q = QUALITY[mode] - _lr_penalty(lr, table[mode])
    if mode == "noise":
        q -= 0.01 * (ref or 1.0)
    return q


def _records(series: dict[str, np.ndarray]) -> list[dict]:
    n = len(next(iter(series.values())))
    return [{k: float(v[i]) for k, v in series.items()} | {"epoch": i} for i in range(n)]


def fake_train(config: FakeConfig) -> dict:
    """Accuracy after epoch t = mean quality of the phases of epochs 1..t (early = late weight)."""
    phases = []
    for t in range(config.epochs):
        switched = config.switch_epoch is not None and t >= config.switch_epoch
        mode = config.switch_mode if switched else config.mode
        lr = config.switch_lr if (switched and config.switch_lr) else config.lr
        if config.clip_norm < 1e-3:  # normalised clipping: only eta*C matters
            lr = lr * config.clip_norm
        phases.append((mode, lr))
    out = {}
    for name, table in (("test", LR_TEST), ("val", LR_VAL)):
        q = [_phase_quality(m, lr, config.ref_clip_norm, table) for m, lr in phases]
        acc = np.cumsum(q) / np.arange(1, config.epochs + 1) + _seed_offset(config.seed)
        plain_dp = config.mode == "dpsgd" and config.switch_epoch is None
        acc = acc - (0.02 * math.log(config.width) if plain_dp else 0.0)
        if plain_dp and config.sparsity > 0:
            acc = acc + MASK_GAIN[config.mask_source] * config.sparsity
        out[name] = np.concatenate([[0.1], acc])
    train_loss = 1.0 - out["test"]
    if config.burst_step is not None:
        t0 = (config.burst_step + 1) // 4  # the stand-in has 4 steps per epoch
        idx = np.arange(config.epochs + 1)
        train_loss = train_loss + np.where(idx >= t0, config.burst_scale * RHO[config.mode] ** (idx - t0), 0.0)
    n = config.epochs + 1
    history = _records(
        {
            "test_acc": out["test"],
            "val_acc": out["val"],
            "test_loss": 1 - out["test"],
            "train_loss": train_loss,
            "train_acc": out["test"],
            "epsilon_rdp": np.full(n, math.inf if config.mode != "dpsgd" else 4.0),
            "clip_fraction": np.full(n, 0.5),
            "norm_q50": np.full(n, 2.0),
        }
    )
    final = out["test"][-1]
    curve = {"step": list(config.curve_steps)}
    speed = SPEED.get(config.mode, 1.0)
    curve["test_acc"] = [final * (1 - math.exp(-s / speed)) for s in config.curve_steps]
    label = "private" if config.mode == "dpsgd" and config.mask_source != "oracle" else "not private: fake"
    return {
        "history": history,
        "steps": {"norm_q50": [5.0] * 4, "norm_q90": [12.0] * 4},
        "curve": curve,
        "privacy": {
            "noise_multiplier": config.noise_multiplier,
            "label": label,
            "epsilon_rdp": 4.0,
            "epsilon_pld": 3.5,
            "mechanisms": [],
        },
        "kept_parameters": 10,
    }


def fake_run_saved(config: FakeConfig) -> dict:
    """The engine's run_train + metrics.json read-back: a folder holding the config (mask source)."""
    from pathlib import Path

    Path(config.out).mkdir(parents=True)
    (Path(config.out) / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return fake_train(config)


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setattr(_common, "trainer", lambda: (FakeConfig, fake_train))
    monkeypatch.setattr(_common, "run_saved", fake_run_saved)
    for mod in (_common, ablate, prune, switch, width, epsilon):
        for name, value in (
            ("steps_per_epoch", lambda config: 4),
            ("training_set_size", lambda config: 1000),
            ("task_label", lambda config: "fake task"),
            ("calibrated_sigma", lambda config, target_epsilon, epochs=None, prior=(): 1.0 / target_epsilon),
        ):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, value)
    monkeypatch.setattr(width, "parameter_counts", lambda config: {w: 10 * w * w for w in config.widths})
    monkeypatch.setattr(prune, "small_width", lambda config, p: 3)


GRID = dict(lr_grid=(0.1, 0.5, 2.5), n_val=10, grid_extend=0, batch_size=100, quiet=True)


def test_tuning_selects_on_validation_and_saves_the_grid(fake_engine):
    cfg = ablate.AblateConfig(epochs=4, seeds=(0, 1), **GRID, out="unused")
    arms = ablate.first_arms(cfg, sigma=1.0)
    rec = tune.tune(cfg, arms, label="t")
    assert rec["sgd"]["chosen"] == {"lr": 0.5}  # the validation optimum, not the test optimum (2.5)
    assert rec["clip"]["chosen"] == {"lr": 2.5} and rec["dpsgd"]["privacy"]["accounted"] is False
    assert [g["lr"] for g in rec["sgd"]["grid"]] == [0.1, 0.5, 2.5]
    assert rec["sgd"]["grid"][1]["val_acc"] == pytest.approx(QUALITY["sgd"] + _seed_offset(1000))
    # normalised clipping: the engine's rule, the grid over eta*C at C = NORMALISED_CLIP
    assert rec["dpsgd_normalised"]["chosen"] == {
        "clip_rule": "normalised",
        "clip_norm": tune.NORMALISED_CLIP,
        "lr": 2.5 / tune.NORMALISED_CLIP,
    }


def test_grid_is_extended_beyond_an_edge(fake_engine):
    cfg = ablate.AblateConfig(epochs=4, seeds=(0, 1), **{**GRID, "lr_grid": (0.02, 0.1), "grid_extend": 3}, out="u")
    rec = tune.tune(cfg, [tune.Arm("sgd", {"mode": "sgd"})], label="t")["sgd"]
    assert rec["chosen"]["lr"] == pytest.approx(0.5)  # 0.02, 0.1 -> 0.5 -> 2.5: 0.5 is interior
    assert [round(g["lr"], 6) for g in rec["grid"]] == [0.02, 0.1, 0.5, 2.5]
    assert [g["extension"] for g in rec["grid"]] == [False, False, True, True] and rec["at_grid_edge"] is False


def test_ablate_statistics_and_verdicts(fake_engine, tmp_path):
    cfg = ablate.AblateConfig(
        epochs=8, burst_epoch=3, burst_scale=2.0, seeds=(0, 1, 2, 3, 4), **GRID, out=str(tmp_path / "x")
    )
    m = ablate.run(cfg)
    # chosen lr per arm: every arm at its validation optimum, so the paired differences are closed forms
    clip = QUALITY["clip"]
    noise = {
        a: QUALITY["noise"] - 0.01 * ref for a, ref in (("noise_median", 5.0), ("noise_q90", 12.0), ("noise_C", 1.0))
    }
    for a, q in noise.items():
        assert m["noise_minus_clip"][a]["estimate"] == pytest.approx(q - clip)
    # recovered fraction 1 - rho^(E - t0)
    for mode in ("sgd", "clip"):
        assert m["burst"][mode]["recovered_fraction"]["mean"] == pytest.approx(1 - RHO[mode] ** (8 - 3))
    assert m["burst_step"] == 3 * 4 - 1
    # the verdict p-values are Holm over the family; one held per correct direction
    v = {x["key"]: x for x in m["verdicts"]}
    assert m["verdict"]["key"] == "noise_minus_clip.noise_median" and m["verdict"]["held"] is True
    assert v["noise_minus_clip.noise_q90"]["held"] is False  # noise_q90 = 0.63 < clip = 0.65
    assert v["recovered_sgd_minus_clip"]["held"] is True
    # the SNR-matched arm's lr is derived: lr_DP * C / median
    assert m["tuning"]["noise_snr"]["tuned"] is False
    saved = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert saved["verdict"]["statement"] == m["verdict"]["statement"] and "tuning" in saved
    _assert_figure(tmp_path / "x", "ablate")


def test_switch_dominance_and_early_speed(fake_engine, tmp_path):
    cfg = switch.SwitchConfig(
        epochs=8, width=1, switch_epochs=(2, 4, 6), seeds=(0, 1, 2, 3, 4), **GRID, out=str(tmp_path / "s")
    )
    m = switch.run(cfg)
    sch = m["per_schedule"]["constant"]
    for row in sch["per_switch"]:  # equal weight of all epochs: L(s) = 1 - 2s/E exactly
        assert row["late_phase_dominance"] == pytest.approx(1 - 2 * row["switch_epoch"] / 8, abs=1e-12)
    v = {x["key"].split(".")[1]: x for x in m["verdicts"]}
    assert v["early_normalised_dpsgd_minus_sgd"]["held"] is True  # SPEED: DP-SGD slower early
    assert abs(v["dominance_numerator"]["estimate"]) < 1e-12  # L(E/2) = 0: early and late phase matter equally
    assert sch["early"]["sgd"]["steps_to_target"]["mean"] < sch["early"]["dpsgd"]["steps_to_target"]["mean"]
    _assert_figure(tmp_path / "s", "switch")


def test_fit_horizon_recovers_tau():
    epochs = 30
    for tau in (2.0, 7.0):
        curves = {}
        for s, (a, b) in {5: (0.6, 0.2), 10: (0.55, -0.1), 20: (0.5, 0.3)}.items():
            t = np.arange(epochs + 1, dtype=float)
            curves[s] = np.where(t >= s, a + b * np.exp(-(t - s) / tau), 0.0)
        got = switch.fit_horizon(curves, epochs)
        assert got == pytest.approx(tau, rel=0.05)  # the grid's resolution


def test_width_slope_per_seed(fake_engine, tmp_path):
    cfg = width.WidthConfig(epochs=3, widths=(4, 16, 64), seeds=(0, 1, 2, 3, 4), **GRID, out=str(tmp_path / "w"))
    m = width.run(cfg)
    # gap = const + 0.02 ln w and d = 10 w^2: slope per decade of d = 0.02 ln(10) / 2
    assert m["verdict"]["estimate"] == pytest.approx(0.02 * math.log(10) / 2)
    assert m["verdict"]["held"] is True
    assert m["verdicts"][1]["estimate"] == pytest.approx(0.02 * math.log(16))
    _assert_figure(tmp_path / "w", "width")


def test_prune_sources_and_labels(fake_engine, tmp_path):
    cfg = prune.PruneConfig(epochs=2, seeds=(0, 1, 2), n_public=5, **GRID, out=str(tmp_path / "p"))
    m = prune.run(cfg)
    v = {x["key"]: x for x in m["verdicts"]}
    assert v["minus_dense.public@0.9"]["estimate"] == pytest.approx(0.1 * 0.9)
    assert m["verdict"]["key"] == "minus_dense.public@0.9" and m["verdict"]["held"] is True
    assert v["minus_dense.random@0.9"]["held"] is False
    assert not any("oracle" in k for k in v)  # the oracle is a diagnosis, never a verdict of a private method
    assert m["oracle_minus_dense"]["estimate"] == pytest.approx(0.2 * 0.9)
    # the masks come from runs saved in the result folder: public SGD runs and private DP runs per seed
    assert (tmp_path / "p" / "mask_runs" / "public-seed0" / "config.json").is_file()
    saved = json.loads((tmp_path / "p" / "mask_runs" / "public-seed0" / "config.json").read_text())
    assert saved["train_split"] == "public" and saved["mode"] == "sgd"
    assert (tmp_path / "p" / "mask_runs" / "private1-seed2" / "config.json").is_file()
    _assert_figure(tmp_path / "p", "prune")


def test_epsilon_curve(fake_engine, tmp_path):
    cfg = epsilon.EpsilonConfig(
        epochs=2, seeds=(0, 1, 2), n_public=5, epsilons=(1.0, 4.0), **GRID, out=str(tmp_path / "e")
    )
    m = epsilon.run(cfg)
    assert [r["epsilon"] for r in m["curve"]] == [1.0, 4.0]
    assert all(r["pruned_minus_dense"]["estimate"] == pytest.approx(0.1 * 0.9) for r in m["curve"])
    assert all(v["held"] for v in m["verdicts"])
    _assert_figure(tmp_path / "e", "epsilon")


def _assert_figure(folder, kind):
    """paper.nn_figures draws the folder's figure from its files alone (and recognises its kind)."""
    from paper import nn_figures

    (path,) = nn_figures.draw(folder)
    assert path.name == f"net_{kind}.png" and path.stat().st_size > 1000


def test_verdict_p_values_are_student_t(fake_engine, tmp_path):
    # the stored p-value is an independent scipy t-test of the same per-seed numbers, Holm-adjusted
    cfg = width.WidthConfig(epochs=3, widths=(4, 16), seeds=(0, 1, 2), **GRID, out=str(tmp_path / "w"))
    m = width.run(cfg)
    gaps = [m["per_width"][i]["gap_sgd_minus_dpsgd"]["estimate"] for i in (0, 1)]
    assert gaps[1] - gaps[0] == pytest.approx(m["verdicts"][1]["estimate"])
    raw = m["verdicts"][1]["p_unadjusted"]
    assert raw == 0.0 or raw == pytest.approx(st.ttest_1samp([gaps[1] - gaps[0]] * 3, 0).pvalue, nan_ok=True)


# --------------------------------------------------------------------------------------------
# command-line contract


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["switch", "--switch-epochs", "0", "--epochs", "4"], "switch_epochs"),
        (["switch", "--seeds", "1,1"], "seeds"),
        (["switch", "--lr-schedules", "wavy"], "lr_schedules"),
        (["switch", "--sigma-policy", "loose"], "sigma-policy"),
        (["ablate", "--burst-epoch", "9", "--epochs", "4"], "burst_epoch"),
        (["ablate", "--lr-grid", "0.1,-1"], "lr_grid"),
        (["ablate", "--n-val", "0"], "n_val"),
        (["ablate", "--tune-seeds", "0", "--seeds", "0,1"], "tune_seeds"),
        (["ablate", "--max-runs", "10"], "max_runs"),
        (["width", "--widths", "8"], "widths"),
        (["prune", "--sparsities", "1.0"], "sparsities"),
        (["prune", "--mask-sources", "magic"], "mask_sources"),
        (["prune", "--mask-epsilons", "5", "--target-epsilon", "4"], "mask_epsilons"),
        (["prune", "--n-public", "0"], "n_public"),
        (["epsilon", "--epsilons", "0"], "epsilons"),
        (["width", "--lr", "-1"], "lr"),
        (["switch", "--dataset", "imagenet"], "dataset"),
        (["ablate", "--no-such-flag"], "unrecognized"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_folder(argv, needle, tmp_path, capsys):
    out = tmp_path / "res"
    assert nn_main.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_dispatcher(capsys):
    assert nn_main.main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command" in err
    assert nn_main.main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert nn_main.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in ("switch", "ablate", "width", "prune", "epsilon", "basin", "train"))


# --------------------------------------------------------------------------------------------
# tiny runs on the real engine (simulations.nn.train): every command writes its folder

TINY = [
    "--dataset",
    "teacher:k=2,d=10",
    "--n-train",
    "150",
    "--n-test",
    "60",
    "--n-val",
    "30",
    "--epochs",
    "2",
    "--batch-size",
    "15",
    "--width",
    "4",
    "--depth",
    "1",
    "--quiet",
    "--lr-grid",
    "0.1,0.5",
    "--grid-extend",
    "0",
]


@pytest.mark.parametrize(
    "argv",
    [
        ["switch", "--switch-epochs", "1", "--seeds", "0,1", "--sigma-policy", "fixed_sigma"],
        ["ablate", "--burst-epoch", "1", "--burst-scale", "0.5", "--seeds", "0,1"],
        [
            "prune",
            "--seeds",
            "0,1",
            "--n-public",
            "30",
            "--public-epochs",
            "1",
            "--public-batch-size",
            "10",
            "--mask-sources",
            "random,public,private,oracle",
        ],
        ["width", "--widths", "2,4", "--seeds", "0,1"],
        [
            "epsilon",
            "--epsilons",
            "4",
            "--seeds",
            "0,1",
            "--n-public",
            "30",
            "--public-epochs",
            "1",
            "--public-batch-size",
            "10",
        ],
    ],
    ids=lambda a: a[0],
)
def test_commands_run_on_the_real_engine(argv, tmp_path, capsys):
    out = tmp_path / argv[0]
    assert nn_main.main(argv + TINY + ["--out", str(out)]) == 0, capsys.readouterr().err
    for name in ("config.json", "metrics.json", "env.json", f"net_{argv[0]}.png"):
        assert (out / name).is_file()  # the figure is drawn by main() from the written files
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "teacher:k=2,d=10" and config["threads"] == 1
    from paper.report import NUMBERS

    if f"net_{argv[0]}" in NUMBERS:  # the report's table renders from what the command writes today
        text = NUMBERS[f"net_{argv[0]}"](metrics)
        assert text.count("\n|") >= 2 and "nan" not in text.lower()
    for v in metrics["verdicts"]:
        assert set(v) >= {"claim", "statement", "test", "estimate", "ci95", "p_value", "n_seeds", "held"}
        assert v["n_seeds"] == 2
    if argv[0] == "prune":
        labels = {r["arm"]: r["privacy"] for r in metrics["runs"]}
        assert labels["public@0.9"] == labels["random@0.9"] == labels["private@1/p=0.9"] == "private"
        assert labels["oracle@0.9"].startswith("not private")
        eps = {r["arm"]: r["epsilon_rdp"] for r in metrics["runs"]}
        assert eps["oracle@0.9"] == "inf"
        # the private-mask run's total epsilon (mask run composed) meets the same target as the others
        assert 3.9 < float(eps["private@1/p=0.9"]) <= 4.0 + 1e-9 and 3.9 < float(eps["public@0.9"]) <= 4.0 + 1e-9
    if argv[0] in ("switch", "ablate"):
        # paired runs: one seed -> one initialisation, so every run of a seed starts from the same record 0
        npz = np.load(out / "metrics.npz")
        first = npz["test_accuracy"][npz["seed"] == 0][:, 0]
        assert np.all(first == first[0])
    if argv[0] == "switch":
        npz = np.load(out / "metrics.npz")
        runs, seeds, acc = [str(r) for r in npz["run"]], list(npz["seed"]), npz["test_accuracy"]
        idx = {(r, s): i for i, (r, s) in enumerate(zip(runs, seeds))}
        # SGD->DP-SGD switched at epoch 1 equals plain SGD after epoch 1 (same batches, same steps, same lr)
        assert acc[idx[("sgd->dpsgd", 0)], 1] == acc[idx[("sgd", 0)], 1]
        assert acc[idx[("dpsgd->sgd", 0)], 1] == acc[idx[("dpsgd", 0)], 1]


def test_docs_verdict_sentences_match_the_records():
    """docs/network-claims.md's verdict block is exactly what docs/verdicts.json renders to."""
    from pathlib import Path

    from paper import claims_doc

    root = Path(__file__).resolve().parents[1] / "docs"
    assert claims_doc.check(root / "network-claims.md", root / "verdicts.json")
    records = json.loads((root / "verdicts.json").read_text())["verdicts"]
    assert records and all("verdict" in r and r["folder"] for r in records)


def test_claims_doc_renders_and_detects_drift(tmp_path):
    from paper import claims_doc

    folder = tmp_path / "ablate"
    folder.mkdir()
    test = {"estimate": 0.0351, "ci95": [0.0183, 0.0518], "n": 5, "p_value": 0.003, "df": 4, "alternative": "two-sided"}
    v = {
        "claim": "2",
        "statement": "s",
        "task": "t",
        "key": "k",
        "test": "paired t (two-sided), df = 4",
        "estimate": 0.05,
        "ci95": [0.01, 0.09],
        "p_value": 0.01,
        "adjustment": "holm",
        "n_seeds": 5,
        "held": True,
        "unit": "points",
        "scale": 100.0,
    }
    (folder / "metrics.json").write_text(json.dumps({"claim": "2: x", "verdicts": [v], "diff": test}))
    md = tmp_path / "doc.md"
    md.write_text("clip: <!--s:ablate:diff:100:points-->old<!--/s-->\n<!-- verdicts:begin -->\n<!-- verdicts:end -->\n")
    assert claims_doc.main([str(folder), "--json", str(tmp_path / "v.json"), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "+3.51 points (95 % CI +1.83 to +5.18; 5 seeds)" in text and "**held**" in text
    assert claims_doc.check(md, tmp_path / "v.json")
    md.write_text(text.replace("+3.51", "+3.52"))  # a hand edit of a number is caught
    assert not claims_doc.check(md, tmp_path / "v.json")


def test_missing_nn_extra_is_one_line_and_status_2(monkeypatch, capsys):
    import builtins

    from simulations.nn import __main__ as dispatcher

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in list(__import__("sys").modules) if m.startswith("simulations.nn.train")]:
        monkeypatch.delitem(__import__("sys").modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert dispatcher.main(["train", "--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[nn]'" in err[0]


def _without_timings(obj):
    """``obj`` without its wall-clock fields (``seconds``, ``*_seconds``, ``elapsed``), recursively."""
    if isinstance(obj, dict):
        return {
            k: _without_timings(v)
            for k, v in obj.items()
            if not (k == "seconds" or k.endswith("_seconds") or k.startswith("seconds") or k == "elapsed")
        }
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_network_sweep_fans_out_with_identical_results(tmp_path, capsys, monkeypatch):
    """``--workers 2`` runs the same training runs on a Dask LocalCluster: every number is the same."""
    pytest.importorskip("distributed", reason="--workers needs the 'dask' extra (distributed is not installed)")
    fanned_out = []

    def run_cells(cells, **kwargs):
        fanned_out.append(kwargs["execution"].kind)
        return real_run_cells(cells, **kwargs)

    real_run_cells = _common.run_cells
    monkeypatch.setattr(_common, "run_cells", run_cells)
    argv = ["ablate", "--burst-epoch", "1", "--burst-scale", "0.5", "--seeds", "0,1", *TINY]
    serial, fanned = tmp_path / "serial", tmp_path / "fanned"
    assert nn_main.main([*argv, "--out", str(serial)]) == 0, capsys.readouterr().err
    assert not fanned_out  # the serial path does not go through the fan-out
    assert nn_main.main([*argv, "--workers", "2", "--out", str(fanned)]) == 0, capsys.readouterr().err
    assert fanned_out and set(fanned_out) == {"local"}
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (serial, fanned))
    assert _without_timings(a) == _without_timings(b)
    config = json.loads((fanned / "config.json").read_text())
    assert config["workers"] == 2 and config["threads"] == 1


def test_fan_out_fields_stay_out_of_run_keys_and_train_configs():
    from simulations.common.store import canonical, execution_fields

    config = ablate.AblateConfig(workers=3, scheduler="tcp://127.0.0.1:8786")
    assert {"workers", "scheduler"} <= execution_fields(config)
    assert canonical(config) == canonical(ablate.AblateConfig())
    assert not {"workers", "scheduler"} & set(_common.shared_train_fields())
    with pytest.raises(ValueError, match="workers"):
        ablate.AblateConfig(workers=-1)
    with pytest.raises(ValueError, match="scheduler"):
        ablate.AblateConfig(scheduler="nowhere")


def test_a_kept_network_comes_back_from_a_dask_worker_unchanged():
    # Sweep.run(keep_model=...) on a LocalCluster returns the trained network (pickled back from the
    # worker) with the weights of the same run made in this process
    pytest.importorskip("distributed", reason="--workers needs the 'dask' extra (distributed is not installed)")
    import torch

    from simulations.common.fanout import Execution
    from simulations.nn.train import TrainConfig

    config = TrainConfig(dataset="teacher", n_train=80, n_test=40, width=6, depth=1, epochs=1, batch_size=20,
                         noise_multiplier=1.0, quiet=True, accountants=("rdp",), device="cpu")  # fmt: skip
    jobs = [({"seed": s}, dataclasses.replace(config, seed=s)) for s in (0, 1)]
    serial = _common.Sweep("t", quiet=True, threads=1).run(jobs, keep_model=lambda tags: tags["seed"] == 1)
    fanned = _common.Sweep("t", quiet=True, threads=1, execution=Execution(workers=2, threads=1)).run(
        jobs, keep_model=lambda tags: tags["seed"] == 1
    )
    assert "model" not in serial[0]["result"] and "model" not in fanned[0]["result"]
    a, b = serial[1]["result"]["model"], fanned[1]["result"]["model"]
    model_a, model_b = (m[0] if isinstance(m, tuple) else m for m in (a, b))
    for (name, p), (_, q) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(p, q), name
