"""Claim experiments: the paired statistics on a stand-in engine with known answers, the CLI
contract (exit 2 with one line and no folder on bad input), and tiny real runs on the real engine."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from simulations import net_ablate as ablate
from simulations import net_common as _common
from simulations import net_prune as prune
from simulations import net_switch as switch
from simulations import net_validate as validate
from simulations import net_width as width
from simulations.common import stats
from simulations.nn import __main__ as nn_main

# --------------------------------------------------------------------------------------------
# a stand-in engine whose final accuracies follow closed forms (so the analyses have known answers)


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
    noise_multiplier: float = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    mode: str = "sgd"
    ref_clip_norm: float | None = None
    switch_epoch: int | None = None
    switch_mode: str | None = None
    sparsity: float = 0.0
    prune_scope: str = "global"
    mask_source: str = "init"
    mask_run: str | None = None
    out: str | None = None
    burst_step: int | None = None
    burst_scale: float = 0.0
    seed: int = 0
    n_train: int | None = None
    data_root: str | None = None
    device: str = "cpu"
    quiet: bool = True
    threads: int = 1  # TrainConfig's torch thread count (saved with every run)


QUALITY = {"sgd": 0.8, "clip": 0.6, "noise": 0.75, "dpsgd": 0.5}
RHO = {"sgd": 0.3, "clip": 0.9}  # per-epoch decay of a burst's excess loss


def _seed_offset(seed: int) -> float:
    return 0.01 * math.sin(1.7 * seed + 0.3)  # a deterministic per-seed effect, shared by paired runs


def _records(series: dict[str, np.ndarray]) -> list[dict]:
    """The engine's history format: a list of per-epoch records, record 0 = before training."""
    n = len(next(iter(series.values())))
    return [{k: float(v[i]) for k, v in series.items()} | {"epoch": i} for i in range(n)]


def fake_train_average(config: FakeConfig) -> dict:
    """Accuracy after epoch t = mean quality of the modes used in epochs 1..t (early = late weight)."""
    modes = [
        config.mode if (config.switch_epoch is None or t < config.switch_epoch) else config.switch_mode
        for t in range(config.epochs)
    ]
    acc = np.cumsum([QUALITY[m] for m in modes]) / np.arange(1, config.epochs + 1) + _seed_offset(config.seed)
    acc = np.concatenate([[0.1], acc])  # record 0: before training
    train_loss = 1.0 - acc
    if config.burst_step is not None:
        t0 = (config.burst_step + 1) // 4  # the stand-in has 4 steps per epoch
        idx = np.arange(config.epochs + 1)
        excess = np.where(idx >= t0, config.burst_scale * RHO[config.mode] ** (idx - t0), 0.0)
        train_loss = train_loss + excess
    plain_dp = config.mode == "dpsgd" and config.switch_epoch is None
    dim_penalty = 0.02 * math.log(config.width) if plain_dp else 0.0
    prune_gain = 0.1 * config.sparsity if config.mask_source == "init" and plain_dp else 0.0
    acc = acc - dim_penalty + prune_gain
    private_mask = config.mask_source == "private" and config.sparsity > 0
    eps = math.inf if config.mode == "sgd" else (config.target_epsilon or 3.0) + (1.0 if private_mask else 0.0)
    n = config.epochs + 1
    history = _records(
        {
            "test_acc": acc,
            "test_loss": 1 - acc,
            "train_loss": train_loss,
            "train_acc": acc,
            "epsilon_rdp": np.full(n, eps),
            "clip_fraction": np.full(n, 0.5),
            "norm_q50": np.full(n, 2.0),
        }
    )
    return {"history": history, "privacy": {"noise_multiplier": 1.1, "label": "fake"}}


def fake_train_late(config: FakeConfig) -> dict:
    """Final accuracy = quality of the mode of the last epoch only (the late phase decides)."""
    out = fake_train_average(config)
    switched = config.switch_epoch is not None and config.epochs - 1 >= config.switch_epoch
    last = config.switch_mode if switched else config.mode
    out["history"][-1]["test_acc"] = QUALITY[last] + _seed_offset(config.seed)
    return out


def fake_run_saved(config: FakeConfig) -> dict:
    """The engine's run_train + metrics.json read-back: a folder holding the config (mask source)."""
    from pathlib import Path

    Path(config.out).mkdir(parents=True)
    (Path(config.out) / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return fake_train_average(config)


@pytest.fixture
def fake_engine(monkeypatch):
    def use(train_fn):
        monkeypatch.setattr(_common, "trainer", lambda: (FakeConfig, train_fn))
        monkeypatch.setattr(_common, "run_saved", fake_run_saved)
        monkeypatch.setattr(_common, "steps_per_epoch", lambda config: 4)
        monkeypatch.setattr(ablate, "steps_per_epoch", lambda config: 4)
        monkeypatch.setattr(width, "parameter_counts", lambda config: {w: 10 * w * w for w in config.widths})

    return use


def test_switch_dominance_equals_closed_form(fake_engine, tmp_path):
    # equal weight of all epochs: L(s) = 1 − 2s/E exactly; last epoch only: L(s) = 1
    fake_engine(fake_train_average)
    cfg = switch.SwitchConfig(
        epochs=8, width=1, switch_epochs=(2, 4, 6), seeds=(0, 1, 2), out=str(tmp_path / "a"), quiet=True
    )
    m = switch.run(cfg)
    for row in m["per_switch"]:
        assert row["late_phase_dominance"] == pytest.approx(1 - 2 * row["switch_epoch"] / 8, abs=1e-12)
        assert row["dominance_numerator"]["se"] == pytest.approx(0, abs=1e-12)  # paired: seed effect cancels
    assert m["late_phase_decides"] is False  # L(4) = 0: early and late phase matter equally
    assert m["slower_early"] is False or m["first_epoch_acc_dpsgd_minus_sgd"]["mean"] < 0
    fake_engine(fake_train_late)
    m = switch.run(dataclasses.replace(cfg, out=str(tmp_path / "b")))
    assert all(r["late_phase_dominance"] == pytest.approx(1.0) for r in m["per_switch"])
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert saved["per_switch"][1]["late_phase_dominance"] == pytest.approx(1.0)
    assert (tmp_path / "b" / "metrics.npz").is_file() and (tmp_path / "b" / "env.json").is_file()
    _assert_figure(tmp_path / "b", "switch")


def test_ablate_recovery_fraction_equals_closed_form(fake_engine, tmp_path):
    fake_engine(fake_train_average)
    cfg = ablate.AblateConfig(
        epochs=8, width=1, burst_epoch=3, burst_scale=2.0, seeds=(0, 1, 2), out=str(tmp_path / "x"), quiet=True
    )
    m = ablate.run(cfg)
    # excess Δ(i) = A ρ^(i − t0) from record t0 on: recovered = 1 − ρ^(E − t0)
    for mode in ("sgd", "clip"):
        assert m["burst"][mode]["recovered_fraction"]["mean"] == pytest.approx(1 - RHO[mode] ** (8 - 3))
        assert m["burst"][mode]["excess_train_loss_after_burst"]["mean"] == pytest.approx(2.0)
    assert m["unclipped_recovers_better"] is True
    # accuracies: paired differences to SGD are the quality differences exactly (seed effect cancels)
    for mode in ("clip", "noise", "dpsgd"):
        assert m["accuracy_minus_sgd"][mode]["mean"] == pytest.approx(QUALITY[mode] - QUALITY["sgd"])
    assert m["clipping_hurts_more"] is True
    assert m["burst_step"] == 3 * 4 - 1
    _assert_figure(tmp_path / "x", "ablate")


def test_width_growth_and_rank_correlation(fake_engine, tmp_path):
    fake_engine(fake_train_average)
    cfg = width.WidthConfig(epochs=3, widths=(4, 16, 64), seeds=(0, 1, 2), out=str(tmp_path / "w"), quiet=True)
    m = width.run(cfg)
    v = m["verdict"]["dp_sigma"]
    # gap = (0.8 − 0.5) + 0.02 ln w: growth between w = 64 and 4 is 0.02 ln 16
    assert v["gap_growth_largest_minus_smallest"]["mean"] == pytest.approx(0.02 * math.log(16))
    assert v["gap_grows_with_dim"] is True
    assert v["spearman_gap_vs_dim"]["rho"] > 0.9
    assert m["calibrated_noise_multiplier"] == pytest.approx(1.1)
    _assert_figure(tmp_path / "w", "width")


def test_prune_paired_gain_and_privacy_labels(fake_engine, tmp_path):
    fake_engine(fake_train_average)
    cfg = prune.PruneConfig(
        epochs=2,
        sparsities=(0.5, 0.9),
        mask_sources=("init", "private", "oracle"),
        seeds=(0, 1),
        out=str(tmp_path / "p"),
        quiet=True,
    )
    m = prune.run(cfg)
    assert m["verdict"]["init"]["best_heavy_minus_dense"]["mean"] == pytest.approx(0.1 * 0.9)
    assert m["verdict"]["init"]["heavy_pruning_helps"] is True
    assert m["verdict"]["oracle"]["heavy_pruning_helps"] is False
    assert "NOT private" in m["verdict"]["oracle"]["privacy"]
    eps_private = m["per_source"]["private"][-1]["epsilon"]["mean"]
    assert eps_private > m["per_source"]["init"][-1]["epsilon"]["mean"]  # the mask's ε is composed
    # the private / oracle masks come from the dense DP-SGD / SGD runs saved in the result folder
    runs = json.loads((tmp_path / "p" / "metrics.json").read_text())["runs"]
    assert len(runs) == 2 * (3 + 2 * 3)  # per seed: 3 dense runs + 2 sparsities × 3 sources
    assert (tmp_path / "p" / "mask_runs" / "mask-dpsgd-seed0" / "config.json").is_file()
    _assert_figure(tmp_path / "p", "prune")


def _assert_figure(folder, kind):
    """paper.nn_figures draws the folder's figure from its files alone (and recognises its kind)."""
    from paper import nn_figures

    (path,) = nn_figures.draw(folder)
    assert path.name == f"net_{kind}.png" and path.stat().st_size > 1000


def test_statistics_helpers():
    m, se = stats.mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert math.isnan(stats.mean_se([1.0])[1])
    d = stats.paired_difference([1.0, 2.0, 3.5], [0.5, 1.5, 3.0])
    assert d["mean"] == pytest.approx(0.5) and d["se"] == pytest.approx(0.0)
    assert stats.spearman([1, 2, 3, 4], [10, 20, 25, 100])["rho"] == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1])["rho"] == pytest.approx(-1.0)


# --------------------------------------------------------------------------------------------
# command-line contract


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["switch", "--switch-epochs", "0", "--epochs", "4"], "switch_epochs"),
        (["switch", "--seeds", "1,1"], "seeds"),
        (["ablate", "--burst-epoch", "9", "--epochs", "4"], "burst_epoch"),
        (["width", "--widths", "8"], "widths"),
        (["prune", "--sparsities", "1.0"], "sparsities"),
        (["prune", "--mask-sources", "magic"], "mask_sources"),
        (["prune", "--mask-epsilon", "5", "--target-epsilon", "4"], "mask_epsilon"),
        (["width", "--lr", "-1"], "lr"),
        (["switch", "--dataset", "imagenet"], "dataset"),
        (["ablate", "--no-such-flag"], "unrecognized"),
        (["validate", "--momentum", "0.9"], "momentum"),
        (["validate", "--widths", "8", "--sparsities", "0.5"], "at least 3 sweep points"),
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
    assert all(c in text for c in ("switch", "ablate", "width", "prune", "validate", "train"))


# --------------------------------------------------------------------------------------------
# tiny runs on the real engine (simulations.nn.train): every command writes its folder

TINY = [
    "--dataset",
    "teacher:k=2,d=10",
    "--n-train",
    "200",
    "--epochs",
    "2",
    "--batch-size",
    "10",
    "--width",
    "4",
    "--depth",
    "1",
    "--quiet",
]


@pytest.mark.parametrize(
    "argv",
    [
        ["switch", "--switch-epochs", "1", "--seeds", "0"],
        ["ablate", "--burst-epoch", "1", "--burst-scale", "0.5", "--seeds", "0"],
        ["prune", "--sparsities", "0.9", "--seeds", "0"],
    ],
    ids=lambda a: a[0],
)
def test_commands_run_on_the_real_engine(argv, tmp_path, capsys):
    out = tmp_path / argv[0]
    assert nn_main.main(argv + TINY + ["--out", str(out)]) == 0, capsys.readouterr().err
    for name in ("config.json", "metrics.json", "env.json"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "teacher:k=2,d=10" and config["epochs"] == 2
    printed = capsys.readouterr().out
    assert "claim" in printed
    if argv[0] == "prune":
        labels = {r["source"]: r["privacy"] for r in metrics["runs"] if r["sparsity"] > 0}
        assert labels["init"] == "private" and labels["private"] == "private"
        assert labels["oracle"].startswith("not private")
        eps = {r["source"]: r["epsilon"] for r in metrics["runs"] if r["sparsity"] > 0}
        assert eps["oracle"] == "inf"
        # total ε of the private-mask run (mask run composed) meets the same target as the others,
        # and is larger than the training part alone would be (the mask's ε counts)
        assert float(eps["private"]) <= 4.0 + 1e-9 and float(eps["init"]) <= 4.0 + 1e-9
        assert float(eps["private"]) > 3.5 and float(eps["init"]) > 3.5
    if argv[0] in ("switch", "ablate"):
        # paired runs: one seed → one initialisation, so every run starts from the same record 0,
        # and runs agree exactly for as long as they take the same steps
        npz = np.load(out / "metrics.npz")
        assert np.all(npz["test_accuracy"][:, 0] == npz["test_accuracy"][0, 0])
    if argv[0] == "switch":
        runs = [str(r) for r in np.load(out / "metrics.npz")["run"]]
        acc = np.load(out / "metrics.npz")["test_accuracy"]
        # SGD→DP-SGD switched at epoch 1 equals plain SGD after epoch 1 (same batches, same steps)
        assert acc[runs.index("sgd->dpsgd"), 1] == acc[runs.index("sgd"), 1]
        assert acc[runs.index("dpsgd->sgd"), 1] == acc[runs.index("dpsgd"), 1]
    if argv[0] == "ablate":
        # the burst run equals the plain run before the burst epoch (burst before the last step of epoch 1)
        npz = np.load(out / "metrics.npz")
        modes, burst = [str(m) for m in npz["mode"]], list(npz["burst"])
        plain = [i for i, (m, b) in enumerate(zip(modes, burst)) if m == "sgd" and not b][0]
        hit = [i for i, (m, b) in enumerate(zip(modes, burst)) if m == "sgd" and b][0]
        assert npz["train_loss"][hit, 0] == npz["train_loss"][plain, 0]
        assert npz["train_loss"][hit, 1] != npz["train_loss"][plain, 1]


# --------------------------------------------------------------------------------------------
# validate: the measurements against independent references, and the theory wiring in a limit


def test_measure_matches_independent_references():
    import torch

    from simulations.nn.models import build_model

    model = build_model("mlp", input_shape=(5,), num_classes=3, width=4, depth=1, seed=0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    params = list(model.parameters())
    mask_w = (torch.rand(params[0].shape, generator=gen) > 0.5).float()
    names = [n for n, _ in model.named_parameters()]
    masks = {names[0]: mask_w}
    with torch.no_grad():
        params[0].mul_(mask_w)
    got = validate.measure(model, x, y, masks=masks, hessian_k=3, seed=0, chunk=16)
    # per-sample gradients by an explicit loop (float64), masked
    rows = []
    for i in range(40):
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        g = torch.autograd.grad(loss, params)
        g = [g[0] * mask_w] + list(g[1:])
        rows.append(torch.cat([t.reshape(-1) for t in g]).double())
    g = torch.stack(rows)
    keep = torch.cat([mask_w.reshape(-1)] + [torch.ones(p.numel()) for p in params[1:]]).bool()
    d = int(keep.sum())
    assert got["dim"] == d
    spread = ((g - g.mean(0)) ** 2).sum(1).mean().item()
    assert got["sample_std"] == pytest.approx(math.sqrt(spread / d), rel=1e-5)
    assert got["mean_gradient_norm"] == pytest.approx(g.mean(0).norm().item(), rel=1e-5)
    assert got["norm_q50"] == pytest.approx(np.median(g.norm(dim=1).numpy()), rel=1e-5)
    # Hessian of the mean loss by torch.autograd.functional.hessian, restricted to kept coordinates
    shapes = [p.shape for p in params]

    def loss_of(flat):
        parts, i = [], 0
        for shp in shapes:
            n = math.prod(shp)
            parts.append(flat[i : i + n].reshape(shp))
            i += n
        out = torch.func.functional_call(model, dict(zip(names, parts)), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    h = torch.autograd.functional.hessian(loss_of, flat).double()
    h = h[keep][:, keep]
    top = np.sort(np.linalg.eigvalsh(h.numpy()))[::-1][:3]
    np.testing.assert_allclose(got["eigenvalues"], top, rtol=1e-4, atol=1e-6)


def test_predict_unclipped_limit_is_the_noisy_gd_formula():
    # C ≫ every per-sample norm: no clipping, so per-coordinate noise τ² = s²/B + ν²/B² with
    # ν = σC, and the stationary excess is Σ_i η τ² / (2(2 − η λ_i)) (REFERENCE.md §5; derived in
    # dptheory.quadratic / clipped_dynamics).
    measured = {"dim": 50, "sample_std": 0.3, "eigenvalues": np.array([2.0, 1.0, 0.5, -0.1])}
    lr, batch, clip, sigma = 0.1, 16, 1e4, 1e-4
    got = validate.predict(measured=measured, lr=lr, batch_size=batch, clip_norm=clip, noise_multiplier=sigma)
    tau2 = 0.3**2 / batch + (sigma * clip) ** 2 / batch**2
    expect = sum(lr * tau2 / (2 * (2 - lr * lam)) for lam in (2.0, 1.0, 0.5))
    assert got["rank"] == 3  # the negative eigenvalue is not a curved basin direction
    assert got["excess_loss"] == pytest.approx(expect, rel=1e-6)
    assert got["clip_fraction"] == pytest.approx(0.0, abs=1e-12)


def test_missing_nn_extra_is_one_line_and_status_2(monkeypatch, capsys):
    # A core-only install (the README's first command) has no torch: the dispatcher must say which
    # extra to install, in one line, instead of a traceback.
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
