"""The per-example proof (simulations.nn.separability): what it accepts, what it refuses and why."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from simulations.nn.models import MODELS, build_model
from simulations.nn.separability import per_example_proof


class Lambda(nn.Module):
    """A model whose forward is ``fn(self, x)`` around a Linear(4, 3) (for one-line cases)."""

    def __init__(self, fn):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


ACCEPTED = {
    "flatten from 1": (lambda m, x: m.fc(x.flatten(1)[:, :4]), (2, 2)),
    "view(size(0), -1)": (lambda m, x: m.fc(x.view(x.size(0), -1)), (2, 2)),
    "view(shape[0], -1)": (lambda m, x: m.fc(x.view(x.shape[0], -1)), (2, 2)),
    "reshape(-1, per-example size)": (lambda m, x: m.fc(x.reshape(-1, 4)), (2, 2)),
    "sequence Linear (B, L, F)": (lambda m, x: m.fc(x).sum(1), (5, 4)),
    "index [:, 0]": (lambda m, x: m.fc(x[:, 0]), (3, 4)),
    "permute keeping dim 0": (lambda m, x: m.fc(x.permute(0, 2, 1)).mean(1), (4, 3)),
    "softmax over dim 1": (lambda m, x: m.fc(torch.softmax(x, dim=1)), (4,)),
    "cat along dim 1": (lambda m, x: m.fc(torch.cat([x, x], dim=1)[:, :4]), (4,)),
    "constant broadcast": (lambda m, x: m.fc(x * 2.0 + 1.0), (4,)),
    "layer called twice": (lambda m, x: m.fc(torch.cat([m.fc(x), x[:, :1]], dim=1)), (4,)),
}

REFUSED = {
    "reshape (B·L, F)": (lambda m, x: m.fc(x.reshape(x.shape[0] * x.shape[1], 4)), (3, 4), "leading dim"),
    "reshape(-1, F) with L > 1": (lambda m, x: m.fc(x.reshape(-1, 4)), (3, 4), "leading dim"),
    "flatten(0, 1)": (lambda m, x: m.fc(x.flatten(0, 1)), (3, 4), "batch dim"),
    "mean over the batch": (lambda m, x: m.fc(x - x.mean(0)), (4,), "batch dim"),
    "index [0]": (lambda m, x: m.fc(x[0]).expand(x.shape[0], 3), (4,), "batch dim"),
    "transpose(0, 1)": (lambda m, x: m.fc(x.transpose(0, 1)), (3, 4), "batch dim"),
    "batch size as a value": (lambda m, x: m.fc(x * x.shape[0]), (4,), "batch size"),
    "cat along dim 0": (lambda m, x: m.fc(torch.cat([x, x], dim=0))[: x.shape[0]], (4,), "batch dim"),
    "parameter used directly": (lambda m, x: F.linear(x, m.fc.weight), (4,), "used outside its layer"),
    "data-dependent branch": (lambda m, x: m.fc(x) if x.sum() > 0 else m.fc(-x), (4,), "not traceable"),
    "random ops": (lambda m, x: m.fc(x + torch.randn_like(x)), (4,), "not supported"),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_forwards(name):
    fn, shape = ACCEPTED[name]
    proof = per_example_proof(Lambda(fn), torch.randn(1, *shape))
    assert proof.ok, proof.reason


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_forwards_name_the_reason(name):
    fn, shape, reason = REFUSED[name]
    proof = per_example_proof(Lambda(fn), torch.randn(1, *shape))
    assert not proof.ok
    assert reason in proof.reason, proof.reason


@pytest.mark.parametrize(
    "layer,reason",
    [
        (nn.BatchNorm1d(4), "BatchNorm1d"),  # mixes examples through batch statistics
        (nn.PReLU(), "not supported"),  # owns parameters the engine has no closed form for
        (nn.Dropout(0.5), "Dropout"),
        (nn.Conv1d(1, 2, 1), "rank-2"),  # a 2-D input to Conv1d is one unbatched example: mixes rows
        (nn.LayerNorm((1, 4)), "over the batch dim"),
    ],
)
def test_refused_layers(layer, reason):
    proof = per_example_proof(nn.Sequential(nn.Linear(4, 4), layer), torch.randn(1, 4))
    assert not proof.ok and reason in proof.reason, proof.reason


def test_dropout_in_eval_mode_and_hooks():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    x = torch.randn(1, 4)
    assert not per_example_proof(model, x).ok
    model.eval()
    assert per_example_proof(model, x).ok
    handle = model[0].register_forward_hook(lambda *args: None)
    proof = per_example_proof(model, x)
    assert not proof.ok and "hooks" in proof.reason
    handle.remove()
    assert per_example_proof(model, x).ok


@pytest.mark.parametrize("name", MODELS)
def test_repository_models_are_proved(name):
    shape = {"mlp": (12,), "cnn": (1, 8, 8), "dpcnn": (1, 14, 14)}.get(name, (1, 8, 8))
    kw = dict(width=2, depth=10) if name.startswith("wrn") else dict(width=4, depth=2)
    model = build_model(name, input_shape=shape, num_classes=3, seed=0, **kw)
    proof = per_example_proof(model, torch.randn(1, *shape))
    assert proof.ok, proof.reason
    assert all(n == 1 for n in proof.param_uses.values())
    params = {id(p) for p in model.parameters()}
    assert set(proof.param_uses) == params  # every parameter is reached by exactly one layer call


def test_parameter_sharing_is_counted_and_the_cache_follows_the_structure():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied across modules
    model = nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), a)  # and `a` called twice
    x = torch.randn(1, 4)
    proof = per_example_proof(model, x)
    assert proof.ok
    assert proof.param_uses[id(a.weight)] == 3 and proof.param_uses[id(a.bias)] == 2
    assert proof.param_uses[id(b.bias)] == 1
    assert per_example_proof(model, torch.randn(1, 4)) is proof  # cached per structure and shape
    model[1] = nn.BatchNorm1d(4)  # a structure change invalidates the cached proof
    assert not per_example_proof(model, x).ok


def test_example_argument_is_validated():
    proof = per_example_proof(nn.Linear(4, 2), torch.randn(2, 4))
    assert not proof.ok and "one example" in proof.reason
    proof = per_example_proof(nn.Linear(4, 2), torch.ones(1, 4, dtype=torch.long))
    assert not proof.ok and "floating point" in proof.reason
