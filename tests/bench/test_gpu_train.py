"""tools/gpu_train.sh's CPU dry run (GPU_DRY_RUN=1): every step exits 0, and each exported
model comes back as 15 MB parts that join into the file the trainer wrote, which the host's
tiny-model loader loads as the right architecture (no timing asserted)."""
import hashlib
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after the host: never shadow its `nodes`

import pytest

from tools import train_tiny_model as trainer

STEPS = ["profile_unet", "train_unet", "export_unet", "train_flux", "export_flux"]
MODELS = {"tiny_shapes": "unet", "tiny_flux": "flux"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if not (ROOT / "models" / "ai_t2i_tiny_shapes.safetensors").exists():
        pytest.skip("the embedded model is not exported")
    base = tmp_path_factory.mktemp("gpu_train")
    env = {**os.environ, "OUT": str(base / "out"), "GPU_DRY_RUN": "1", "GPU_TRAIN_WORK": str(base / "work"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu_train.sh")], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=900)
    return proc, base / "out"


def test_every_step_exits_0(dry_run):
    proc, out = dry_run
    summary = (out / "summary.log").read_text()
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = dict(re.findall(r"^(\w+): exit (\d+) after", summary, flags=re.M))
    assert list(status) == STEPS, summary
    assert all(rc == "0" for rc in status.values()), (summary, (out / "steps.log").read_text()[-3000:])
    # the profile's table reached the summary, with a row per step
    assert re.search(r"^\| mean of 2 \|", summary, flags=re.M) and "examples trained per minute" in summary, summary


def test_results_fit_what_a_machine_hands_back(dry_run):
    _, out = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8
    assert all(p.stat().st_size < 16 * 1024 * 1024 and re.fullmatch(r"[\w.-]+", p.name) for p in files)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parts_join_into_a_loadable_model_of_its_architecture(dry_run, name, tmp_path):
    _, out = dry_run
    parts = sorted(out.glob(f"{name}.safetensors.part.*"))
    assert len(parts) >= 2  # a 20 MB file in 15 MB parts
    assert all(p.stat().st_size <= 15 * 1024 * 1024 for p in parts)
    joined = tmp_path / f"{name}.safetensors"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    digest = hashlib.sha256(joined.read_bytes()).hexdigest()
    assert f"{name}.safetensors: {joined.stat().st_size} bytes, sha256 {digest}" in (out / "summary.log").read_text()

    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    cfg = tm.read_tiny_config(str(joined))
    assert cfg.architecture == MODELS[name]
    # the Flux-shaped model starts from its own file where there is one, else from the UNet file's
    init = "ai_t2i_tiny_flux.safetensors" if name == "tiny_flux" and (ROOT / "models" / "ai_t2i_tiny_flux.safetensors").exists() \
        else "ai_t2i_tiny_shapes.safetensors"
    assert cfg.notes["init_from"] == init and cfg.notes["unet_steps"] > 0
    model, clip, vae = tm.load_tiny_model(str(joined))
    assert type(model.model).__name__ == ("Flux" if MODELS[name] == "flux" else "BaseModel")
