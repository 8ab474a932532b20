"""Proof that a network treats the rows of every layer input as separate examples (what book-keeping needs).

The fast per-sample methods of ``simulations.nn.engine`` read, for every parametrised layer call, its
input a and output gradient δ for the whole batch and use row i of each as example i's. That is exact,
and the clipped contribution of example i has norm ≤ C (the sensitivity bound), only if

    (P) for every tensor the forward pass computes from the input x, dim 0 indexes the examples and
        row i is a function of x_i alone (and of the parameters),

so that a_i, o_i depend on x_i only and δ_i = ∂ℓ_i/∂o_i. A model that reshapes (B, L, F) to (B·L, F)
before a Linear layer breaks (P): rows are then positions, not examples, and per-row clipping lets
one example contribute up to √L·C.

:func:`per_example_proof` proves (P) by abstract interpretation of the forward graph obtained by
``torch.fx`` symbolic tracing (with the shapes of one example from ``ShapeProp``). Every graph node must
match a rule that preserves (P) — derived here, one line each:

* elementwise ops (activations, +, −, ×, ÷, clamp, …) whose batched operands have the output's rank
  and whose constant operands broadcast over dim 0 (rank below the output's, or dim 0 of size 1);
* ops acting only on dims ≥ 1: ``flatten``/``Flatten`` from start dim ≥ 1, ``unsqueeze``/``squeeze``/
  ``transpose`` on dims ≥ 1, ``permute`` keeping dim 0 first, reductions and softmax over dims ≥ 1,
  ``cat``/``stack``/``split``/``chunk`` along dims ≥ 1, indexing whose first index is ``:``, pooling and
  padding of the trailing (spatial) dims only, ``Dropout`` in eval mode;
* ``view``/``reshape`` whose first target dim is the batch size (from ``x.size(0)``/``x.shape[0]``) or
  −1 with the remaining dims multiplying to the per-example size: row-major order keeps each example's
  block of entries intact exactly when the leading dim stays B;
* the parametrised layers the engine differentiates in closed form, each on inputs of the rank where
  dim 0 is the batch: ``nn.Linear`` (rank ≥ 2; positions in between), ``nn.Conv1d``/``WSConv1d``
  (rank 3), ``nn.Conv2d``/``WSConv2d`` (rank 4), ``nn.GroupNorm`` (rank ≥ 2), ``nn.LayerNorm`` (rank
  above its normalised dims).

Anything else refuses the proof with a one-line reason: untraceable Python control flow, a trainable
parameter read outside its layer (its gradient would be missed), any other module owning parameters
(BatchNorm mixes examples), batch-size-dependent values (``x.size(0)`` used as a number), module hooks.
The proof covers the traced forward only; it is cached per model structure and per-example input shape.
Parameter sharing (a layer called twice, weights tied across layers) is allowed and reported in
``param_uses`` (the engine sums the calls' per-sample gradients).

Example:
    >>> import torch
    >>> from torch import nn
    >>> per_example_proof(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(1, 3)).ok
    True
    >>> class Rows(nn.Module):  # (B, L, F) → (B·L, F): rows are positions, not examples
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(3, 2)
    ...     def forward(self, x):
    ...         b, l, f = x.shape
    ...         return self.fc(x.reshape(b * l, f)).reshape(b, -1)
    >>> per_example_proof(Rows(), torch.randn(1, 4, 3)).reason
    'reshape of a batched tensor to a leading dim that is not the batch size (node reshape)'
"""

from __future__ import annotations

import math
import operator
import weakref
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from simulations.nn.layers import WSConv1d, WSConv2d

__all__ = ["PARAMETRISED_LAYERS", "PerExampleProof", "per_example_proof"]

PARAMETRISED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, WSConv1d, WSConv2d, nn.GroupNorm, nn.LayerNorm)
_LAYER_RANK = {nn.Conv1d: 3, WSConv1d: 3, nn.Conv2d: 4, WSConv2d: 4}
_ELEMENTWISE_MODULES = {
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid,
    nn.Identity,
}  # fmt: skip
_POOL_MODULES = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2, nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2,
}  # fmt: skip
_DROPOUT_MODULES = {nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout}
_OTHER_MODULES = {nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax}
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.relu_, torch.tanh, torch.sigmoid, torch.exp, torch.log, torch.abs, torch.neg,
    torch.square, torch.sqrt, torch.rsqrt, torch.sin, torch.cos, torch.erf, torch.clamp, torch.clip,
    torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.pow,
    F.relu, F.relu6, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.leaky_relu, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.softplus, F.softsign, F.tanhshrink, F.logsigmoid, F.sigmoid, F.tanh,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "exp", "log", "abs", "neg", "square", "sqrt",
    "clamp", "clamp_", "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "float", "double",
    "contiguous", "clone",
}  # fmt: skip
_REDUCTIONS = {"sum", "mean", "amax", "amin", "std", "var", "logsumexp", "prod"}
_POOL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.avg_pool1d: 1, F.avg_pool2d: 2, F.adaptive_avg_pool1d: 1,
    F.adaptive_avg_pool2d: 2, F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2,
}  # fmt: skip
_KNOWN_MODULES = (
    set(PARAMETRISED_LAYERS) | _ELEMENTWISE_MODULES | set(_POOL_MODULES) | _DROPOUT_MODULES | _OTHER_MODULES
)
_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.neg}


@dataclass(frozen=True)
class PerExampleProof:
    """Outcome of :func:`per_example_proof`: ``ok`` (property (P) proved), ``reason`` (why not, one line),
    ``layer_calls`` (qualified names of the parametrised layer calls, in graph order), ``param_uses``
    (id of each trainable parameter → number of layer calls that use it) and ``layers`` (the distinct
    layer modules with trainable parameters, for the engine's hooks)."""

    ok: bool
    reason: str = ""
    layer_calls: tuple[str, ...] = ()
    param_uses: dict[int, int] = field(default_factory=dict)
    layers: tuple[nn.Module, ...] = ()


class _Unproven(Exception):
    pass


@dataclass(frozen=True)
class _Batched:
    """A tensor with dim 0 = examples; ``shape`` = per-example shape."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape) + 1


@dataclass(frozen=True)
class _Const:
    """A tensor that does not depend on the input (buffer, frozen parameter)."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


class _Symbol:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_BATCH = _Symbol("B")  # the batch size
_TAINT = _Symbol("f(B)")  # a number computed from the batch size
_OPAQUE = _Symbol("opaque")  # dtype, device and other harmless attributes


class _Root(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m(x)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in PARAMETRISED_LAYERS or next(m.parameters(recurse=False), None) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks() -> bool:
    from torch.nn.modules import module as mod

    return bool(
        mod._global_forward_hooks
        or mod._global_forward_pre_hooks
        or mod._global_backward_hooks
        or mod._global_backward_pre_hooks
    )


def _fingerprint(model: nn.Module) -> tuple:
    """Everything the proof depends on besides the forward code: the module tree (identity, type,
    train/eval, hooks) and the parameters (identity, trainable) — one walk, no names."""
    out: list = []
    stack = [model]
    while stack:
        m = stack.pop()
        out.append((id(m), type(m), m.training, _has_hooks(m)))
        out.extend((id(p), p.requires_grad) for p in m._parameters.values() if p is not None)
        stack.extend(c for c in m._modules.values() if c is not None)
    return tuple(out)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def per_example_proof(model: nn.Module, example: torch.Tensor) -> PerExampleProof:
    """Prove property (P) of the module docstring for ``model`` on inputs shaped like ``example``
    (one example with its batch dim, e.g. ``x[:1]``); cached per model structure and input shape."""
    if _global_hooks():
        return PerExampleProof(False, "global module hooks are registered")
    key = (_fingerprint(model), tuple(example.shape[1:]), example.dtype, example.device)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model.clear()  # a structure change invalidates older entries
        per_model[key] = _prove(model, example)
    return per_model[key]


def _prove(model: nn.Module, example: torch.Tensor) -> PerExampleProof:
    if example.dim() < 1 or example.shape[0] != 1:
        return PerExampleProof(False, f"example must hold one example (shape (1, ...)), got {tuple(example.shape)}")
    if not example.is_floating_point():
        return PerExampleProof(False, f"input must be floating point, got {example.dtype}")
    hooked = [n or "model" for n, m in model.named_modules() if _has_hooks(m)]
    if hooked:
        return PerExampleProof(False, f"module hooks are registered on {hooked[0]!r}")
    root = _Root(model)
    try:
        graph = _Tracer().trace(root)
        gm = fx.GraphModule(root, graph)
    except Exception as exc:  # untraceable forward: no proof, the engine falls back
        return PerExampleProof(False, f"forward not traceable by torch.fx ({type(exc).__name__}: {str(exc)[:80]})")
    for node in gm.graph.nodes:  # unsupported layers first: a clearer reason than a failed shape pass
        if node.op == "call_module" and type(gm.get_submodule(str(node.target))) not in _KNOWN_MODULES:
            t = type(gm.get_submodule(str(node.target))).__name__
            name = str(node.target).removeprefix("m.") if node.target != "m" else "model"
            return PerExampleProof(False, f"module {name} of type {t} is not supported by the fast path")
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as exc:
        return PerExampleProof(False, f"forward not traceable by torch.fx ({type(exc).__name__}: {str(exc)[:80]})")
    try:
        calls = _interpret(gm)
    except _Unproven as exc:
        return PerExampleProof(False, str(exc))
    uses: dict[int, int] = {}
    layers: dict[int, nn.Module] = {}
    for qualname in calls:
        module = root.get_submodule(qualname)
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                uses[id(p)] = uses.get(id(p), 0) + 1
                layers[id(module)] = module
    names = tuple(q.removeprefix("m.") if q != "m" else "" for q in calls)
    return PerExampleProof(True, "", names, uses, tuple(layers.values()))


# ---------------------------------------------------------------------------------------------
# abstract interpretation


def _meta(node: fx.Node) -> tuple[int, ...]:
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        raise _Unproven(f"no tensor shape for node {node.name}")
    return tuple(tm.shape)


def _batched_out(node: fx.Node) -> _Batched:
    shape = _meta(node)
    if len(shape) < 1:
        raise _Unproven(f"node {node.name} returns a scalar from a batched tensor")
    return _Batched(shape[1:])


def _flat(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _flat(v)
        elif isinstance(v, dict):
            yield from _flat(v.values())
        else:
            yield v


def _resolve(d, ndim: int) -> int:
    if not isinstance(d, int) or isinstance(d, bool):
        raise _Unproven(f"dimension must be a constant int, got {d!r}")
    return d + ndim if d < 0 else d


def _arg(args, kwargs, i: int, name: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _need_batched(v, node: fx.Node) -> _Batched:
    if not isinstance(v, _Batched):
        raise _Unproven(f"node {node.name} expects a batched tensor")
    return v


def _elementwise(node, args, kwargs) -> _Batched:
    out = _batched_out(node)
    batched = False
    for v in _flat(list(args) + list(kwargs.values())):
        if isinstance(v, _Batched):
            batched = True
            if v.ndim != out.ndim:
                raise _Unproven(f"broadcast moves the batch dim (node {node.name})")
        elif isinstance(v, _Const):
            if v.ndim >= out.ndim and v.shape[0] != 1:
                raise _Unproven(f"a constant tensor varies along the batch dim (node {node.name})")
        elif isinstance(v, _Symbol) and v is not _OPAQUE:
            raise _Unproven(f"the batch size is used as a value (node {node.name})")
    if not batched:
        raise _Unproven(f"node {node.name} has no batched operand")
    return out


def _dims_at_least_one(dims, ndim: int, node) -> None:
    if dims is None:
        raise _Unproven(f"reduction over all dims includes the batch dim (node {node.name})")
    for d in dims if isinstance(dims, (tuple, list)) else (dims,):
        if _resolve(d, ndim) < 1:
            raise _Unproven(f"operation on the batch dim (node {node.name})")


def _reshape(node, x: _Batched, target) -> _Batched:
    if len(target) == 1 and isinstance(target[0], (tuple, list, torch.Size)):
        target = tuple(target[0])
    if not target:
        raise _Unproven(f"reshape to a scalar (node {node.name})")
    lead, rest = target[0], list(target[1:])
    if any(isinstance(r, _Symbol) or not isinstance(r, int) for r in rest):
        raise _Unproven(f"reshape with a batch-size-dependent trailing dim (node {node.name})")
    numel = math.prod(x.shape)
    if lead is _BATCH:
        if rest.count(-1) > 1 or (-1 not in rest and math.prod(rest) != numel):
            raise _Unproven(f"reshape changes the per-example size (node {node.name})")
    elif lead == -1 and not isinstance(lead, bool):
        if -1 in rest or math.prod(rest) != numel:
            raise _Unproven(
                f"reshape of a batched tensor to a leading dim that is not the batch size (node {node.name})"
            )
    else:
        raise _Unproven(f"reshape of a batched tensor to a leading dim that is not the batch size (node {node.name})")
    return _batched_out(node)


def _getitem(node, obj, idx):
    if isinstance(obj, (tuple, list)):
        if isinstance(idx, (int, slice)) and not isinstance(idx, bool):
            return obj[idx]
        raise _Unproven(f"indexing a sequence by {idx!r} (node {node.name})")
    if isinstance(obj, _Batched):
        items = idx if isinstance(idx, tuple) else (idx,)
        if not items or items[0] != slice(None, None, None):
            raise _Unproven(f"indexing selects along the batch dim (node {node.name})")
        for it in items[1:]:
            if not (it is None or it is Ellipsis or isinstance(it, (int, slice))):
                raise _Unproven(f"indexing by a tensor or symbol (node {node.name})")
        return _batched_out(node)
    raise _Unproven(f"indexing an unsupported value (node {node.name})")


def _size(x: _Batched, dim=None):
    full = (_BATCH, *x.shape)
    if dim is None:
        return full
    d = _resolve(dim, x.ndim)
    return full[d]


def _call_module(node, m: nn.Module, args, kwargs, calls: list[str]):
    t = type(m)
    x = _need_batched(args[0] if args else None, node)
    if t in PARAMETRISED_LAYERS:
        if len(args) != 1 or kwargs:
            raise _Unproven(f"layer {node.target} called with extra arguments")
        if t in _LAYER_RANK and x.ndim != _LAYER_RANK[t]:
            raise _Unproven(f"{t.__name__} {node.target} on a rank-{x.ndim} input (needs {_LAYER_RANK[t]})")
        if t in (nn.Linear, nn.GroupNorm) and x.ndim < 2:
            raise _Unproven(f"{t.__name__} {node.target} on a rank-1 input mixes the batch")
        if t is nn.LayerNorm and x.ndim <= len(cast(nn.LayerNorm, m).normalized_shape):
            raise _Unproven(f"LayerNorm {node.target} normalises over the batch dim")
        calls.append(str(node.target))
        return _batched_out(node)
    if t in _ELEMENTWISE_MODULES or (t in _DROPOUT_MODULES and (not m.training or m.p == 0)):
        return _elementwise(node, args, kwargs)
    if t is nn.Flatten:
        if _resolve(m.start_dim, x.ndim) < 1:
            raise _Unproven(f"Flatten {node.target} flattens the batch dim")
        return _batched_out(node)
    if t is nn.Unflatten:
        if _resolve(m.dim, x.ndim) < 1:
            raise _Unproven(f"Unflatten {node.target} splits the batch dim")
        return _batched_out(node)
    if t in (nn.Softmax, nn.LogSoftmax):
        if m.dim is None:
            raise _Unproven(f"{t.__name__} {node.target} has an implicit dim")
        _dims_at_least_one(m.dim, x.ndim, node)
        return _batched_out(node)
    if t in _POOL_MODULES:
        if x.ndim < _POOL_MODULES[t] + 1 or getattr(m, "return_indices", False):
            raise _Unproven(f"pooling {node.target} on the batch dim or with indices")
        return _batched_out(node)
    raise _Unproven(f"module {node.target or 'model'} of type {t.__name__} is not supported by the fast path")


def _call_function(node, fn, args, kwargs):
    if fn is getattr:
        obj, name = args[0], args[1]
        if isinstance(obj, _Batched):
            if name == "shape":
                return _size(obj)
            if name == "ndim":
                return obj.ndim
            if name in ("dtype", "device", "is_cuda"):
                return _OPAQUE
        raise _Unproven(f"attribute {name!r} of an unsupported value (node {node.name})")
    if fn is operator.getitem:
        return _getitem(node, args[0], args[1])
    if fn in _ARITHMETIC and not any(isinstance(v, (_Batched, _Const)) for v in _flat(args)):
        if any(isinstance(v, _Symbol) for v in args):
            return _TAINT
        return fn(*args)
    if fn in _ELEMENTWISE_FUNCTIONS:
        return _elementwise(node, args, kwargs)
    x = args[0] if args else None
    if fn is torch.flatten:
        x = _need_batched(x, node)
        if _resolve(_arg(args, kwargs, 1, "start_dim", 0), x.ndim) < 1:
            raise _Unproven(f"flatten of the batch dim (node {node.name})")
        return _batched_out(node)
    if fn in (torch.reshape,):
        return _reshape(node, _need_batched(x, node), tuple(args[1:]) or (kwargs["shape"],))
    if fn in (torch.unsqueeze,):
        x = _need_batched(x, node)
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim + 1, node)
        return _batched_out(node)
    if fn in (torch.transpose, torch.swapaxes):
        x = _need_batched(x, node)
        _dims_at_least_one([args[1], args[2]], x.ndim, node)
        return _batched_out(node)
    if fn in (torch.sum, torch.mean, torch.amax, torch.amin, torch.logsumexp):
        x = _need_batched(x, node)
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim, node)
        return _batched_out(node)
    if fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, F.normalize):
        x = _need_batched(x, node)
        default = 1 if fn is F.normalize else None
        _dims_at_least_one(_arg(args, kwargs, 1 if fn is not F.normalize else 2, "dim", default), x.ndim, node)
        return _batched_out(node)
    if fn in (torch.cat, torch.concat, torch.stack):
        parts = list(args[0])
        if not parts or not all(isinstance(p, _Batched) for p in parts):
            raise _Unproven(f"concatenation with a non-batched tensor (node {node.name})")
        ndim = parts[0].ndim + (1 if fn is torch.stack else 0)
        _dims_at_least_one(_arg(args, kwargs, 1, "dim", 0), ndim, node)
        return _batched_out(node)
    if fn in _POOL_FUNCTIONS:
        x = _need_batched(x, node)
        if x.ndim < _POOL_FUNCTIONS[fn] + 1:
            raise _Unproven(f"pooling over the batch dim (node {node.name})")
        return _batched_out(node)
    if fn is F.pad:
        x = _need_batched(x, node)
        if len(_arg(args, kwargs, 1, "pad")) // 2 >= x.ndim:
            raise _Unproven(f"padding of the batch dim (node {node.name})")
        return _batched_out(node)
    if fn is F.dropout:
        _need_batched(x, node)
        if not _arg(args, kwargs, 2, "training", True) or _arg(args, kwargs, 1, "p", 0.5) == 0:
            return _batched_out(node)
        raise _Unproven(f"random dropout (node {node.name})")
    raise _Unproven(f"function {getattr(fn, '__name__', fn)!s} is not supported by the fast path (node {node.name})")


def _call_method(node, name: str, args, kwargs):
    obj = args[0]
    if name in ("size", "dim") and isinstance(obj, _Batched):
        return obj.ndim if name == "dim" else _size(obj, _arg(args, kwargs, 1, "dim"))
    if name in _ELEMENTWISE_METHODS:
        return _elementwise(node, args, kwargs)
    x = _need_batched(obj, node)
    if name in ("view", "reshape"):
        return _reshape(node, x, tuple(args[1:]) or (kwargs["shape"],))
    if name == "flatten":
        if _resolve(_arg(args, kwargs, 1, "start_dim", 0), x.ndim) < 1:
            raise _Unproven(f"flatten of the batch dim (node {node.name})")
        return _batched_out(node)
    if name == "unsqueeze":
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim + 1, node)
        return _batched_out(node)
    if name == "squeeze":
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim, node)
        return _batched_out(node)
    if name in ("transpose", "swapaxes"):
        _dims_at_least_one([args[1], args[2]], x.ndim, node)
        return _batched_out(node)
    if name == "permute":
        dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        if not dims or _resolve(dims[0], x.ndim) != 0:
            raise _Unproven(f"permute moves the batch dim (node {node.name})")
        return _batched_out(node)
    if name in _REDUCTIONS:
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim, node)
        return _batched_out(node)
    if name in ("softmax", "log_softmax"):
        _dims_at_least_one(_arg(args, kwargs, 1, "dim"), x.ndim, node)
        return _batched_out(node)
    if name in ("split", "chunk"):
        _dims_at_least_one(_arg(args, kwargs, 2, "dim", 0), x.ndim, node)
        metas = node.meta.get("tensor_meta")
        return tuple(_Batched(tuple(m.shape)[1:]) for m in metas)
    raise _Unproven(f"method {name!r} is not supported by the fast path (node {node.name})")


def _interpret(gm: fx.GraphModule) -> list[str]:
    env: dict[fx.Node, object] = {}
    calls: list[str] = []
    first = True

    def value(a):
        return fx.node.map_arg(a, lambda n: env[n])

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if first:
                env[node] = _batched_out(node)
                first = False
            else:
                env[node] = node.args[0] if node.args else _OPAQUE
            continue
        if node.op == "output":
            out = value(node.args[0])
            if not isinstance(out, _Batched):
                raise _Unproven("the model output is not one batched tensor")
            return calls
        args, kwargs = value(node.args), value(node.kwargs)
        if node.op == "get_attr":
            attr = gm
            for part in str(node.target).split("."):
                attr = getattr(attr, part)
            if isinstance(attr, nn.Parameter) and attr.requires_grad:
                raise _Unproven(f"trainable parameter {str(node.target).removeprefix('m.')} used outside its layer")
            env[node] = _Const(tuple(attr.shape)) if isinstance(attr, torch.Tensor) else attr
        elif node.op == "call_module":
            env[node] = _call_module(node, gm.get_submodule(str(node.target)), args, kwargs, calls)
        elif node.op == "call_function":
            env[node] = _call_function(node, node.target, args, kwargs)
        elif node.op == "call_method":
            env[node] = _call_method(node, str(node.target), args, kwargs)
        else:
            raise _Unproven(f"graph node kind {node.op!r} not supported")
    raise _Unproven("graph without output")
