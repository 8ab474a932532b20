"""The study list and the report: selections, reproducible command lines, reuse, and the report's content."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from paper.report import verdict_records, write_report
from simulations import study
from simulations.common import store
from simulations.common.cli import parse_config

SYNTHETIC = [e for e in study.STUDY if not e.network]


def test_select_by_claim_and_by_name():
    assert [e.name for e in study.select(["claim1"])] == [e.name for e in study.STUDY if 1 in e.claims]
    assert next(e.name for e in study.select(["basin_dim", "3"])) == "basin_dim"
    assert study.select([]) == list(study.STUDY)
    with pytest.raises(ValueError, match="no experiment or claim"):
        study.select(["claim9"])


def test_every_claim_has_a_synthetic_and_a_network_experiment():
    for claim in (1, 2, 3, 4):
        members = [e for e in study.STUDY if claim in e.claims]
        assert any(not e.network for e in members) and any(e.network for e in members), claim


@pytest.mark.parametrize("entry", SYNTHETIC, ids=[e.name for e in SYNTHETIC])
@pytest.mark.parametrize("scale", study.SCALES)
def test_the_manifest_command_recomputes_the_same_run(entry, scale, tmp_path):
    """Parsing the printed command line gives a config with the same run key (the same folder)."""
    config = entry.make_config(scale, results=tmp_path)
    folder = store.resolve_out(config, experiment=entry.name, module=entry.module)
    argv = shlex.split(study.command_line(entry, config, folder))[3:]
    again = parse_config(entry.config_class(), argv)
    assert store.run_key(again, experiment=entry.name, module=entry.module) == store.run_key(
        config, experiment=entry.name, module=entry.module
    )
    assert again.out == str(folder)


def test_quick_and_full_differ_and_full_is_the_commands_default_where_stated(tmp_path):
    for e in SYNTHETIC:
        quick = e.make_config("quick", results=tmp_path)
        full = e.make_config("full", results=tmp_path)
        assert store.run_key(quick, experiment=e.name, module=e.module) != store.run_key(
            full, experiment=e.name, module=e.module
        )
        if not e.full:  # the full scale is the command's own defaults
            default = e.config_class()()
            assert store.run_key(default, experiment=e.name, module=e.module) == store.run_key(
                full, experiment=e.name, module=e.module
            )


def test_a_stored_run_is_reused_and_the_report_names_command_folder_and_verdicts(tmp_path, monkeypatch):
    """A study of one tiny experiment: the second call reuses it; the report is built from the files."""
    tiny = study.Entry(
        name="switch",
        module="simulations.switch",
        config="SwitchConfig",
        claims=(1,),
        command="python -m simulations.switch",
        title="tiny switch",
        quick={"d": 300, "rank": 3, "steps": 40, "points": 3, "replicas": 4, "batch_size": 4},
    )
    monkeypatch.setattr(study, "STUDY", (tiny,))
    first = study.run_study(scale="quick", results=tmp_path / "r", quiet=True)
    second = study.run_study(scale="quick", results=tmp_path / "r", quiet=True)
    (rec1,), (rec2,) = first["experiments"], second["experiments"]
    assert rec1["status"] == "ok" and not rec1["reused"] and rec2["reused"]
    assert rec1["folder"] == rec2["folder"] and rec1["key"] == rec2["key"]
    manifest = json.loads((tmp_path / "r" / "study-quick.json").read_text())
    metrics = json.loads((tmp_path / "r" / "switch" / rec1["key"][:12] / "metrics.json").read_text())
    records = verdict_records(metrics)
    assert records and all(r["claim"] == "1" for r in records)
    report = write_report(manifest, {"switch": [str(tmp_path / "b" / "switch.png")]}, tmp_path / "b").read_text()
    assert rec1["command"] in report and rec1["folder"] in report
    assert "## Claim 1" in report and "## Claim 2" not in report
    assert ("**held**" in report) != ("**not held**" in report)
    assert "![switch](switch.png)" in report


@pytest.mark.parametrize("scale", study.SCALES)
def test_every_entry_builds_a_valid_config_at_every_scale(scale, tmp_path):
    """Each experiment validates its config on construction: a stale override (a value the experiment
    no longer accepts) fails here instead of half-way through ``python -m paper``."""
    for entry in study.STUDY:
        config = entry.make_config(scale, results=tmp_path)
        assert config.quiet and str(tmp_path) in str(config.out)


def test_default_workers_are_one_per_core_on_two_or_more_cores_and_none_with_a_scheduler(monkeypatch):
    import importlib.util

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    has_dask = importlib.util.find_spec("distributed") is not None
    assert study.default_workers(None) == (3 if has_dask else 0)
    assert study.default_workers("tcp://127.0.0.1:8786") == 0  # the scheduler's workers run the cells
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert study.default_workers(None) == 0  # one core: serial, no cluster to start
