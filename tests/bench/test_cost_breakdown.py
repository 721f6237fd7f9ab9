"""benchmarks/cost.py --breakdown: where a guided step's time goes, read from the pack's
profiler labels, with the floor the structure sets; a guided step reads nothing back from the
device but Attend-and-Excite's refinement tests; and tools/gpu_cost.sh's CPU dry run (the GPU
script's every step at tiny sizes) succeeds and leaves its logs. No timing is asserted."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
from torch.overrides import TorchFunctionMode

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after the host: never shadow its `nodes`

from benchmarks import cost

# Tensor methods that hand a value (or a copy) to the host: on a GPU each waits for the device.
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "nonzero", "numpy"}


class StepReads(TorchFunctionMode):
    """The host reads made inside guided steps, less those of refinement tests."""

    def __init__(self):
        super().__init__()
        self.reads, self.tests, self.testing = [], 0, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            if self.testing:
                self.tests += 1
            else:
                self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def step_reads(monkeypatch):
    """Every guided step (GuidedRun.update) and refinement test runs under one StepReads."""
    from importlib import import_module
    from comfy_host import import_pack
    pack = import_pack()
    guided_run = import_module(pack.__name__ + ".nodes.host.guided_run")
    guidance = import_module(pack.__name__ + ".ai_t2i_attention.guidance")
    mode = StepReads()
    update, any_ = guided_run.GuidedRun.update, guidance._any

    def watched_update(self, *args, **kwargs):
        with mode:
            return update(self, *args, **kwargs)

    def marked_test(active):
        mode.testing = True
        try:
            return any_(active)
        finally:
            mode.testing = False
    monkeypatch.setattr(guided_run.GuidedRun, "update", watched_update)
    monkeypatch.setattr(guidance, "_any", marked_test)
    return mode


def test_breakdown_of_both_families_and_no_read_in_a_step_but_refinement_tests(step_reads, capsys):
    rows, breakdowns = cost.collect(["--models", "flux:64,sd15:64", "--unet-width", "32", "--dit-width", "reduced",
                                     "--steps", "2", "--methods", "plain,ai_t2i,attend_and_excite", "--breakdown"])
    out = capsys.readouterr().out
    assert step_reads.reads == []  # no loss, flag or map left the device inside a step
    assert step_reads.tests > 0  # Attend-and-Excite's refinement did test (and only that read)
    by_row = {(b.label, b.method): b for b in breakdowns}
    assert set(by_row) == {(m, method) for m in ("flux 64px reduced", "sd15 64px")
                           for method in ("ai_t2i", "attend_and_excite")}
    for (label, method), b in by_row.items():
        assert b.waits is None and b.device == "cpu"  # nothing to wait for on the CPU: said as n/a
        assert b.host_reads == b.test_reads  # the profiler agrees: reads in steps are refinement tests only
        assert b.parts["forward"] > 0 and b.parts["backward"] > 0 and b.parts["loss"] > 0
        assert 0 < b.parts["maps"] <= b.parts["forward"]  # the maps are made inside the forward
        assert b.step_s >= b.parts["forward"] + b.parts["backward"]
        assert b.guided_steps == 1 and b.steps == 2  # 2 steps, the first half guided
        assert b.cfg_batch == (1 if label.startswith("flux") else 2)  # Flux samples at cfg 1
        # the floor from the structure: 1 + passes / steps x 3 x pass_work / cfg batch
        assert b.floor == pytest.approx(1 + b.passes * b.guided_steps / b.steps * 3 * b.pass_work / b.cfg_batch)
        assert 0 < b.pass_work <= 1 and b.measured > 0
    for label in ("flux 64px reduced", "sd15 64px"):
        plain, refined = by_row[(label, "ai_t2i")], by_row[(label, "attend_and_excite")]
        assert plain.passes == 1 and plain.parts["refinement"] == 0 and plain.host_reads == 0
        # Attend-and-Excite refines at step 0: each refinement update takes one more pass, and the
        # loop tests once before each update and once after the last (none after the 20th, max_iters)
        assert refined.passes > 1 and refined.refined_passes == [refined.passes]
        assert refined.test_reads == (20 if refined.passes == 21 else refined.passes)
        assert refined.parts["refinement"] > 0
    assert "| flux 64px reduced | attend_and_excite |" in out and "n/a (CPU;" in out


def test_gpu_script_dry_run_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "GPU_DRY_RUN": "1", "PYTHON": sys.executable,
           "GPU_SITE": str(tmp_path / "site")}
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu_cost.sh")], env=env, capture_output=True, text=True,
                          timeout=1500)
    summary = (tmp_path / "summary.log").read_text()
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("host_tests", "cost_sd15", "cost_sdxl", "cost_flux", "cost_sd35", "joint_maps"):
        assert re.search(rf"^{step}: exit 0 after", summary, flags=re.M), f"{step} failed:\n{summary}"
    tables = (tmp_path / "tables.md").read_text()
    for label in ("sd15 128px", "sdxl 128px", "flux 64px reduced", "sd35 64px reduced"):
        for method in ("ai_t2i", "attend_and_excite"):
            row = re.search(rf"^\| {label} \| {method} \| [\d.]+ \| [\d.]+ \| .* \| n/a \(CPU; (\d+) host reads, "
                            rf"(\d+) of them refinement tests\) \|", tables, flags=re.M)
            assert row, f"no breakdown of {label} {method}:\n{tables}"
            assert row.group(1) == row.group(2)  # the step's only reads are refinement tests
    assert "| flux 64px reduced | ai_t2i_explicit_map |" in tables
    assert "map (new)" in (tmp_path / "joint_maps.log").read_text()
    assert re.search(r"\d+ tests? collected", (tmp_path / "host_tests.log").read_text())
