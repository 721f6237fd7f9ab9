"""tools/train_tiny_model.py: the --profile table of the UNet stage's phases (on the CPU, a
few steps fine-tuning the committed model), and the grounding loss batched over examples and
subjects against the per-example loop it replaces."""
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after the host: never shadow its `nodes`

import pytest
import torch

from tools import train_tiny_model as trainer

MODEL = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"


@pytest.mark.skipif(not MODEL.exists(), reason="the embedded model is not exported")
def test_profile_prints_each_phase_per_step_and_saves_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    trainer.main(["--stage", "unet", "--device", "cpu", "--threads", "1", "--batch", "4", "--fresh", "2",
                  "--profile", "3", "--work", str(work), "--init-from", str(MODEL),
                  "--grounding-weight", "0.01", "--content-free-end", "--log-every", "100"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| step |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["step", *trainer.PROFILE_PHASES, "total s"]
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| step |")}
    assert set(rows) == {"fill", "1", "2", "3", "mean of 2"}
    for label, line in rows.items():
        cells = [c.strip() for c in line.strip().strip("|").split("|")[1:]]
        seconds = [float(re.match(r"([0-9.]+) \((\d+)%\)", c).group(1)) for c in cells[:-1]]
        assert abs(sum(seconds) - float(cells[-1])) < 1e-3 * len(seconds)
        if label != "fill":  # a step runs every phase that does work on the CPU
            named = dict(zip(trainer.PROFILE_PHASES, seconds))
            assert all(named[p] > 0 for p in ("data", "encode", "forward", "grounding", "backward", "optimizer"))
    assert not (work / "unet.pt").exists()  # a profile is a measurement: no checkpoint written
