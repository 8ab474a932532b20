"""Proof ↔ code: every closed form a proof module exports agrees with the dptheory function it backs.

A proof module may export ``CODE``: a list of entries (or one entry), each

* ``closed_form``: the name of a plain function in the proof module, called with the proof symbols
  as keyword arguments (the symbols of the module's derivation; e.g. ``eta``, ``lambda``);
* ``function``: the dotted path of the dptheory function it backs;
* ``symbols``: proof symbol → where its value goes in the call: a keyword (``"lr"``), an element of
  a sequence keyword (``"curvatures[0]"``), or a field of a record (``"basin.sample_std"``,
  ``"optimizer.curvatures[1]"``; records: ``basin`` → records.Basin, ``optimizer`` → records.Optimizer);
* ``ranges``: symbol → (low, high), floats (a float bound) or integers (both bounds int);
* optional ``fixed`` (more call values by the same paths), ``constants`` (more closed-form
  arguments), ``output`` (how to read the result: an attribute/index path such as ``"second[0]"``,
  ``"[3]"``, or the name of a function of the result in the proof module), ``rtol`` (default
  1e-12) and ``atol`` (default 0).

This test resolves both sides and compares them on bounded hypothesis draws (shrinking gives the
smallest disagreeing draw).
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dptheory.records import Basin, Optimizer
from proofs import proof_modules

RECORDS = {"basin": Basin, "optimizer": Optimizer}
_INDEX = re.compile(r"^(\w*)\[(\d+)\]$")


def _entries():
    out = []
    for mod in proof_modules():
        code = getattr(mod, "CODE", None)
        if code is None:
            continue
        for i, entry in enumerate([code] if isinstance(code, dict) else code):
            out.append(pytest.param(mod, entry, id=f"{mod.__name__.split('.')[-1]}[{i}]:{entry['closed_form']}"))
    return out


ENTRIES = _entries()


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _place(target: dict, path: str, value) -> None:
    """Put value at ``path`` (``name``, ``name[i]``) of the keyword dict ``target``."""
    m = _INDEX.match(path)
    if m:
        seq = target.setdefault(m.group(1), {})
        seq[int(m.group(2))] = value
    else:
        target[path] = value


def _finish(kwargs: dict) -> dict:
    """Sequences placed by index become tuples (indices 0 … n−1)."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, dict):
            assert sorted(v) == list(range(len(v))), f"indices of {k} must be 0 … n−1, got {sorted(v)}"
            out[k] = tuple(v[i] for i in range(len(v)))
        else:
            out[k] = v
    return out


def _call_kwargs(entry: dict, values: dict) -> dict:
    top: dict = {}
    records: dict = {name: {} for name in RECORDS}
    items = list(entry.get("fixed", {}).items()) + [(entry["symbols"][s], v) for s, v in values.items()]
    for path, value in items:
        head, dot, rest = path.partition(".")
        if dot and head in RECORDS:
            _place(records[head], rest, value)
        else:
            _place(top, path, value)
    for name, fields in records.items():
        if fields:
            top[name] = RECORDS[name](**_finish(fields))
    return _finish(top)


def _read(result, output, mod):
    if output is None:
        return result
    if hasattr(mod, output):
        return getattr(mod, output)(result)
    for part in re.findall(r"\w+|\[\d+\]", output):
        result = result[int(part[1:-1])] if part.startswith("[") else getattr(result, part)
    return result


def _strategy(low, high):
    if isinstance(low, int) and isinstance(high, int):
        return st.integers(low, high)
    return st.floats(float(low), float(high), allow_nan=False, allow_infinity=False)


def test_every_export_names_a_closed_form_and_a_function():
    assert ENTRIES, "no proof module exports CODE"
    for param in ENTRIES:
        mod, entry = param.values
        assert callable(getattr(mod, entry["closed_form"])), entry
        assert callable(_resolve(entry["function"])), entry
        assert set(entry["ranges"]) == set(entry["symbols"]), entry


@pytest.mark.parametrize(("mod", "entry"), ENTRIES)
def test_closed_form_equals_code(mod, entry):
    closed = getattr(mod, entry["closed_form"])
    function = _resolve(entry["function"])
    symbols = sorted(entry["symbols"])
    draws = st.fixed_dictionaries({s: _strategy(*entry["ranges"][s]) for s in symbols})

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values=draws)
    def check(values):
        expected = closed(**values, **entry.get("constants", {}))
        got = _read(function(**_call_kwargs(entry, values)), entry.get("output"), mod)
        np.testing.assert_allclose(
            np.asarray(got, dtype=float),
            np.asarray(expected, dtype=float),
            rtol=entry.get("rtol", 1e-12),
            atol=entry.get("atol", 0.0),
        )

    check()
