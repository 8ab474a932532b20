"""Tests of the training loop: resume bit for bit, paired streams, modes, masks, privacy labels, config checks."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from dptheory.privacy import PoissonGaussianMechanism, epsilon
from simulations.nn.train import TrainConfig, checkpoint_path, run_train, train, training_cost

torch.set_num_threads(1)

# tiny but real: teacher task (40 features, 10 classes), 1 hidden layer of 8 → d = 418
BASE = TrainConfig(
    dataset="teacher",
    n_train=120,
    n_test=60,
    width=8,
    depth=1,
    epochs=2,
    batch_size=20,
    lr=0.2,
    noise_multiplier=2.0,
    clip_norm=1.0,
    quiet=True,
    accountants=("rdp",),
)


def _strip(history):
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]


def _losses(res):
    return [(r["train_loss"], r["test_loss"], r["test_acc"]) for r in res["history"]]


class _Stop(Exception):
    pass


def test_resume_is_bit_for_bit(tmp_path):
    cfg = replace(
        BASE,
        epochs=3,
        momentum=0.5,
        lr_schedule="cosine",
        sparsity=0.5,
        burst_step=8,
        burst_scale=0.05,
        diagnostics="full",
        hessian_k=2,
        hessian_samples=60,
    )
    full, model_full = train(replace(cfg, out=str(tmp_path / "a")), return_model=True)

    def stop_after_first(epoch, rec):
        if epoch == 1:
            raise _Stop

    interrupted = replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(_Stop):
        train(interrupted, progress=stop_after_first)
    assert checkpoint_path(interrupted).is_file()
    resumed, model_resumed = train(replace(interrupted, resume=True), return_model=True)
    assert _strip(resumed["history"]) == _strip(full["history"])
    assert resumed["steps"] == full["steps"]
    for (k, a), (_, b) in zip(model_full.state_dict().items(), model_resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert "burst_norm" in full["history"][2]  # step 8 lies in epoch 2 (6 steps per epoch)
    for rec in full["history"][1:]:  # Lanczos on the masked Hessian (d = 418 > dense threshold)
        top = rec["hessian_top"]
        assert len(top) == 2 and top[0] >= top[1] and 1.0 <= rec["hessian_eff_rank"] <= 2.0
        assert 0.0 <= rec["bias_in_top_k"] <= 1.0


def test_resume_refuses_a_different_config(tmp_path):
    cfg = replace(BASE, epochs=2, out=str(tmp_path / "r"))
    with pytest.raises(_Stop):
        train(cfg, progress=lambda e, r: (_ for _ in ()).throw(_Stop()))
    with pytest.raises(ValueError, match="different config"):
        train(replace(cfg, lr=0.3, resume=True))


def test_modes_share_batches_and_noise_only_limits():
    runs = {
        m: train(replace(BASE, mode=m, ref_clip_norm=None if m != "noise" else 1.0))
        for m in ("sgd", "clip", "noise", "dpsgd")
    }
    sizes = [runs[m]["steps"]["batch_size"] for m in runs]
    assert all(s == sizes[0] for s in sizes)  # identical Poisson batches across modes (paired)
    # σ = 0: noise-only is exactly SGD; a clip norm above every per-sample norm makes clip-only exactly SGD
    # not vacuous: at C = 1 most per-sample gradients WOULD be clipped (the sgd run reports it)
    assert runs["sgd"]["history"][-1]["clip_fraction"] > 0.5
    no_noise = train(replace(BASE, mode="noise", noise_multiplier=0.0))
    assert _losses(no_noise) == _losses(runs["sgd"])
    huge_clip = train(replace(BASE, mode="clip", clip_norm=1e9))
    assert _losses(huge_clip) == _losses(runs["sgd"])
    assert runs["clip"]["history"][-1]["train_loss"] != runs["sgd"]["history"][-1]["train_loss"]
    assert runs["dpsgd"]["privacy"]["private"] and not runs["noise"]["privacy"]["private"]
    assert math.isinf(runs["sgd"]["privacy"]["epsilon_rdp"])


def test_noise_only_mode_noise_std_is_sigma_times_ref_clip():
    # noise_norm = ν‖ξ‖ with ‖ξ‖² ~ χ²_d, so E[noise_norm²] = ν² d and the mean over T steps has
    # SE = ν² √(2d/T); k = 4 SE. ν = σ·C_ref with C_ref ≠ C (C = 0.01 would be a very different ν).
    sigma, c_ref = 0.7, 3.0
    res = train(replace(BASE, mode="noise", noise_multiplier=sigma, clip_norm=0.01, ref_clip_norm=c_ref, epochs=3))
    d = res["parameters"]
    sq = torch.tensor(res["steps"]["noise_norm"], dtype=torch.float64) ** 2
    nu2 = (sigma * c_ref) ** 2
    assert abs(float(sq.mean()) - nu2 * d) < 4 * nu2 * math.sqrt(2 * d / sq.numel())
    # (that noise-only does not clip is shown exactly in test_modes_share_batches_and_noise_only_limits)


def test_masks_keep_pruned_weights_exactly_zero_and_noise_free():
    res, model = train(
        replace(BASE, sparsity=0.8, prune_scope="layer", momentum=0.9, burst_step=3, burst_scale=0.1), return_model=True
    )
    from simulations.nn.masks import magnitude_masks
    from simulations.nn.models import build_model

    init = build_model("mlp", input_shape=(40,), num_classes=10, width=8, depth=1, seed=BASE.seed)
    masks = magnitude_masks(dict(init.named_parameters()), sparsity=0.8, scope="layer")
    kept = 0
    for k, p in model.named_parameters():
        assert torch.all(p[masks[k] == 0] == 0), k  # exactly zero after noise, momentum and a burst
        assert torch.all(p[masks[k] == 1] != 0), k
        kept += int(masks[k].sum())
    assert res["kept_parameters"] == kept < res["parameters"]
    # noise only on kept coordinates: E[noise_norm²] = ν² d_kept (k = 4 SE as above)
    sq = torch.tensor(res["steps"]["noise_norm"], dtype=torch.float64) ** 2 / 2.0**2  # ν = σC = 2
    assert abs(float(sq.mean()) - kept) < 4 * math.sqrt(2 * kept / sq.numel())


def test_every_model_trains_through_the_config():
    # the standard DP image CNN and the weight-standardised WRN are reachable from a TrainConfig
    for model, depth in (("dpcnn", 1), ("wrn_ws", 10)):
        res = train(replace(BASE, dataset="mnist5k" if model == "dpcnn" else "digits", model=model, width=1,
                            depth=depth, n_train=64, n_test=32, epochs=1, batch_size=32))  # fmt: skip
        assert res["privacy"]["label"] == "private" and math.isfinite(res["history"][-1]["train_loss"])
    with pytest.raises(ValueError, match="dpcnn needs 2-D images"):
        training_cost(replace(BASE, model="dpcnn"))


def test_switching_and_labels():
    res = train(replace(BASE, epochs=3, mode="sgd", switch_epoch=1, switch_mode="dpsgd"))
    assert [r["mode"] for r in res["history"]] == ["sgd", "sgd", "dpsgd", "dpsgd"]
    assert res["privacy"]["label"] == "not private: non-DP steps: 6 sgd"
    back = train(replace(BASE, epochs=3, mode="dpsgd", switch_epoch=2, switch_mode="clip"))
    assert [r["mode"] for r in back["history"]][1:] == ["dpsgd", "dpsgd", "clip"]
    assert math.isfinite(back["history"][2]["epsilon_rdp"]) and math.isinf(back["history"][3]["epsilon_rdp"])


def test_normalised_clipping_runs_are_private_and_only_eta_times_c_matters():
    # under the normalised rule the update is eta*C*(sum g_i/(|g_i|+gamma) + sigma*xi)/B: halving C and
    # doubling lr gives the same weights (to float rounding), with the same privacy label and epsilon
    a = train(replace(BASE, clip_rule="normalised", clip_norm=1.0, lr=0.2))
    b = train(replace(BASE, clip_rule="normalised", clip_norm=0.5, lr=0.4))
    flat = train(replace(BASE, clip_rule="flat", clip_norm=1.0, lr=0.2))
    assert a["privacy"]["label"] == b["privacy"]["label"] == "private"
    assert a["history"][-1]["epsilon_rdp"] == b["history"][-1]["epsilon_rdp"]
    for ra, rb in zip(_losses(a), _losses(b)):
        assert ra == pytest.approx(rb, rel=1e-4, abs=1e-6)
    assert _losses(a) != _losses(flat)  # the rule is applied (BASE's norms are not all far above C)


def test_epsilon_matches_accountant_and_calibration_is_conservative():
    res = train(replace(BASE, accountants=("rdp", "pld")))
    steps = res["total_steps"]
    mech = PoissonGaussianMechanism(noise_multiplier=2.0, sample_rate=20 / 120, steps=steps)
    assert res["privacy"]["epsilon_rdp"] == epsilon(mechanisms=mech, delta=1e-5, accountant="rdp")
    assert res["privacy"]["epsilon_pld"] == epsilon(mechanisms=mech, delta=1e-5, accountant="pld")
    assert res["history"][-1]["epsilon_rdp"] == res["privacy"]["epsilon_rdp"]
    # small q keeps the RDP bisection cheap; the run has 24 DP-SGD steps at q = 1/24
    cal = train(replace(BASE, n_train=240, batch_size=10, epochs=1, noise_multiplier=None, target_epsilon=2.0))
    assert cal["total_steps"] == 24
    assert 1.99 < cal["privacy"]["epsilon_rdp"] <= 2.0
    assert cal["privacy"]["epsilon_rdp"] == epsilon(
        mechanisms=PoissonGaussianMechanism(
            noise_multiplier=cal["privacy"]["noise_multiplier"], sample_rate=1 / 24, steps=24
        ),
        delta=1e-5,
    )


def test_run_train_folder_and_private_mask_composition(tmp_path):
    first = run_train(replace(BASE, out=str(tmp_path / "dp")))
    for name in ("config.json", "metrics.json", "env.json", "model.pt", "metrics.npz"):
        assert (first / name).is_file(), name
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["privacy"]["label"] == "private"
    assert checkpoint_path(replace(BASE, out=str(tmp_path / "dp"))).is_file()  # kept: --resume can extend it

    second = train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(first)))
    m1 = PoissonGaussianMechanism(**metrics["privacy"]["mechanisms"][0])
    m2 = PoissonGaussianMechanism(noise_multiplier=2.0, sample_rate=20 / 120, steps=second["total_steps"])
    assert second["privacy"]["epsilon_rdp"] == epsilon(mechanisms=[m1, m2], delta=1e-5)
    assert second["privacy"]["epsilon_rdp"] > metrics["privacy"]["epsilon_rdp"]

    sgd = run_train(replace(BASE, mode="sgd", out=str(tmp_path / "sgd")))
    oracle = train(replace(BASE, sparsity=0.5, mask_source="oracle", mask_run=str(sgd)))
    assert oracle["privacy"]["label"].startswith("not private: oracle mask")
    assert math.isinf(oracle["privacy"]["epsilon_rdp"])
    with pytest.raises(ValueError, match="private mask_run"):
        train(replace(BASE, sparsity=0.5, mask_source="private", mask_run=str(sgd)))
    with pytest.raises(ValueError, match="width"):
        train(replace(BASE, width=9, sparsity=0.5, mask_source="private", mask_run=str(first)))


@pytest.mark.parametrize(
    "changes,name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=1.5), "epochs"),
        (dict(momentum=1.0), "momentum"),
        (dict(mode="adam"), "mode"),
        (dict(clip_norm=0.0), "clip_norm"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(noise_multiplier=1.0, target_epsilon=3.0), "not both"),
        (dict(delta=1.0), "delta"),
        (dict(switch_epoch=1), "switch_mode"),
        (dict(switch_epoch=5, switch_mode="sgd"), "switch_epoch"),
        (dict(sparsity=1.0), "sparsity"),
        (dict(sparsity=0.5, mask_source="private"), "mask_run"),
        (dict(lr_schedule="linear"), "lr_schedule"),
        (dict(prune_scope="row"), "prune_scope"),
        (dict(resume=True), "resume"),
        (dict(accountants=("gdp",)), "accountants"),
        (dict(mode="dpsgd", clip_norm=math.inf), "finite clip_norm"),
        (dict(grad_method="fast"), "grad_method"),
        (dict(clip_rule="auto-v"), "clip_rule"),
        (dict(mode="clip", clip_rule="normalised", clip_norm=math.inf), "clip_norm must be finite"),
    ],
)
def test_invalid_config(changes, name):
    with pytest.raises(ValueError, match=name):
        replace(BASE, **changes)


def test_cli_parses_train_config():
    from simulations.common.cli import parse_config

    cfg = parse_config(
        TrainConfig,
        ["--epochs", "1e1", "--mode", "noise", "--ref-clip-norm", "2", "--accountants", "rdp,prv", "--no-quiet"],
    )
    assert cfg.epochs == 10 and cfg.mode == "noise" and cfg.ref_clip_norm == 2.0 and cfg.accountants == ("rdp", "prv")


def test_lr_schedules():
    step = train(replace(BASE, epochs=3, mode="sgd", lr_schedule="step", lr_step_epochs=1, lr_gamma=0.5))
    assert [r["lr"] for r in step["history"]] == [0.2, 0.2, 0.1, 0.05]
    cos = train(replace(BASE, epochs=2, mode="sgd", lr_schedule="cosine"))
    total = cos["total_steps"]  # the record holds the lr of the epoch's last step t: η·½(1 + cos(πt/T))
    assert cos["history"][-1]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * (total - 1) / total)))
    assert cos["history"][1]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * (total / 2 - 1) / total)))


def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    from simulations.nn.train import main

    assert main(["--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs must be >= 1, got 0" in err
    assert main(["--mode", "adam"]) == 2
    assert (
        main(
            [
                "--dataset",
                "teacher",
                "--sparsity",
                "0.5",
                "--mask-source",
                "private",
                "--mask-run",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "mask_run folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# resume extends a finished run; the NaN guard; threads; sizes refused up front


def test_resume_extends_a_finished_run_bit_for_bit(tmp_path, capsys):
    short = replace(BASE, momentum=0.5, lr_schedule="step", lr_step_epochs=1, lr_gamma=0.5, out=str(tmp_path / "r"))
    run_train(short)
    assert checkpoint_path(short).is_file()  # the finished run keeps its final checkpoint
    longer = replace(short, epochs=4, resume=True, quiet=False)
    extended = train(longer)
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"resume: reused epochs 1-2 from {str(checkpoint_path(short))!r}; training epochs 3-4"
    reference = train(replace(short, epochs=4, out=None))
    assert _strip(extended["history"]) == _strip(reference["history"]) and extended["steps"] == reference["steps"]
    assert extended["resumed_epochs"] == 2 and reference["resumed_epochs"] == 0
    # the checkpoint is now at epoch 4: resuming again reuses everything
    again = train(longer)
    assert capsys.readouterr().out.startswith("resume: all 4 epochs reused")
    assert _strip(again["history"]) == _strip(extended["history"])
    with pytest.raises(ValueError, match="more than epochs=3"):
        train(replace(longer, epochs=3))


def test_resume_refuses_to_extend_what_depends_on_the_total(tmp_path):
    cos = replace(BASE, lr_schedule="cosine", out=str(tmp_path / "c"))
    run_train(cos)
    with pytest.raises(ValueError, match="cosine schedule depends on the total"):
        train(replace(cos, epochs=3, resume=True))
    eps = replace(BASE, noise_multiplier=None, target_epsilon=8.0, out=str(tmp_path / "e"))
    run_train(eps)
    with pytest.raises(ValueError, match="calibrated to target_epsilon"):
        train(replace(eps, epochs=3, resume=True))
    fresh = replace(BASE, out=str(tmp_path / "none"), resume=True, quiet=False)
    train(fresh)  # no checkpoint yet: says so and trains from scratch


def test_divergence_is_refused_and_nothing_is_labelled_private(tmp_path, capsys):
    from simulations.nn.train import TrainingDiverged, main

    with pytest.raises(TrainingDiverged, match="diverged by epoch 1"):
        train(replace(BASE, lr=1e6, mode="sgd"))
    # clipped steps keep the loss finite, but blown up: over 100 × its initial value is divergence too
    with pytest.raises(TrainingDiverged, match="over 100× its initial"):
        train(replace(BASE, lr=1e6, mode="dpsgd"))
    out = tmp_path / "nan"
    assert (
        main(
            [
                "--dataset",
                "teacher",
                "--n-train",
                "60",
                "--n-test",
                "30",
                "--width",
                "4",
                "--depth",
                "1",
                "--epochs",
                "2",
                "--batch-size",
                "6",
                "--lr",
                "1e6",
                "--mode",
                "sgd",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err and "--lr" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_threads_are_saved_set_and_part_of_the_resume_key(tmp_path):
    import os

    res = train(BASE)
    assert res["threads"] == BASE.threads == 1
    cfg = replace(BASE, out=str(tmp_path / "t"))
    run_train(cfg)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["threads"] == 1
    if (os.cpu_count() or 1) >= 2:
        with pytest.raises(ValueError, match="threads"):
            train(replace(cfg, threads=2, resume=True))
    with pytest.raises(ValueError, match="threads must be <="):
        replace(BASE, threads=10**6)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(width=10**12), "the training run would need"),
        (dict(depth=10**12), "the training run would need"),
        (dict(n_train=10**12), "the training run would need"),
        (dict(epochs=10**9), "the training run would take"),
        (dict(batch_size=500), "batch_size must be <="),
        (dict(burst_step=1000, burst_scale=1.0), "burst_step must be <"),
        (dict(model="wrn"), "wrn needs 2-D images"),
        (dict(noise_multiplier=None, target_epsilon=1e5, accountants=("rdp", "pld")), "calibrates sigma"),
    ],
)
def test_impossible_runs_are_refused_before_training(changes, match):
    with pytest.raises(ValueError, match=match):
        train(replace(BASE, **changes))


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(switch_epoch=2, switch_mode="sgd"), "never happens"),
        (dict(lr=1e300), "lr must be between"),
        (dict(clip_norm=1e300), "clip_norm must be"),
        (dict(noise_multiplier=1e300), "noise_multiplier must be <="),
        (dict(noise_multiplier=1e-300), "noise_multiplier must be 0 or >= 1e-30"),
        (dict(noise_multiplier=0.01, accountants=("rdp", "pld")), "use --accountants rdp"),
        (dict(ref_clip_norm=1e300), "ref_clip_norm"),
        (dict(burst_step=3, burst_scale=0.0), "burst_scale > 0"),
        (dict(target_epsilon=1e300, noise_multiplier=None), "target_epsilon must be <="),
        (dict(seed=2**64), "seed must be <="),
    ],
)
def test_out_of_range_values_name_the_argument(changes, match):
    with pytest.raises(ValueError, match=match):
        replace(BASE, **changes)


def test_train_cli_defaults_and_summary_line(tmp_path, capsys, monkeypatch):
    from simulations.common.cli import build_parser
    from simulations.nn.train import main

    assert build_parser(TrainConfig, defaults={"out": "results/nn/train"}).parse_args([]).out == "results/nn/train"
    monkeypatch.chdir(tmp_path)
    args = [
        "--dataset",
        "teacher",
        "--n-train",
        "60",
        "--n-test",
        "30",
        "--width",
        "4",
        "--depth",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--accountants",
        "rdp",
    ]
    assert main([*args, "--mode", "sgd"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("results/nn/train: test_acc") and "sigma" not in last and "not private" in last
    assert (tmp_path / "results" / "nn" / "train" / "metrics.json").is_file()
    assert main([*args, "--out", "dp"]) == 0
    assert "private, sigma 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "model,dataset,depths",
    [
        ("mlp", "teacher:k=2,d=8", (0, 1, 2, 3, 4, 7)),
        ("cnn", "teacher:k=2,d=8", (1, 2, 4, 6)),
        ("wrn", "digits", (10, 16, 22)),
        ("wrn_ws", "digits", (10, 16)),
        ("dpcnn", "mnist5k", (1,)),
    ],
)
def test_parameter_estimate_is_the_built_models_count(model, dataset, depths):
    """The resource guard's d (extrapolated in depth, never looping over layers) is exactly the model's."""
    from simulations.nn.data import dataset_shape
    from simulations.nn.models import build_model, count_parameters
    from simulations.nn.train import parameter_count

    shape, classes, *_ = dataset_shape(dataset)
    for depth in depths:
        cfg = replace(BASE, dataset=dataset, model=model, width=3, depth=depth)
        built = build_model(model, input_shape=shape, num_classes=classes, width=3, depth=depth, seed=0)
        assert parameter_count(cfg, shape, classes) == count_parameters(built), (model, depth)
