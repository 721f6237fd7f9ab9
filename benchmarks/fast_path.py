"""Does the fast guidance path score the same as the straightforward one?

The pack's guidance pass stops the UNet after the last layer the loss reads, and runs
attention through the host's fused PyTorch kernel. The straightforward path runs the
whole UNet with the host's default attention. Both should give the same gradient up
to rounding. This script samples the embedded model's ShapesBench prompts with both
paths from the same noise, scores every image with the exact evaluator, and prints the
rates side by side, with how far the two paths' images are from each other next to how
far guidance moves an image at all (vanilla vs fast). (Timing is benchmarks/cost.py's job.)

    python benchmarks/fast_path.py --prompts 34 --seeds 8 --strength 1
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import replace

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.append(str(ROOT / "tests"))

KEYS = ("present", "bound", "no_extra", "correct")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=34, help="the first N ShapesBench prompts")
    ap.add_argument("--seeds", type=int, default=8, help="images per prompt (one batch, one noise seed)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--layers", default="auto",
                    help="layer set of the fast path (the straightforward path always reads the reference's down+up)")
    args = ap.parse_args()

    from comfy_host import import_pack
    pack = import_pack()
    import numpy as np
    import torch

    import comfy.sample
    import comfy.samplers
    from importlib import import_module

    from benchmarks.shapesbench.evaluate import score
    from benchmarks.shapesbench.run import _prompt_bootstrap
    from benchmarks.shapesbench.prompts import EVAL_PROMPTS, attribute_pairs, subject_words
    from runner_common import encode_subjects
    sampling = import_module(pack.__name__ + ".nodes.host.sampling")
    options = import_module(pack.__name__ + ".nodes.options")
    families = import_module(pack.__name__ + ".nodes.host.families")
    tiny = import_module(pack.__name__ + ".nodes.host.tiny_model")

    with torch.inference_mode():
        model, clip, vae = tiny.load_tiny_model()
    patched = families.install_hooks(model)
    reference = options.settings_from_inputs(method="AI-T2I", strength=args.strength, start_percent=0.0,
                                             end_percent=0.5, layers="down+up")
    paths = {"vanilla": None, "fast": replace(reference, layers=args.layers),
             "straightforward": replace(reference, stop_early=False, fused_attention=False)}
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps)
    latent = torch.zeros(args.seeds, 4, 16, 16)
    scores = {p: [] for p in paths}
    pixels = {p: [] for p in paths}
    for i, spec in enumerate(EVAL_PROMPTS[:args.prompts]):
        pos, neg = encode_subjects(pack, clip, spec.text, ", ".join(subject_words(spec)),
                                   ", ".join(f"{c}:{s}" for c, s in attribute_pairs(spec)))
        noise = comfy.sample.prepare_noise(latent, i)
        for name, settings in paths.items():
            sampler, m = comfy.samplers.sampler_object("euler"), model
            if settings is not None:
                sampler, m = sampling.GuidedSampler(sampler, settings), patched
            with torch.inference_mode():
                out = comfy.sample.sample_custom(m, noise, args.cfg, sampler, sigmas, pos, neg, latent, seed=i,
                                                 disable_pbar=True)
                images = (vae.decode(out).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            pixels[name].append(images.astype(np.float32))
            scores[name] += [score(img, spec) for img in images]
        print(f"prompt {i + 1}/{args.prompts}: {spec.text}", flush=True)

    n = len(scores["fast"])
    px = {k: np.concatenate(v) for k, v in pixels.items()}
    print(f"\nembedded model, {args.prompts} prompts x {args.seeds} seeds = {n} images per path, {args.steps} euler "
          f"steps, cfg {args.cfg}, strength {args.strength}, guided first half; fast path reads layers "
          f"{args.layers}, the straightforward one down+up")
    print("| path | " + " | ".join(KEYS) + " |")
    print("|---|" + "---:|" * len(KEYS))
    for name in paths:
        rates = [sum(bool(s[k]) for s in scores[name]) / n for k in KEYS]
        print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    # fast - straightforward per rate, with a 95% interval resampling whole prompts
    keyed = {p: {(i // args.seeds, i % args.seeds): s for i, s in enumerate(v)} for p, v in scores.items()}
    cells = []
    for k in KEYS:
        diff = sum(bool(s[k]) for s in scores["fast"]) / n - sum(bool(s[k]) for s in scores["straightforward"]) / n
        lo, hi = _prompt_bootstrap(keyed["fast"], keyed["straightforward"], key=k)
        cells.append(f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print("| fast - straightforward | " + " | ".join(cells) + " |")
    same = sum(all(a[k] == b[k] for k in KEYS) for a, b in zip(scores["fast"], scores["straightforward"]))
    print(f"\nimages scored identically by fast and straightforward: {same}/{n}")
    print(f"mean |pixel difference| fast vs straightforward: {np.abs(px['fast'] - px['straightforward']).mean():.3f}"
          f" /255 (max {np.abs(px['fast'] - px['straightforward']).max():.0f})")
    print(f"mean |pixel difference| fast vs vanilla (what guidance changes): "
          f"{np.abs(px['fast'] - px['vanilla']).mean():.3f} /255")


if __name__ == "__main__":
    main()
