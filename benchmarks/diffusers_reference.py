"""Outside reference: diffusers' Attend-and-Excite pipeline next to its own plain pipeline.

Both pipelines share one random-weight SD1.5-shaped UNet, text encoder and VAE (cost
does not depend on the weights), the same scheduler (Euler), prompt, size, steps and
seed, and are timed side by side in one run. The VAE decode is left out (latent
output), as in benchmarks/cost.py. Attend-and-Excite's own defaults are kept, with its
step counts scaled to the steps used: it guides the first half of the steps
(max_iter_to_alter 25 of 50) and refines at 0 / 20 / 40 % of them.

diffusers is a benchmark-only dependency, installed apart from the runtime:

    pip install --no-deps --target .cache/bench-deps diffusers==0.42.1
    PYTHONPATH=.cache/bench-deps python benchmarks/diffusers_reference.py --size 256 --steps 10
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from benchmarks.cost import PeakMemory  # noqa: E402


def tokenizer_files() -> pathlib.Path:
    """The SD1 CLIP tokenizer files that ComfyUI ships (vocab + merges): no download."""
    host = pathlib.Path(os.environ.get("COMFYUI_PATH", ROOT / ".host" / "ComfyUI"))
    return host / "comfy" / "sd1_tokenizer"


def build(device, dtype):
    """SD1.5-shaped diffusers components with random weights."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_files()), model_max_length=77)
    parts = dict(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for m in (unet, text, vae):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import torch
    from diffusers import StableDiffusionAttendAndExcitePipeline, StableDiffusionPipeline
    from diffusers.utils import logging as dlogging
    dlogging.disable_progress_bar()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    parts = build(device, dtype)
    plain = StableDiffusionPipeline(**parts)
    excite = StableDiffusionAttendAndExcitePipeline(**parts)
    for p in (plain, excite):
        p.set_progress_bar_config(disable=True)
    prompt = "a cat and a dog"
    ids = parts["tokenizer"](prompt).input_ids  # [start, a, cat, and, a, dog, end]
    cat, dog = ids.index(parts["tokenizer"].convert_tokens_to_ids("cat</w>")), \
        ids.index(parts["tokenizer"].convert_tokens_to_ids("dog</w>"))
    n = args.steps
    # The pipeline's defaults are written for 50 steps; keep their fractions.
    excite_args = dict(token_indices=[cat, dog], max_iter_to_alter=max(1, n // 2),
                       thresholds={0: 0.05, round(0.2 * n): 0.5, round(0.4 * n): 0.8}, scale_factor=20,
                       attn_res=(16, 16))  # its default; the level our 'auto' picks too
    common = dict(prompt=prompt, height=args.size, width=args.size, num_inference_steps=n, guidance_scale=7.5,
                  output_type="latent")
    runs = {"diffusers_plain": lambda g: plain(**common, generator=g),
            "diffusers_attend_and_excite": lambda g: excite(**common, generator=g, **excite_args)}
    print(f"diffusers reference: device={device} dtype={args.dtype} size={args.size} steps={n} scheduler=Euler "
          f"cfg=7.5 attn_res={excite_args['attn_res']} torch={torch.__version__}", flush=True)
    results = {}
    for rep in range(args.repeats + 1):  # the first round warms up
        for name, call in runs.items():
            with PeakMemory(device) as mem:
                t0 = time.perf_counter()
                call(torch.Generator(device="cpu").manual_seed(0))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            if rep > 0 or args.repeats == 0:
                r = results.setdefault(name, {"s": [], "mib": []})
                r["s"].append(dt)
                r["mib"].append(mem.mib)
            print(f"  round {rep} {name}: {dt:.2f} s", flush=True)
    base_s, base_m = min(results["diffusers_plain"]["s"]), max(results["diffusers_plain"]["mib"])
    print("| model | method | s/image | peak MiB | time x plain | memory x plain |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        s, m = min(r["s"]), max(r["mib"])
        print(f"| diffusers sd15 | {name} | {s:.2f} | {m:.0f} | {s / base_s:.2f} | {m / base_m:.2f} |")


if __name__ == "__main__":
    main()
