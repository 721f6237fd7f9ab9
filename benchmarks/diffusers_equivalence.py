"""Attend-and-Excite, end to end: diffusers' pipeline against this pack's preset.

A peer nobody here wrote, on identical inputs: one random-weight SD1.5 UNet (diffusers
format) and CLIP-L text encoder (transformers format) are written to files; diffusers
loads the modules it built, ComfyUI reads the same files with its own UNETLoader and
CLIPLoader. Same prompt, initial noise, timesteps, CFG scale and Attend-and-Excite
settings (its defaults scaled to the step count: guide the first half, refine at 0 / 20
/ 40 % of the steps up to 20 times, step size 20 * sqrt(linspace(1, 0.5))).

Schedulers that are the same integrator: diffusers' DDIM (eta 0, "trailing" spacing,
final alpha 1), which keeps the UNet's input z_t as its latent (the A&E pipeline
differentiates with respect to it), and ComfyUI's euler with the "simple" scheduler
(timesteps 999, 999 - 1000/N, ...), which keeps x = z_t / c_in; z_t = c_in * x.

1. Plain sampling, diffusers' StableDiffusionPipeline vs ComfyUI's KSampler: the latent
   entering every step's prediction, and the result.
2. Attend-and-Excite, diffusers' pipeline vs KSampler (AI-T2I) with the preset, through
   ComfyUI's executor: the latent after every single gradient update (refinement ones
   included) and the loss it descended, the latent entering every step's prediction,
   and the result.
Relative difference: ||a - b|| / ||b|| over the whole latent.

    pip install --no-deps --target .cache/bench-deps diffusers==0.42.1
    PYTHONPATH=.cache/bench-deps .venv/bin/python benchmarks/diffusers_equivalence.py \
        --out results/diffusers_equivalence
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from benchmarks.diffusers_reference import tokenizer_files  # noqa: E402

PROMPT, SUBJECTS = "a cat and a dog", ("cat", "dog")
LATENT_SCALE = 0.18215  # SD1.x latent scale: ComfyUI's LATENT output is the model latent / this


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def build_and_write(seed: int, models: pathlib.Path):
    """Random SD1.5 UNet and CLIP-L (diffusers' and transformers' default initialisation),
    written where ComfyUI's loaders look; returns the diffusers pipeline parts."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                        projection_dim=768))
    # The pipeline needs a VAE only for its scale factor (latent output, nothing decoded).
    vae = AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    for m in (unet, text, vae):
        m.eval().requires_grad_(False)
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (models / "text_encoders").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(models / "diffusion_models" / "sd15_random_unet.safetensors"))
    # The file layout of an SD1.x CLIP-L checkpoint ("text_model." + module keys; recent
    # transformers versions keep that prefix out of the in-memory state dict).
    text_sd = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
               for k, v in text.state_dict().items()}
    save_file(text_sd, str(models / "text_encoders" / "sd15_random_clip_l.safetensors"))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=0)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_files()), model_max_length=77)
    return dict(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def ae_settings(steps: int) -> dict:
    """Attend-and-Excite's defaults (written for 50 steps) at `steps` steps, as the pack's
    preset places them: guided i < steps/2, refinement at round(0, 0.2, 0.4 x steps)."""
    return dict(max_iter_to_alter=steps // 2 + steps % 2,
                thresholds={round(0.0 * steps): 0.05, round(0.2 * steps): 0.5, round(0.4 * steps): 0.8},
                scale_factor=20, attn_res=None)


def run_diffusers(parts, noise, size, steps, cfg, guided: bool):
    """(latents entering each step's prediction, [(loss, latent after update)], result)."""
    from diffusers import StableDiffusionAttendAndExcitePipeline, StableDiffusionPipeline

    cls = StableDiffusionAttendAndExcitePipeline if guided else StableDiffusionPipeline
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    step_inputs, updates = [], []
    sched_step = pipe.scheduler.step

    def step(model_output, timestep, sample, *a, **k):
        step_inputs.append(sample.detach().clone())
        return sched_step(model_output, timestep, sample, *a, **k)

    pipe.scheduler.step = step
    extra = {}
    if guided:
        update = pipe._update_latent

        def recorded_update(latents, loss, step_size):
            out = update(latents, loss, step_size)
            updates.append((float(loss), out.detach().clone()))
            return out

        pipe._update_latent = recorded_update
        ids = parts["tokenizer"](PROMPT).input_ids
        tok = parts["tokenizer"]
        extra = dict(token_indices=[ids.index(tok.convert_tokens_to_ids(f"{w}</w>")) for w in SUBJECTS],
                     **{**ae_settings(steps), "attn_res": (size // 16, size // 16)})
    out = pipe(prompt=PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=cfg,
               latents=noise.clone(), output_type="latent", **extra).images
    pipe.scheduler.step = sched_step
    return step_inputs, updates, out.detach()


@contextlib.contextmanager
def comfy_recording(step_inputs: list, updates: list):
    """Record, on the host side, each step's latent (the sampler callback's x, after that
    step's guidance) and each gradient update of the pack's engine (its UNet-input latent)."""
    import latent_preview

    guidance = next(m for n, m in sys.modules.items() if n.endswith("ai_t2i_attention.guidance"))
    prepare, gradient_step = latent_preview.prepare_callback, guidance.gradient_step

    def prepare_callback(model, steps, x0_output_dict=None):
        inner = prepare(model, steps, x0_output_dict)

        def callback(step, x0, x, total_steps):
            step_inputs.append(x.detach().clone())
            return inner(step, x0, x, total_steps)
        return callback

    def recorded_step(latent, compute_terms, step_size, report):
        new, terms = gradient_step(latent, compute_terms, step_size, report)
        updates.append((float(terms["total"].mean()), new.detach().clone()))
        return new, terms

    latent_preview.prepare_callback, guidance.gradient_step = prepare_callback, recorded_step
    try:
        yield
    finally:
        latent_preview.prepare_callback, guidance.gradient_step = prepare, gradient_step


def comfy_graph(size, steps, cfg, seed, guided: bool, prefix: str) -> dict:
    def n(cls, **inputs):
        return {"class_type": cls, "inputs": inputs}

    g = {"1": n("UNETLoader", unet_name="sd15_random_unet.safetensors", weight_dtype="default"),
         "2": n("CLIPLoader", clip_name="sd15_random_clip_l.safetensors", type="stable_diffusion"),
         "4": n("CLIPTextEncode", clip=["2", 0], text=""),
         "5": n("EmptyLatentImage", width=size, height=size, batch_size=1)}
    common = dict(model=["1", 0], seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler="simple",
                  negative=["4", 0], latent_image=["5", 0], denoise=1.0)
    if guided:
        g["3"] = n("AIT2ISubjectPrompt", clip=["2", 0], text=PROMPT, subjects=", ".join(SUBJECTS), attributes="")
        # layers down+up: the pipeline reads every cross-attention layer at its attn_res
        g["6"] = n("AIT2IKSampler", positive=["3", 0], method="Attend-and-Excite", strength=1.0, start_percent=0.0,
                   end_percent=0.5, layers="down+up", **common)
    else:
        g["3"] = n("CLIPTextEncode", clip=["2", 0], text=PROMPT)
        g["6"] = n("KSampler", positive=["3", 0], **common)
    g["7"] = n("SaveLatent", samples=["6", 0], filename_prefix=prefix)
    return g


def run_comfy(host, out_dir: pathlib.Path, size, steps, cfg, seed, guided: bool):
    import torch
    from safetensors.torch import load_file

    import comfy.samplers

    step_inputs, updates = [], []
    prefix = f"equivalence_{'guided' if guided else 'plain'}_{time.time_ns()}"
    with comfy_recording(step_inputs, updates):
        host.run(comfy_graph(size, steps, cfg, seed, guided, prefix))
    latent = load_file(str(next(out_dir.rglob(f"{prefix}_*.latent"))))["latent_tensor"] * LATENT_SCALE
    # Back to the UNet's input space: z = c_in(sigma_i) * x, sigmas as the host's KSampler made them.
    model = host.nodes.UNETLoader().load_unet("sd15_random_unet.safetensors", "default")[0]
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps)
    z = [x * ms.calculate_input(sigmas[i:i + 1], torch.ones(1, 1, 1, 1)) for i, x in enumerate(step_inputs)]
    return z, updates, latent, sigmas


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0, help="noise seed (weights use seed 1000 + this)")
    ap.add_argument("--out", default="results/diffusers_equivalence")
    args = ap.parse_args()

    import torch
    import diffusers
    torch.set_grad_enabled(True)
    work = ROOT / ".cache" / "equivalence"
    models, output = work / "models", work / "output"
    output.mkdir(parents=True, exist_ok=True)
    parts = build_and_write(1000 + args.seed, models)
    # The host's prepare_noise: CPU generator seeded with the seed, one randn of the latent's shape.
    noise = torch.randn((1, 4, args.size // 8, args.size // 8), generator=torch.manual_seed(args.seed))

    from tools.comfy_runner import Host
    host = Host(output_dir=str(output), extra_model_dirs={"diffusion_models": models / "diffusion_models",
                                                          "text_encoders": models / "text_encoders"})
    t0 = time.perf_counter()
    d_plain = run_diffusers(parts, noise, args.size, args.steps, args.cfg, guided=False)
    c_plain = run_comfy(host, output, args.size, args.steps, args.cfg, args.seed, guided=False)
    d_ae = run_diffusers(parts, noise, args.size, args.steps, args.cfg, guided=True)
    c_ae = run_comfy(host, output, args.size, args.steps, args.cfg, args.seed, guided=True)
    wall = time.perf_counter() - t0

    sigmas = c_plain[3]
    settings = ae_settings(args.steps)
    lines = [f"# Attend-and-Excite: diffusers {diffusers.__version__} vs this pack through ComfyUI's executor", "",
             f"Random-weight SD1.5 UNet + CLIP-L (one set of files), prompt {PROMPT!r}, subjects "
             f"{', '.join(SUBJECTS)}, {args.size} px, {args.steps} steps, cfg {args.cfg}, noise seed {args.seed}, "
             f"float32 on the CPU, torch {torch.__version__}. Attend-and-Excite: guided steps i < "
             f"{settings['max_iter_to_alter']}, refinement {settings['thresholds']} (step: threshold), at most 20 "
             f"refinement updates, {args.size // 16}x{args.size // 16} maps (down+up layers). Wall {wall:.0f} s.",
             "", "Relative difference ||pack - diffusers|| / ||diffusers|| of the latent z_t (the UNet's input).", ""]
    record = {"settings": {**vars(args), "thresholds": settings["thresholds"]}, "plain": {}, "guided": {}}

    lines += ["## 1. Plain sampling (StableDiffusionPipeline vs KSampler)", "",
              "| step | sigma | latent entering the step's prediction |", "|---:|---:|---:|"]
    for i, (c, d) in enumerate(zip(c_plain[0], d_plain[0])):
        r = rel(c, d)
        record["plain"][f"step {i}"] = r
        lines.append(f"| {i} | {float(sigmas[i]):.3f} | {r:.2e} |")
    record["plain"]["result"] = rel(c_plain[2], d_plain[2])
    lines += [f"| result | 0 | {record['plain']['result']:.2e} |", ""]

    lines += ["## 2. Attend-and-Excite (its pipeline vs KSampler (AI-T2I), method Attend-and-Excite)", "",
              f"Gradient updates: diffusers {len(d_ae[1])}, the pack {len(c_ae[1])}.", "",
              "| update | loss diffusers | loss pack | latent after the update |", "|---:|---:|---:|---:|"]
    record["guided"]["updates"] = []
    for k, ((ld, zd), (lc, zc)) in enumerate(zip(d_ae[1], c_ae[1])):
        r = rel(zc, zd)
        record["guided"]["updates"].append({"loss_diffusers": ld, "loss_pack": lc, "latent": r})
        lines.append(f"| {k + 1} | {ld:.6f} | {lc:.6f} | {r:.2e} |")
    lines += ["", "| step | sigma | latent entering the step's prediction (after its guidance) |", "|---:|---:|---:|"]
    for i, (c, d) in enumerate(zip(c_ae[0], d_ae[0])):
        r = rel(c, d)
        record["guided"][f"step {i}"] = r
        lines.append(f"| {i} | {float(sigmas[i]):.3f} | {r:.2e} |")
    record["guided"]["result"] = rel(c_ae[2], d_ae[2])
    record["guided"]["guided_vs_plain_result"] = rel(d_ae[2], d_plain[2])
    lines += [f"| result | 0 | {record['guided']['result']:.2e} |", "",
              f"For scale: guidance moved diffusers' result by {record['guided']['guided_vs_plain_result']:.2e} "
              "(relative to its plain result).", ""]
    text = "\n".join(lines)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.md").write_text(text + "\n")
    (out / "result.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
