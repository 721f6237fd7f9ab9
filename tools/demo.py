"""The main demo: vanilla vs AI-T2I from the same seed, through ComfyUI's executor.

Writes to out/demo/: the side-by-side images, the per-subject attention maps and the
loss per guided step. Uses the embedded tiny model when its weights are in models/,
otherwise a full-size SD1.5 architecture with random weights (plumbing only).

    .venv/bin/python tools/demo.py [--prompt ...] [--subjects ...] [--seed N]
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

TINY = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--subjects", default=None)
    ap.add_argument("--attributes", default="")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"))
    args = ap.parse_args()

    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from tools.comfy_runner import Host
    from tools.graphs import comparison_graph

    if TINY.exists():
        host = Host(output_dir=str(out))
        source, size = {"tiny": TINY.name}, 128
        prompt = args.prompt or "a red circle and a blue square"
        subjects = args.subjects or "circle, square"
        steps = args.steps or 20
        print(f"model: embedded tiny shapes model ({TINY.name})")
    else:
        from tools import random_models
        cache = ROOT / ".cache" / "test_models" / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        host = Host(output_dir=str(out), extra_model_dirs={"checkpoints": cache})
        ckpt = cache / "random_sd15_v1.safetensors"
        if not ckpt.exists():
            print("writing a random-weight SD1.5 checkpoint (once) ...")
            random_models.write_random_sd15_checkpoint(ckpt)
        source, size = {"checkpoint": ckpt.name}, 256
        prompt = args.prompt or "a cat and a dog"
        subjects = args.subjects or "cat, dog"
        steps = args.steps or 10
        print("model: SD1.5 architecture with RANDOM weights (the embedded model is not in models/): "
              "images are noise, the run shows the plumbing only")

    outputs = host.run(comparison_graph(source, prompt, subjects, args.attributes, seed=args.seed, steps=steps,
                                        size=size, prefix="compare"))
    log = outputs["6"]["text"][0]
    (out / "loss_log.txt").write_text(log + "\n")
    print(f"prompt: {prompt!r} subjects: {subjects!r} seed: {args.seed} steps: {steps}")
    print(log)
    for f in sorted(out.glob("*.png")):
        print("wrote", f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
    print("wrote", (out / "loss_log.txt").relative_to(ROOT) if out.is_relative_to(ROOT) else out / "loss_log.txt")


if __name__ == "__main__":
    main()
