"""benchmarks/shapesbench/flux_study.sh: each phase runs the commands its protocol names, with
the settings asked for, and compares them against the baselines the protocol's rule reads.
Python is replaced by a stub that records each command line, so no model runs here."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "shapesbench" / "flux_study.sh"
SEP = "\x1f"


@pytest.fixture
def study(tmp_path):
    stub = tmp_path / "python"
    stub.write_text('#!/usr/bin/env bash\nline=$(printf "%s\\x1f" "$@")\necho "$line" >> "$STUB_LOG"\n')
    stub.chmod(0o755)
    log = tmp_path / "calls.log"

    def run(phase: str, **env) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        full = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log), **env}
        proc = subprocess.run(["bash", str(SCRIPT), phase, "m.safetensors", str(tmp_path / "out")], env=full,
                              capture_output=True, text=True, timeout=60)
        calls = [line.rstrip(SEP).split(SEP) for line in log.read_text().splitlines()] if log.exists() else []
        return proc, calls
    return run


def _flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _script(call: list[str]) -> str:
    return pathlib.Path(call[0]).name


def test_evidence_runs_every_method_at_the_chosen_settings_and_pairs_them(study):
    proc, calls = study("evidence", VANILLA="targets/m/two")
    assert proc.returncode == 0, proc.stderr
    runs = [c for c in calls if _script(c) == "run.py"]
    assert sorted(_flag(c, "--methods") for c in runs) == sorted(
        ["ai_t2i", "attend_and_excite", "aggregation_only", "isolation_only", "divide_and_bind", "a_star"])
    for c in runs:  # the node's defaults, on the benchmark's noise, all 34 prompts x 8 seeds
        assert (_flag(c, "--noise-seed"), _flag(c, "--strength"), _flag(c, "--layers"), _flag(c, "--joint-map"),
                _flag(c, "--seeds")) == ("0", "1", "joint", "sharpened joint softmax", "8")
        assert "--prompts" not in c
    grounding = next(c for c in calls if _script(c) == "grounding.py")
    assert _flag(grounding, "--methods") == "vanilla,ai_t2i" and _flag(grounding, "--sample-strength") == "1"
    assert any(_script(c) == "layout.py" and _flag(c, "--strengths") == "1" for c in calls)
    compare = calls[-1]  # after every run
    assert _script(compare) == "compare.py" and compare[1] == "targets/m/two"
    assert [compare[i + 1] for i, a in enumerate(compare) if a == "--baseline"] == ["vanilla", "attend_and_excite"]


def test_evidence_takes_the_chosen_settings_and_needs_the_vanilla_run(study):
    proc, calls = study("evidence", VANILLA="v", STRENGTH="0.5", LAYERS="joint late", JOINT_MAP="text softmax")
    runs = [c for c in calls if _script(c) == "run.py"]
    assert {(_flag(c, "--strength"), _flag(c, "--layers"), _flag(c, "--joint-map")) for c in runs} == {
        ("0.5", "joint late", "text softmax")}
    proc = subprocess.run(["bash", str(SCRIPT), "evidence", "m.safetensors", "out"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "VANILLA"}, timeout=60)
    assert proc.returncode != 0 and "the targets two-subject run of MODEL" in proc.stderr


def test_choices_run_every_reading_on_other_noise_against_vanilla_and_the_default(study):
    proc, calls = study("choices")
    assert proc.returncode == 0, proc.stderr
    runs = [c for c in calls if _script(c) == "run.py"]
    assert len(runs) == 12 and {_flag(c, "--noise-seed") for c in runs} == {"1"}
    assert {_flag(c, "--prompts") for c in runs} == {"15,16,17,18,20,22,23,24,26,28,29"}
    readings = {(_flag(c, "--methods"), _flag(c, "--layers") if "--layers" in c else None,
                 _flag(c, "--joint-map") if "--joint-map" in c else None,
                 _flag(c, "--strength") if "--strength" in c else None) for c in runs}
    assert ("vanilla", None, None, None) in readings
    assert {r[1] for r in readings if r[0] == "ai_t2i"} == {"joint", "joint+single", "joint early", "joint middle",
                                                              "joint late"}
    assert {r[2] for r in readings} == {None, "text softmax", "sharpened joint softmax"}
    assert {r[3] for r in readings} == {None, "0.25", "0.5", "2", "4"}
    grounding = next(c for c in calls if _script(c) == "grounding.py")
    assert _flag(grounding, "--seed") == "1"
    compare = calls[-1]
    assert _script(compare) == "compare.py"
    assert [compare[i + 1] for i, a in enumerate(compare) if a == "--baseline"] == ["vanilla", "ai_t2i layers joint"]


def test_an_unknown_phase_is_refused(study):
    proc, calls = study("evidense")
    assert proc.returncode == 2 and "unknown phase evidense: choices or evidence" in proc.stderr and not calls
