"""How far is a Flux-shaped toy's prediction from the flow target, level by level, beside the
UNet toy's prediction converted to a velocity (what ``train_tiny_model.py --teacher`` trains on)?

On fresh training scenes of another data seed and one fixed noise draw, for each flow level s:
the mean squared error of each model's velocity (noise - x0) against the data's, and of each
Flux-shaped model against the teacher. A model far above the teacher at the middle levels is
underfit there: that is where the scenes' shapes are decided.

    .venv/bin/python benchmarks/shapesbench/velocity_error.py --teacher models/ai_t2i_tiny_shapes.safetensors \\
        models/ai_t2i_tiny_flux.safetensors [MORE.safetensors ...] [--scenes 32]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tools import train_tiny_model as trainer  # noqa: E402

LEVELS = (0.1, 0.3, 0.5, 0.7, 0.85, 0.93)
MIX = (0.5, 0.5, 0.6)  # the training recipe's mix of one- and two-object scenes


def load_flux(path: str, tm):
    """A Flux-shaped tiny model file as (config, diffusion model, text encoder), in eval mode."""
    cfg, model, text, _ = trainer.load_exported(path, tm)
    if cfg.architecture != "flux":
        raise SystemExit(f"{path}: not a Flux-shaped tiny model ({cfg.architecture!r})")
    return cfg, model.eval(), text.eval()


@torch.no_grad()
def measure(teacher_path: str, model_paths: list[str], scenes: int, seed: int) -> list[str]:
    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    teacher = trainer.UnetTeacher(teacher_path, tm, torch.device("cpu"))
    tcfg, _, _, taesd = trainer.load_exported(teacher_path, tm)
    images, captions, _, _ = trainer.ExampleSource(seed, 0, scenes, MIX).get(0, scenes)
    ids = torch.tensor(trainer.tokenize(tm.build_tokenizer(tcfg), captions))  # (B, 77)
    x0 = taesd.encode(trainer.to_tensor(images, "cpu") * 2 - 1).float() * tcfg.latent_scale_factor  # (B, 4, 16, 16)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    models = [(pathlib.Path(p).name, *load_flux(p, tm)) for p in model_paths]
    for name, cfg, _, _ in models:
        if abs(cfg.latent_scale_factor - teacher.latent_scale) > 1e-6 * teacher.latent_scale:
            raise SystemExit(f"{name}: another latent scale than the teacher's: not the same autoencoder")
    head = "| s | teacher vs data | " + " | ".join(f"{n} vs data | {n} vs teacher" for n, *_ in models) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(models))]
    for level in LEVELS:
        s = torch.full((scenes,), level)
        x_t = (1 - level) * x0 + level * noise
        want = noise - x0
        taught, _ = teacher.velocity(x_t, s, ids)
        cells = [f"{level:g}", f"{(taught - want).square().mean():.4f}"]
        for _, cfg, model, text in models:
            context, _ = text.clip_l(ids)
            v = model(x_t, s, context=context, y=torch.zeros(scenes, cfg.text_width))
            cells += [f"{(v - want).square().mean():.4f}", f"{(v - taught).square().mean():.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="Flux-shaped tiny model files")
    ap.add_argument("--teacher", required=True, help="the UNet-shaped tiny model file")
    ap.add_argument("--scenes", type=int, default=32)
    ap.add_argument("--seed", type=int, default=99, help="data and noise seed (training uses 1234)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("\n".join(measure(args.teacher, args.models, args.scenes, args.seed)))


if __name__ == "__main__":
    main()
