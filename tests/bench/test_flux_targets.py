"""The measurement tools on a Flux-shaped tiny model file (random weights, so the numbers say
nothing of grounding; what is checked is that they are measured where and as stated):
grounding.py's probe noises and reads the DiT at the model's own flow-matching sigmas,
`targets.py measure` and `report` run end to end with the Flux list of targets, and the demo
runs on the file."""
import json
import math
import os
import pathlib
import subprocess
import sys
from importlib import import_module

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after the host: never shadow its `nodes`

import pytest
import torch

from benchmarks.shapesbench import grounding, targets

PROMPT = "a red circle and a blue square"


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def pack():
    from comfy_host import import_pack
    return import_pack()


@pytest.fixture(scope="module")
def flux_file(pack, tmp_path_factory):
    """A random-weight Flux-shaped tiny model file, written as the trainer writes one."""
    from tools.train_tiny_model import init_weights
    tm = import_module(pack.__name__ + ".nodes.host.tiny_model")
    cfg = tm.TinyModelConfig(architecture="flux", content_free_end=True, latent_scale_factor=1.3)
    torch.manual_seed(0)
    modules = [tm.build_unet(cfg), tm.build_text_model(cfg), tm.build_taesd(cfg)]
    for m in modules:
        init_weights(m)
    path = tmp_path_factory.mktemp("tiny_flux") / "tiny_flux_random.safetensors"
    tm.save_tiny_model(str(path), cfg, *modules)
    return path


def _flux_sigma(step: int, steps: int = 20, shift: float = 0.5) -> float:
    """Flux's time shift at the "normal" schedule's timestep of `step` (timesteps evenly from
    1 down to about 0): sigma(t) = e^mu / (e^mu + 1/t - 1)."""
    t = 1 - step / (steps - 1)
    return math.exp(shift) / (math.exp(shift) + 1 / t - 1)


def test_probe_reads_the_dit_at_its_own_flow_sigmas(flux_file):
    probe = grounding.Probe(str(flux_file))
    assert probe.joint
    assert grounding.default_levels(probe.model_sampling) == grounding.FLOW_LEVELS
    sigmas = [float(lv.sigma(probe.model_sampling)) for lv in grounding.FLOW_LEVELS]
    assert sigmas == pytest.approx([_flux_sigma(k) for k in grounding.FLOW_STEPS], rel=1e-3)
    with pytest.raises(SystemExit, match="no discrete timesteps"):
        grounding.NoiseLevel(t=500).sigma(probe.model_sampling)

    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    s = grounding.FLOW_LEVELS[0].sigma(probe.model_sampling)
    assert torch.allclose(probe.noised(x0, noise, s), (1 - s) * x0 + s * noise, atol=1e-6)
    # Step 0 is sigma 1: the noised latent is the noise alone, nothing of the image to find.
    first = grounding.NoiseLevel(step=0).sigma(probe.model_sampling)
    assert float(first) == 1.0 and torch.equal(probe.noised(x0, noise, first), noise)

    cond = probe.cond(PROMPT)
    assert cond["c_crossattn"].shape == (1, 77, 64) and torch.count_nonzero(cond["y"]) == 0
    joint = probe.maps(x0, cond, s, noise, "joint")
    assert [l.key for l in probe.layers["joint"]] == [("double", i, 0) for i in range(4)]
    both = probe.maps(x0, cond, s, noise, "joint+single")
    assert len(probe.layers["joint+single"]) == 10
    for maps in (joint, both):
        assert maps.shape == (1, 16, 16, 77) and torch.isfinite(maps).all() and (maps >= 0).all()
        text = maps.sum(-1)  # the joint softmax runs over the image keys too: the text keys hold part of it
        assert (text > 0).all() and (text < 1).all()
    assert not torch.allclose(joint, both)
    groups, cols = probe.groups(PROMPT, ["circle", "square"])
    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[0, :64], masks[1, 64:] = True, True
    m = grounding.measure(joint, groups, cols, masks.numpy(), joint=True)
    assert sum(m["share"].values()) == pytest.approx(1.0) and 0 < m["share"]["image"] < 1


def test_unet_keeps_its_timesteps(pack):
    probe = grounding.Probe(None)  # the embedded SD1-shaped model
    assert not probe.joint and grounding.default_levels(probe.model_sampling) == grounding.UNET_LEVELS
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    s = grounding.UNET_LEVELS[0].sigma(probe.model_sampling)
    assert torch.equal(probe.noised(x0, noise, s), x0 + s.reshape(1, 1, 1, 1) * noise)  # eps: x0 + sigma noise


def test_targets_measure_and_report_a_flux_file(flux_file, tmp_path):
    out = tmp_path / "measured"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shapesbench" / "targets.py"), "measure",
                           str(flux_file), "--out", str(out), "--scenes", "2", "--seeds", "1", "--prompts", "1"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / targets.SETTINGS_FILE).read_text()) == {"architecture": "flux", "loss_layers": "joint"}

    g = json.loads((out / "grounding" / "grounding.json").read_text())
    assert set(g) == {"joint", "joint+single"}
    assert g["joint"]["layers"] == "double 0, 1, 2, 3 (4 layers)"
    assert g["joint+single"]["layers"] == "double 0, 1, 2, 3 + single 0, 1, 2, 3, 4, 5 (10 layers)"
    for r in g.values():
        assert r["joint"] is True
        assert [r["levels"][f"step={k}"]["sigma"] for k in grounding.FLOW_STEPS] == pytest.approx(
            [_flux_sigma(k) for k in grounding.FLOW_STEPS], rel=1e-3)
        for k in grounding.FLOW_STEPS:
            row = r["rows"][f"renders step={k}"]
            assert row["n"] == 2
            values = [row[key] for key in ("start", "words", "end+padding", "image", "ratio", "pointing", "cosine",
                                           "x0_pointing")]
            assert all(math.isfinite(v) for v in values)
            assert row["start"] + row["words"] + row["end+padding"] + row["image"] == pytest.approx(1.0)
    table = (out / "grounding" / "grounding.md").read_text()
    assert "| layers | scenes | step (σ) | n | start | words | end+pad | image | own/other |" in table
    assert f"| 3 of 20 (σ {_flux_sigma(3):.3f}) | 2 |" in table

    for run, n in (("single", 1), ("two", 1)):
        rows = [json.loads(line) for line in (out / run / "results.jsonl").read_text().splitlines()]
        assert len(rows) == n and rows[0]["model"] == flux_file.name
    report = (out / "targets.md").read_text()
    names = [line.split(" | ")[0].lstrip("| ") for line in report.splitlines() if line.startswith("| ")]
    assert names[0] == "target"
    assert names[1:] == [f"{ls}: {key} (steps 3 / 6 / 9 of 20){'' if ls == 'joint' else ', shown, not a target'}"
                         for ls in ("joint", "joint+single")
                         for key in ("pointing >= 0.9", "own/other >= 3", "cosine <= 0.5")] + [
        "x0 finds, the yardstick of pointing (steps 3 / 6 / 9 of 20), shown, not a target",
        "vanilla one subject correct >= 0.9",
        "one subject, what fails (vanilla): nothing / wrong shape / wrong colour / extra object, shown, not a target",
        "two subjects: extra object <= 0.25",
        "two subjects: missing or merged >= 0.25", "targets met"]
    met = targets.rank_key(targets.results(out))[0]
    assert f"| targets met | {met} of 6 |" in report


def test_demo_runs_on_another_model_file(flux_file, tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--model", str(flux_file),
                           "--batch", "1", "--steps", "2", "--out", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"model: tiny shapes model ({flux_file.name}; Flux-shaped DiT" in done.stdout
    assert "maps=(16, 16) from double 0, 1, 2, 3 (4 layers)" in done.stdout
    assert f"ShapesBench: no rows of {flux_file.name}" in done.stdout  # never the embedded model's rates
    images = sorted(f.name for f in out.glob("compare_*.png") if not f.name.startswith("compare_maps"))
    assert len(images) == 2  # vanilla's image, then AI-T2I's
