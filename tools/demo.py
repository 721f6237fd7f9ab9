"""The main demo: vanilla vs AI-T2I from the same seeds, through ComfyUI's executor.

Writes to out/demo/: the images (vanilla's batch first), the per-subject attention maps
and the loss per guided step. On the embedded tiny model it samples a batch of --batch
seeds, scores every image with the ShapesBench evaluator, names a seed where vanilla
neglects a subject and AI-T2I draws every subject (when the batch has one), and prints the
benchmark's rates beside it, so one picture is not mistaken for the average. Without the
embedded model it runs a full-size SD1.5 architecture with random weights (plumbing only).

--model runs it on another tiny model file instead of the embedded one, such as the
Flux-shaped model (joint-attention blocks, flow matching; its maps are read from the double
blocks the loss reads). The benchmark's rates printed beside the batch are that model's own
(rows of results/shapesbench/results.jsonl with its file name), or none.

    .venv/bin/python tools/demo.py [--prompt ...] [--subjects ...] [--seed N]
    .venv/bin/python tools/demo.py --model models/ai_t2i_tiny_flux.safetensors
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

TINY = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"
# ShapesBench prompt 32 (a held-out shape-colour pair), picked to show a seed where vanilla
# neglects a subject and AI-T2I keeps both: an illustration, so the rates are printed beside it.
DEMO_PROMPT = 32


def demo_prompt() -> dict:
    """The embedded model's default prompt, subjects and attributes (also the heatmap figure's)."""
    from benchmarks.shapesbench.prompts import EVAL_PROMPTS, subject_prompt_inputs
    spec = EVAL_PROMPTS[DEMO_PROMPT]
    return {"prompt": spec.text, **subject_prompt_inputs(spec)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--subjects", default=None)
    ap.add_argument("--attributes", default="")
    ap.add_argument("--seed", type=int, default=0, help="noise seed of the batch (ShapesBench's is 0)")
    ap.add_argument("--batch", type=int, default=8, help="images per method (the embedded model only)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"))
    ap.add_argument("--model", default=None,
                    help=f"a tiny model file (default: the embedded models/{TINY.name}), e.g. the Flux-shaped "
                         "models/ai_t2i_tiny_flux.safetensors")
    args = ap.parse_args()
    model = pathlib.Path(args.model).resolve() if args.model else TINY
    if args.model and not model.is_file():
        raise SystemExit(f"no tiny model file at {model}")

    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from tools.comfy_runner import Host
    from tools.graphs import comparison_graph

    tiny = model.exists()
    if tiny:
        from benchmarks.shapesbench.run import load_from_folder_of
        from benchmarks.shapesbench.targets import model_architecture
        host = Host(output_dir=str(out))
        load_from_folder_of(model)
        source, size = {"tiny": model.name}, 128
        default = demo_prompt()
        prompt = args.prompt or default["prompt"]
        subjects = args.subjects or default["subjects"]
        # the default attributes belong to the default prompt
        attributes = args.attributes or ("" if args.prompt else default["attributes"])
        steps = args.steps or 20
        batch = args.batch
        kind = {"unet": "SD1-shaped UNet", "flux": "Flux-shaped DiT: joint-attention blocks, flow matching"}
        which = "embedded tiny shapes model" if model == TINY else "tiny shapes model"
        print(f"model: {which} ({model.name}; {kind[model_architecture(model)]})")
    else:
        from tools import random_models
        cache = ROOT / ".cache" / "test_models" / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        host = Host(output_dir=str(out), extra_model_dirs={"checkpoints": cache})
        ckpt = cache / "random_sd15_v2.safetensors"
        if not ckpt.exists():
            print("writing a random-weight SD1.5 checkpoint (once) ...")
            random_models.write_random_sd15_checkpoint(ckpt)
        source, size = {"checkpoint": ckpt.name}, 256
        prompt = args.prompt or "a cat and a dog"
        subjects = args.subjects or "cat, dog"
        attributes = args.attributes
        steps = args.steps or 10
        batch = 1
        print("model: SD1.5 architecture with RANDOM weights (the embedded model is not in models/): "
              "images are noise, the run shows the plumbing only")

    cfg = 5.0 if tiny else 7.5  # the tiny models are benchmarked at cfg 5
    outputs = host.run(comparison_graph(source, prompt, subjects, attributes, seed=args.seed, steps=steps,
                                        cfg=cfg, size=size, prefix="compare", batch=batch))
    log = outputs["6"]["text"][0]
    (out / "loss_log.txt").write_text(log + "\n")
    print(f"prompt: {prompt!r} subjects: {subjects!r} attributes: {attributes!r} seed: {args.seed} batch: {batch} steps: {steps} cfg: {cfg}")
    print(log)
    if tiny:
        report_scores(out, prompt, subjects, batch, model.name)
    for f in sorted(out.glob("*.png")):
        print("wrote", f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
    print("wrote", (out / "loss_log.txt").relative_to(ROOT) if out.is_relative_to(ROOT) else out / "loss_log.txt")


def report_scores(out: pathlib.Path, prompt: str, subjects: str, batch: int,
                  model_name: str = TINY.name) -> None:
    """Score the batch (vanilla's images first, then AI-T2I's), name a seed where vanilla
    neglects a subject and AI-T2I draws every one, and print the benchmark's rates of the
    model named model_name (the file name its ShapesBench rows carry), if there are any."""
    import json

    import numpy as np
    from PIL import Image

    from benchmarks.shapesbench.evaluate import PromptSpec, score, summarize
    from benchmarks.shapesbench.scenes import COLORS

    words = prompt.lower().split()
    spec = PromptSpec(prompt, tuple((s, words[words.index(s) - 1] if s in words and words.index(s) > 0 and
                                     words[words.index(s) - 1] in COLORS else None)
                                    for s in (w.strip() for w in subjects.split(","))))
    files = sorted(f for f in out.glob("compare_*.png") if not f.name.startswith("compare_maps"))
    scores = [score(np.asarray(Image.open(f).convert("RGB")), spec) for f in files]
    vanilla, guided = scores[:batch], scores[batch:2 * batch]
    print("per seed (batch index): vanilla | AI-T2I (objects the evaluator found)")
    chosen = None
    for i, (v, g) in enumerate(zip(vanilla, guided)):
        mark = ""
        if v["missing"] and g["present"] and chosen is None:
            chosen, mark = i, "   <- vanilla neglects " + ", ".join(v["missing"]) + ", AI-T2I draws every subject"
        print(f"  {i}: {', '.join(v['detected']) or '(nothing)'} | {', '.join(g['detected']) or '(nothing)'}{mark}")
    if chosen is None:
        print("  no seed of this batch where vanilla neglects a subject and AI-T2I keeps both")
    else:
        for name, f in (("vanilla", files[chosen]), ("ai_t2i", files[batch + chosen])):
            (out / f"seed{chosen}_{name}.png").write_bytes(f.read_bytes())
        print(f"  wrote seed{chosen}_vanilla.png and seed{chosen}_ai_t2i.png; their heatmaps are in the maps image")
    for label, sel in (("this batch", None), ("ShapesBench", "results/shapesbench/results.jsonl")):
        if sel is None:
            rates = {m: summarize(s) for m, s in (("vanilla", vanilla), ("ai_t2i", guided))}
            n = batch
        else:
            path = ROOT / sel
            if not path.exists():
                continue
            rows = [r for r in map(json.loads, path.open()) if r.get("model") == model_name]
            if not rows:
                print(f"ShapesBench: no rows of {model_name} in {sel}")
                continue
            rates = {m: summarize([r for r in rows if r["method"] == m]) for m in ("vanilla", "ai_t2i")}
            n = sum(r["method"] == "vanilla" for r in rows)
            guided = [r for r in rows if r["method"] == "ai_t2i"]
            settings = ", ".join(f"{k} {'/'.join(sorted({str(r.get(k)) for r in guided}))}"
                                 for k in ("strength", "layers"))
            label = (f"ShapesBench ({n} images per method, {len({r['prompt'] for r in rows})} prompts, "
                     f"AI-T2I {settings}; {sel})")
        print(f"{label}: " + "; ".join(
            f"{m} every subject present {r['present'][0]:.2f}, correct {r['correct'][0]:.2f}" for m, r in rates.items()))


if __name__ == "__main__":
    main()
