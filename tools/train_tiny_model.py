#!/usr/bin/env python3
"""Train the embedded tiny text-to-image model on synthetic shape scenes, and export it.

Not part of the runtime pack: this builds ``models/ai_t2i_tiny_shapes.safetensors``,
which ``nodes/host/tiny_model.py`` loads. Modules, key layout and config come from that
file, so what is trained is exactly what the host later runs.

Stages (each has its own wall-clock budget, checkpoints into ``--work`` every
``--ckpt-minutes`` and resumes from there when rerun; a rerun with a larger budget
continues training):

``vae``
    The TAESD-shaped autoencoder on renders from ``benchmarks/shapesbench/scenes.py``.
    Loss: L1 on pixels, with shape pixels (the saturated ones: every ShapesBench colour
    is saturated, every background near grey) weighted 5x, + MSE (punishes large colour
    errors most) + L1 on horizontal/vertical pixel differences (keeps the flat shapes'
    edges sharp without a perceptual network) + a small penalty that keeps every latent
    channel near zero mean and unit spread (no KL term: TAESD style). Latents get a
    little Gaussian noise half of the time, so the decoder tolerates the imperfect
    latents a sampler produces. Every residual block starts as its skip path. On CPU it
    trains on 64x64 crops (the network is fully convolutional; a crop costs a quarter
    of a full image), 80% of them centred near a shape, since shapes cover a small
    part of each render. Without the weighting and the object crops, 15 CPU minutes
    gave an autoencoder that turned red into black and lost yellow; with them colours
    are right after about 10.
    At the end the latent statistics are measured on full renders and folded into the
    checkpoint the way ``comfy.sd.VAE`` applies them: ``vae_shift`` = -mean (so
    VAEEncode outputs centred latents), ``vae_scale`` = 1, and the LatentFormat
    ``scale_factor`` = 1/std, so the UNet sees unit-variance latents.

``unet``
    UNet and CLIP text transformer trained jointly with the eps-prediction MSE of SD1
    (the host's own discrete linear-beta sigmas, timesteps uniform over 0..999), on
    latents from the frozen trained encoder. 10% of captions are replaced by "" (what
    CLIPTextEncode of an empty negative prompt gives), so classifier-free guidance
    works. AdamW, linear warm-up then cosine decay over the stage's time budget, EMA of
    the weights (the EMA is what is exported). The per-example loss is weighted by
    min-SNR-gamma (gamma 5), so the low-noise steps, which only refine edges, do not
    drown out the mid/high-noise steps where colour, shape and layout are decided.
    Encoding a 128x128 render through TAESD costs about twice its UNet training step, so
    fresh examples flow through a replay buffer of encoded latents: each step encodes
    ``--fresh`` new examples into the buffer and trains on ``--batch`` examples drawn
    from it. Examples are rendered from ``numpy.random.default_rng([seed, index])``,
    so the data is a deterministic function of the example index (and the batch draw
    of the step index).

``export``
    Writes the single fp16 safetensors file (``--export PATH``) and, with
    ``--preview PNG``, samples a grid of prompts through the host (comfy.sample,
    euler, cfg 5, 20 steps) from the exported file.

Examples::

    # the committed model: one CPU thread, ~75 minutes
    python tools/train_tiny_model.py --stage all --device cpu --threads 1 \\
        --vae-minutes 18 --unet-minutes 55 --work .train_work \\
        --export models/ai_t2i_tiny_shapes.safetensors --preview /tmp/tiny_preview.png
    # more UNet training later: the same command with a larger --unet-minutes resumes
    # on a GPU machine (rendering runs in worker processes; tools/gpu_train.sh is the
    # prepared fine-tune; --profile 20 shows where a step's time goes):
    python tools/train_tiny_model.py --stage all --device cuda --amp --threads 4 \\
        --workers 14 --no-render-wait --vae-crop 0 --vae-batch 64 --batch 256 --fresh 64 --buffer 60000 ...
    python tools/train_tiny_model.py --stage export --work .train_work \\
        --export models/ai_t2i_tiny_shapes.safetensors
"""
from __future__ import annotations

import argparse
import collections
import copy
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_paths(device: str):
    """Put the host (COMFYUI_PATH or <repo>/.host/ComfyUI) and the repo on sys.path."""
    host = os.environ.get("COMFYUI_PATH") or os.path.join(REPO, ".host", "ComfyUI")
    if not os.path.isfile(os.path.join(host, "comfy", "sd.py")):
        sys.exit(f"ComfyUI not found at {host}: set COMFYUI_PATH")
    if host not in sys.path:
        sys.path.insert(0, host)
    if REPO not in sys.path:
        sys.path.append(REPO)
    import comfy.cli_args

    # Must happen before comfy.model_management is imported: without a GPU the host
    # only starts in CPU mode when told to.
    if device == "cpu" or not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True


def _import_tiny_model():
    """Import nodes/host/tiny_model.py by path: a plain ``import nodes`` would find the
    host's own nodes.py, and the pack's package __init__ is not needed here."""
    name = "ai_t2i_tiny_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "nodes", "host", "tiny_model.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _import_pack_module(name: str):
    """Import ``nodes.host.<name>`` of this repository as the pack's own module, without
    running the pack's and nodes' __init__ (which register the nodes with a running host).
    The Flux-shaped model is trained through the same joint-attention hooks the guidance
    reads its maps with."""
    import types

    for pkg, path in (("ai_t2i_pack", REPO), ("ai_t2i_pack.nodes", os.path.join(REPO, "nodes"))):
        if pkg not in sys.modules:
            stub = types.ModuleType(pkg)
            stub.__path__ = [path]
            sys.modules[pkg] = stub
    return importlib.import_module(f"ai_t2i_pack.nodes.host.{name}")


def _import_scenes():
    from benchmarks.shapesbench import scenes

    return scenes


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

_SCENES = None


def render_example(seed_index):
    """Example ``index``, deterministic: (uint8 image (128,128,3), caption, object masks at
    latent resolution (n, 16, 16) float32 area coverage, each object's caption words).
    ``seed_index`` is (seed, index) or (seed, index, p_one, p_two[, p_colors]): the data mix."""
    global _SCENES
    if _SCENES is None:
        _SCENES = _import_scenes()
    seed, index = seed_index[:2]
    mix = _SCENES.TrainingMix(*seed_index[2:]) if len(seed_index) > 2 else _SCENES.TRAINING_MIX
    rng = np.random.default_rng([seed, index])
    scene, caption = _SCENES.training_example(rng, mix)
    image, masks = _SCENES.render(scene)
    f = masks.shape[-1] // 16
    cover = masks.reshape(len(masks), 16, f, 16, f).mean(axis=(2, 4)).astype(np.float32)
    words = [[o.shape] + ([o.color] if o.color in caption.split() else []) for o in scene.objects]
    return image, caption, cover, words


def render_chunk(task):
    """Examples ``start .. start+count-1`` of one data stream, ``task`` = (seed, start, count, mix):
    (uint8 images (count,128,128,3), captions, masks, words). A render worker hands one chunk
    back as one array, so the pickling cost is per chunk, not per example."""
    seed, start, count, mix = task
    items = [render_example((seed, i, *mix)) for i in range(start, start + count)]
    return np.stack([it[0] for it in items]), [it[1] for it in items], [it[2] for it in items], [it[3] for it in items]


def _worker_init(repo):
    if repo not in sys.path:
        sys.path.append(repo)
    torch.set_num_threads(1)


class ExampleSource:
    """Examples by index, rendered in-process or by a worker pool that runs ahead.

    With workers, each request of ``chunk`` examples is split into tasks of about
    ``chunk / workers`` examples (at least 8), and enough requests are kept in flight
    that every worker has two tasks queued, so rendering never idles while training runs."""

    def __init__(self, seed: int, workers: int, chunk: int, mix: tuple = ()):
        self.seed = seed
        self.mix = tuple(mix)
        self.pool = None
        self.pending = collections.deque()
        self.next_submit = None
        self.chunk = chunk
        self.piece = max(8, -(-chunk // max(workers, 1)))
        self.ahead = max(4, -(-2 * workers * self.piece // max(chunk, 1)))
        if workers > 0:
            import multiprocessing as mp

            self.pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(REPO,))

    def _submit(self, count: int):
        start = self.next_submit
        tasks = [(self.seed, i, min(self.piece, start + count - i), self.mix) for i in range(start, start + count, self.piece)]
        self.pending.append((start, count, [self.pool.apply_async(render_chunk, (t,)) for t in tasks]))
        self.next_submit += count

    def _read_ahead(self, start: int, count: int):
        """Requests of ``count`` examples from ``start`` on in flight, ``ahead`` of them; a
        request for anything else (the first one, a jump, another count) restarts them."""
        head = (self.pending[0][0], self.pending[0][1]) if self.pending else (self.next_submit, count)
        if head != (start, count):
            self.pending.clear()
            self.next_submit = start
        while len(self.pending) < self.ahead:
            self._submit(count)

    def ready(self, start: int, count: int) -> bool:
        """Whether ``get(start, count)`` would return without waiting for the workers."""
        if self.pool is None:
            return True
        self._read_ahead(start, count)
        return all(r.ready() for r in self.pending[0][2])

    def get(self, start: int, count: int):
        """Examples start .. start+count-1 as (uint8 array (n,128,128,3), captions, masks, words)."""
        if self.pool is None:
            return render_chunk((self.seed, start, count, self.mix))
        self._read_ahead(start, count)
        _, _, results = self.pending.popleft()
        parts = [r.get() for r in results]
        self._submit(count)  # keep the read-ahead full
        return (np.concatenate([p[0] for p in parts]), *([x for p in parts for x in p[k]] for k in (1, 2, 3)))

    def close(self):
        if self.pool is not None:
            self.pool.terminate()


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory without waiting for the copy
    (the caching host allocator keeps the pinned block until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 (n,H,W,3) -> float (n,3,H,W) in [0,1] (copied as uint8, converted on the device)."""
    return to_device(torch.from_numpy(images), device).permute(0, 3, 1, 2).float().div_(255.0)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def init_weights(module: torch.nn.Module):
    """ComfyUI's ops skip weight initialisation; give every layer torch's default."""
    for m in module.modules():
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=0.02)
        elif type(m).__name__ == "RMSNorm" and isinstance(getattr(m, "scale", None), torch.nn.Parameter):
            torch.nn.init.ones_(m.scale)  # Flux's q/k norms: their scale is left empty by the host
        else:
            for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.LayerNorm, torch.nn.GroupNorm):
                if isinstance(m, base):
                    base.reset_parameters(m)  # the torch class's, not ComfyUI's no-op override
                    break


def zero_init_unet_outputs(unet: torch.nn.Module):
    """SD's init: residual branches and the final conv start at zero."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    for m in unet.modules():
        if isinstance(m, ResBlock):
            last = m.out_layers[-1]
        elif isinstance(m, SpatialTransformer):
            last = m.proj_out
        else:
            continue
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    torch.nn.init.zeros_(unet.out[-1].weight)
    torch.nn.init.zeros_(unet.out[-1].bias)


def zero_init_flux_outputs(flux: torch.nn.Module):
    """adaLN-Zero (the DiT init): every block's modulation and the final layer start at zero,
    so each block starts as the identity and the model's first output is zero."""
    for block in list(flux.double_blocks) + list(flux.single_blocks):
        for mod in (getattr(block, n, None) for n in ("img_mod", "txt_mod", "modulation")):
            if isinstance(mod, torch.nn.Module):  # (newer hosts keep a bool named modulation too)
                torch.nn.init.zeros_(mod.lin.weight)
                torch.nn.init.zeros_(mod.lin.bias)
    for layer in (flux.final_layer.adaLN_modulation[-1], flux.final_layer.linear):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


def saturated(x: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """(n,1,H,W) 1 where a pixel is colourful: every ShapesBench colour is saturated and
    every background is near grey, so this marks the shapes without needing masks."""
    return ((x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)) > threshold).float()


def object_crops(x: torch.Tensor, crop: int, g: np.random.Generator, p_object: float = 0.8) -> torch.Tensor:
    """Random crops, most of them centred on a random colourful (shape) pixel."""
    n, _, h, w = x.shape
    sat = saturated(x)[:, 0].cpu().numpy()
    out = []
    for i in range(n):
        ys, xs = np.nonzero(sat[i])
        if len(ys) and g.random() < p_object:
            k = g.integers(len(ys))
            cy = int(ys[k]) + int(g.integers(-crop // 4, crop // 4 + 1))
            cx = int(xs[k]) + int(g.integers(-crop // 4, crop // 4 + 1))
            y0 = min(max(cy - crop // 2, 0), h - crop)
            x0 = min(max(cx - crop // 2, 0), w - crop)
        else:
            y0 = int(g.integers(0, h - crop + 1))
            x0 = int(g.integers(0, w - crop + 1))
        out.append(x[i, :, y0:y0 + crop, x0:x0 + crop])
    return torch.stack(out)


def zero_init_taesd_blocks(taesd: torch.nn.Module):
    """Start every TAESD residual block as its skip path (last conv of the branch = 0):
    the 40-conv-deep plain-ReLU stack then trains much faster from scratch."""
    from comfy.taesd.taesd import Block

    for m in taesd.modules():
        if isinstance(m, Block):
            torch.nn.init.zeros_(m.conv[-1].weight)
            torch.nn.init.zeros_(m.conv[-1].bias)


def lr_at(base: float, step: int, warmup: int, frac: float, final: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``final * base`` over the time budget."""
    w = min(1.0, (step + 1) / warmup)
    frac = min(max(frac, 0.0), 1.0)
    return base * w * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))


def atomic_save(obj, path: str):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log(msg: str):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# The phases of a UNet-stage step that --profile times: data = rendering and the hand-off
# from the render workers, encode = the autoencoder, tokenize = captions and word columns
# into the replay buffer, batch = the draw from the buffer and the noising.
PROFILE_PHASES = ["data", "encode", "tokenize", "batch", "forward", "grounding", "backward", "optimizer", "ema",
                  "logging"]


class PhaseTimer:
    """Wall-clock seconds of each phase of a training step, for ``--profile``.

    ``lap(name)`` charges the time since the previous lap to ``name``. On CUDA it
    synchronises first, so a phase is charged for its own kernels rather than for the
    ones queued before it; disabled (no profiling) it does nothing, so a normal run
    keeps its asynchronous launches."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.sync = enabled and device.type == "cuda"
        self.rows: list = []  # per step: {phase: seconds}
        self.current: dict = {}
        self.t = time.perf_counter()

    def lap(self, name: str):
        if not self.enabled:
            return
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.current[name] = self.current.get(name, 0.0) + now - self.t
        self.t = now

    def end_step(self, label):
        if self.enabled:
            self.rows.append((label, self.current))
            self.current = {}

    def table(self, phases: list) -> str:
        """Markdown table: one row per step, each phase's seconds and share of the step,
        then the mean over the steps after the first (which includes warm-up)."""
        head = "| step | " + " | ".join(phases) + " | total s |"
        lines = [head, "|" + "---|" * (len(phases) + 2)]

        def row(label, sec):
            total = sum(sec.get(p, 0.0) for p in phases)
            cells = [f"{sec.get(p, 0.0):.4f} ({100 * sec.get(p, 0.0) / max(total, 1e-12):.0f}%)" for p in phases]
            return f"| {label} | " + " | ".join(cells) + f" | {total:.4f} |"

        for label, sec in self.rows:
            lines.append(row(label, sec))
        steady = [sec for label, sec in self.rows if label != "fill"][1:]
        if steady:
            mean = {p: sum(s.get(p, 0.0) for s in steady) / len(steady) for p in phases}
            lines.append(row(f"mean of {len(steady)}", mean))
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Stage: autoencoder
# ---------------------------------------------------------------------------


def train_vae(args, tm, cfg, device):
    path = os.path.join(args.work, "vae.pt")
    final_path = os.path.join(args.work, "vae_final.pt")
    budget = 60.0 * (args.vae_minutes if args.vae_minutes is not None else args.minutes)
    taesd = tm.build_taesd(cfg)
    init_weights(taesd)
    zero_init_taesd_blocks(taesd)
    taesd.to(device)
    params = list(taesd.taesd_encoder.parameters()) + list(taesd.taesd_decoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.vae_lr, weight_decay=0.0)
    step, elapsed, history = 0, 0.0, []
    if os.path.exists(path):
        ck = torch.load(path, map_location=device)
        taesd.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed, history = ck["step"], ck["elapsed"], ck.get("history", [])
        log(f"vae: resumed at step {step}, {elapsed / 60:.1f} of {budget / 60:.1f} min")
    if elapsed >= budget and os.path.exists(final_path):
        log("vae: budget already spent; keeping vae_final.pt")
        return
    batch, crop = args.vae_batch, args.vae_crop
    source = ExampleSource(args.seed + 1, args.workers, batch)
    t_start, t_ckpt, run_loss, run_n = time.time(), time.time(), 0.0, 0
    taesd.train()
    try:
        while elapsed < budget:
            images = source.get(step * batch, batch)[0]
            x = to_tensor(images, device)
            if crop and crop < x.shape[-1]:
                x = object_crops(x, crop, np.random.default_rng([args.seed, 7, step]))
            for group in opt.param_groups:
                group["lr"] = lr_at(args.vae_lr, step, 100, elapsed / budget)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                z = taesd.taesd_encoder(x)
            z = z.float()
            zin = z
            if args.vae_latent_noise > 0:
                gate = (torch.rand(z.shape[0], 1, 1, 1, device=device) < 0.5).float()
                zin = z + gate * args.vae_latent_noise * torch.randn_like(z)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                y = taesd.taesd_decoder(zin)
            y = y.float()
            # Shapes cover a small part of a render; weight their (saturated) pixels up so
            # colour is learned early, and add MSE, which punishes large colour errors most.
            weight = 1.0 + args.vae_fg_weight * saturated(x)
            err = y - x
            rec_w = (weight * err.abs()).mean() / weight.mean()
            rec = err.abs().mean()
            edge = ((y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs().mean() + \
                   ((y[..., :, 1:] - y[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])).abs().mean()
            mu = z.mean(dim=(0, 2, 3))
            sd = z.std(dim=(0, 2, 3))
            reg = mu.square().mean() + (sd - 1).square().mean()
            loss = rec_w + err.square().mean() + 0.5 * edge + 0.01 * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            run_loss += rec.item()
            run_n += 1
            now = time.time()
            elapsed += now - t_start
            t_start = now
            if step % args.log_every == 0:
                history.append((step, elapsed, run_loss / run_n))
                log(f"vae step {step} l1 {run_loss / run_n:.4f} edge {edge.item():.4f} "
                    f"z mean {mu.mean().item():+.2f} std {sd.mean().item():.2f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{elapsed / 60:.1f}/{budget / 60:.0f} min")
                run_loss, run_n = 0.0, 0
            if now - t_ckpt > 60 * args.ckpt_minutes:
                atomic_save({"model": taesd.state_dict(), "opt": opt.state_dict(), "step": step,
                             "elapsed": elapsed, "history": history}, path)
                t_ckpt = now
    finally:
        source.close()
    atomic_save({"model": taesd.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                 "history": history}, path)
    finalize_vae(args, tm, cfg, taesd, device, step, history)


@torch.no_grad()
def finalize_vae(args, tm, cfg, taesd, device, step, history):
    """Measure latent statistics on full renders; fold them in as comfy.sd.VAE applies them."""
    taesd.eval()
    n = args.stat_images
    source = ExampleSource(args.seed + 2, 0, n)
    images = source.get(10_000_000, n)[0]
    raws, recs = [], []
    for i in range(0, n, 16):
        x = to_tensor(images[i:i + 16], device)
        z = taesd.taesd_encoder(x).float()
        raws.append(z.cpu())
        recs.append((taesd.taesd_decoder(z).float().clamp(0, 1) - x).abs().mean().item())
    raw = torch.cat(raws)
    mean = raw.mean().item()
    std = (raw - mean).std().item()
    with torch.no_grad():
        taesd.vae_shift.fill_(-mean)
        taesd.vae_scale.fill_(1.0)
    scale_factor = 1.0 / std
    # Latent2RGB preview: least squares from model-space latents to 8x8-mean RGB in [-1, 1].
    zm = ((raw - mean) * scale_factor).permute(0, 2, 3, 1).reshape(-1, cfg.latent_channels)
    rgb = F.avg_pool2d(to_tensor(images, "cpu"), cfg.vae_downscale) * 2 - 1
    rgb = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    a = torch.cat([zm, torch.ones(zm.shape[0], 1)], dim=1).double()
    sol = torch.linalg.lstsq(a, rgb.double()).solution.float()
    stats = {
        "latent_raw_mean": mean,
        "latent_raw_std": std,
        "latent_channel_mean": raw.mean(dim=(0, 2, 3)).tolist(),
        "latent_channel_std": raw.std(dim=(0, 2, 3)).tolist(),
        "latent_scale_factor": scale_factor,
        "latent_rgb_factors": [[round(v, 4) for v in row] for row in sol[:-1].tolist()],
        "latent_rgb_factors_bias": [round(v, 4) for v in sol[-1].tolist()],
        "recon_l1_full_images": float(np.mean(recs)),
        "steps": step,
    }
    atomic_save({"model": taesd.state_dict(), "stats": stats, "history": history}, os.path.join(args.work, "vae_final.pt"))
    log(f"vae: final {json.dumps(stats)}")


def load_vae_final(args, tm, cfg, device):
    path = os.path.join(args.work, "vae_final.pt")
    if not os.path.exists(path):
        sys.exit(f"{path} missing: run --stage vae first")
    ck = torch.load(path, map_location=device)
    taesd = tm.build_taesd(cfg)
    taesd.load_state_dict(ck["model"])
    taesd.to(device).eval().requires_grad_(False)
    return taesd, ck["stats"], ck.get("history", [])


# ---------------------------------------------------------------------------
# Stage: UNet + text encoder
# ---------------------------------------------------------------------------


class Ema:
    def __init__(self, modules, decay):
        self.decay = decay
        self.shadow = [copy.deepcopy(m).requires_grad_(False) for m in modules]
        # load_state_dict copies into these same tensors, so the list stays valid on resume
        self._shadow_params = [p for s in self.shadow for p in s.parameters()]

    @torch.no_grad()
    def update(self, modules, step):
        """shadow <- lerp(shadow, weights, 1 - d) for every parameter, in one multi-tensor op
        (one kernel launch per group of tensors on a GPU, not one per parameter)."""
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._shadow_params, [p.detach() for m in modules for p in m.parameters()], 1 - d)


def tokenize(tokenizer, captions):
    out = []
    for c in captions:
        chunks = tokenizer.tokenize_with_weights(c)["l"]
        out.append([t for t, _ in chunks[0]])  # captions are far below 77 tokens
    return out


def batch_token_input(clip_l: torch.nn.Module):
    """Let the host's text encoder (an SDClipModel) take a batch of plain token ids as one
    (B, T) int64 host tensor.

    ``SDClipModel.process_tokens`` walks every token of every caption in Python and embeds
    each caption with its own host-to-device copy: per training step that is hundreds of
    copies and tens of milliseconds of Python. For a tensor (plain ids only, no embedding
    objects) this instance's process_tokens computes the same outputs at once: the ids'
    embeddings, the attention mask (1 up to the first end token, which counts where the
    encoder has an "end" special token; 0 after it), each caption's count of unmasked tokens
    (a host list, as the host's pooled-output indexing wants) and no embeds_info. Lists still
    go to the host's own code; the weights and the exported encoder are untouched."""
    original = clip_l.process_tokens

    def process_tokens(tokens, device):
        if not torch.is_tensor(tokens):
            return original(tokens, device)
        end_token = clip_l.special_tokens.get("end", None)
        cmp_token = end_token if end_token is not None else clip_l.special_tokens.get("pad", -1)
        is_end = tokens == cmp_token  # (B, T)
        first = torch.where(is_end.any(1), is_end.int().argmax(1), tokens.shape[1])[:, None]  # first end token
        pos = torch.arange(tokens.shape[1])[None]
        mask = ((pos < first) | ((pos == first) & (end_token is not None))).long()
        embeds = clip_l.transformer.get_input_embeddings()(to_device(tokens, device), out_dtype=torch.float32)
        return embeds, to_device(mask, device), mask.sum(1).tolist(), []

    clip_l.process_tokens = process_tokens


def make_text_trainable(text: torch.nn.Module):
    """Let autograd through the host's CLIP layers.

    ``comfy.clip_model.CLIPLayer.forward`` adds its residuals in place (``x += ...``),
    which is fine for inference but breaks backward through the preceding LayerNorm.
    For training only, each layer instance gets the same computation written out of
    place; the weights and the state dict are untouched, so the exported encoder runs
    the host's own forward on identical math.
    """

    def out_of_place(layer):
        def forward(x, mask=None, optimized_attention=None):
            x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
            return x + layer.mlp(layer.layer_norm2(x))

        return forward

    for layer in text.clip_l.transformer.text_model.encoder.layers:
        layer.forward = out_of_place(layer)


def build_unet_stage(args, tm, cfg, device):
    unet = tm.build_unet(cfg)
    init_weights(unet)
    if cfg.architecture == "flux":
        zero_init_flux_outputs(unet)
    else:
        zero_init_unet_outputs(unet)
    text = tm.build_text_model(cfg)
    init_weights(text)
    with torch.no_grad():  # SD1 checkpoints do not use the projection; keep it an identity
        text.clip_l.transformer.text_projection.weight.copy_(torch.eye(cfg.text_width))
    text.requires_grad_(True)
    text.clip_l.transformer.text_projection.requires_grad_(False)
    text.clip_l.logit_scale.requires_grad_(False)
    return unet.to(device), text.to(device)


def host_model_sampling(cfg):
    """The host's ModelSamplingDiscrete for the UNet-shaped model (SD1's discrete sigmas)."""
    import comfy.model_sampling

    class _Settings:
        sampling_settings = cfg.sampling_settings()

    return comfy.model_sampling.ModelSamplingDiscrete(_Settings())


def host_sigmas(cfg):
    return host_model_sampling(cfg).sigmas.clone()


def flow_to_eps_input(x_t: torch.Tensor, s: torch.Tensor):
    """A flow-matching sample as an eps-prediction model's input.

    x_t (B, C, H, W) = (1 - s) x0 + s noise with s (B,) in (0, 1). Divided by 1 - s it is
    x0 + sigma noise with sigma = s / (1 - s): the same signal-to-noise ratio on SD1's scale.
    Returns (sigma (B,), the input EPS.calculate_input gives for it: (x0 + sigma noise) /
    sqrt(sigma^2 + 1), which is x_t / sqrt((1 - s)^2 + s^2))."""
    sigma = s / (1 - s)
    return sigma, x_t / ((1 - s) ** 2 + s ** 2).sqrt().view(-1, 1, 1, 1)


def eps_to_flow(eps: torch.Tensor, x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """An eps prediction (B, C, H, W) at flow sample x_t (B, C, H, W), level s (B,), as the
    flow velocity noise - x0 (B, C, H, W): x0 = x_t / (1 - s) - sigma eps, so
    eps - x0 = (eps - x_t) / (1 - s)."""
    return (eps - x_t) / (1 - s).view(-1, 1, 1, 1)


def load_exported(path: str, tm):
    """An exported tiny model file as float32 modules: (config, diffusion model, text model,
    autoencoder), the text model taking token tensors (batch_token_input)."""
    import safetensors.torch

    cfg = tm.read_tiny_config(path)
    sd = {k: v.float() for k, v in safetensors.torch.load_file(path).items()}
    unet, text, taesd = tm.build_unet(cfg), tm.build_text_model(cfg), tm.build_taesd(cfg)
    unet.load_state_dict(tm._split(sd, tm.UNET_PREFIX))
    text.load_state_dict({"clip_l." + k: v for k, v in tm._split(sd, tm.TEXT_PREFIX).items()}, strict=False)
    taesd.load_state_dict(tm._split(sd, tm.VAE_PREFIX))
    batch_token_input(text.clip_l)
    return cfg, unet, text, taesd


class UnetTeacher:
    """The UNet-shaped tiny model, frozen, as the Flux-shaped one's teacher (``--teacher``).

    Why: a flow-matching target noise - x0 carries the whole uncertainty of x0 given x_t, so
    at the middle noise levels, where shapes are decided, most of each step's gradient is
    noise. The teacher's prediction is (its estimate of) the expectation instead. The UNet
    toy already draws the scenes' shapes; on the CPU the transformer did not learn them from
    the data alone in 175 minutes. Both models share the autoencoder and its latent scale, so
    their latents are the same space. Levels outside the teacher's sigma range keep the data's
    target."""

    def __init__(self, path: str, tm, device):
        cfg = tm.read_tiny_config(path)
        if cfg.architecture != "unet":
            sys.exit(f"--teacher {path}: the teacher must be the UNet-shaped model, not {cfg.architecture!r}")
        _, self.unet, self.text, _ = load_exported(path, tm)
        for m in (self.unet, self.text):
            m.requires_grad_(False)
            m.eval()
            m.to(device)
        self.sampling = host_model_sampling(cfg).to(device)
        self.latent_scale = cfg.latent_scale_factor

    @torch.no_grad()
    def velocity(self, x_t: torch.Tensor, s: torch.Tensor, token_ids: torch.Tensor):
        """x_t (B, C, H, W) at levels s (B,); token_ids (B, T). Returns the teacher's
        velocity (B, C, H, W) and which rows lie in its sigma range (B,) bool."""
        sigma, x_in = flow_to_eps_input(x_t, s)
        covered = (sigma >= self.sampling.sigma_min) & (sigma <= self.sampling.sigma_max)
        t = self.sampling.timestep(sigma.clamp(float(self.sampling.sigma_min), float(self.sampling.sigma_max)))
        context, _ = self.text.clip_l(token_ids)
        eps = self.unet(x_in, t.float(), context=context).float()
        return eps_to_flow(eps, x_t, s), covered


class GroundingAttention:
    """attn2 replace patch for training: the attention the host computes (softmax(QK^T/sqrt(d)) V),
    written out so its head-averaged probabilities at the latent's own resolution are kept for
    the grounding loss (a few 16x16 layers: cheap next to the UNet)."""

    def __init__(self, store: list, tokens_at: int):
        self.store, self.tokens_at = store, tokens_at

    def __call__(self, q, k, v, extra_options):
        h = extra_options["n_heads"]
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        if n != self.tokens_at:  # a layer the loss does not read: the fused kernel, same math
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        p = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, heads, N, T)
        self.store.append(p.mean(dim=1))
        return (p @ v).transpose(1, 2).reshape(b, n, -1)


def grounding_patches(unet, store: list, tokens_at: int) -> dict:
    """transformer_options with a GroundingAttention on every cross-attention slot."""
    patch = GroundingAttention(store, tokens_at)
    keys = [("input", i, t) for i in range(len(unet.input_blocks)) for t in range(4)]
    keys += [("middle", 0, t) for t in range(4)] + [("output", i, t) for i in range(len(unet.output_blocks)) for t in range(4)]
    return {"patches_replace": {"attn2": {key: patch for key in keys}}}


class _EveryBlockRecorder:
    """The guidance pass's recorder interface (wants / record_probabilities / complete /
    stop_early), keeping every joint block's (B, N, T) map for the grounding loss and never
    ending the forward early."""

    complete = False
    stop_early = False

    def __init__(self, store: list, reading: bool):
        self.store, self.reading = store, reading

    def wants(self, key) -> bool:
        return self.reading

    def record_probabilities(self, key, probabilities, map_size):
        self.store.append(probabilities)


def flux_training_options(flux, cfg, store: list, grounding: bool) -> dict:
    """transformer_options for training the Flux-shaped model: the pack's own block hooks and
    joint-attention override (nodes/host/dit_hooks.py), so the grounding loss reads the maps
    the guidance reads: each block's image-to-text probabilities, softmax over all keys.
    They are installed without grounding too: their copies of the saved token streams are
    what lets the backward run through Flux's in-place residual adds."""
    hooks, keys = _import_pack_module("dit_hooks"), _import_pack_module("keys")
    blocks = {("double_block", i): hooks.JointBlockHook(("double", i, 0)) for i in range(len(flux.double_blocks))}
    blocks.update({("single_block", i): hooks.JointBlockHook(("single", i, 0)) for i in range(len(flux.single_blocks))})
    n, t = cfg.latent_size ** 2, cfg.max_tokens
    layout = hooks.JointLayout(text=(0, t), image=(t, t + n), grid=(cfg.latent_size, cfg.latent_size))
    return {"patches_replace": {"dit": blocks}, keys.RECORDER_KEY: _EveryBlockRecorder(store, grounding),
            keys.JOINT_LAYOUT_KEY: layout, "optimized_attention_override": hooks.JointAttentionOverride(None)}


def flow_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching training noise levels: t = sigmoid(u) for u ~ N(0, 1) (SD3's logit-normal),
    then Flux's time shift with mu = ``shift`` (what ModelSamplingFlux applies when sampling)."""
    t = torch.sigmoid(u)
    return math.exp(shift) / (math.exp(shift) + (1.0 / t - 1.0))


MAX_OBJECTS = 3  # scenes.training_example draws one to three objects


def object_rows(masks: list, cols: list, n_tokens: int, k: int = MAX_OBJECTS):
    """Each example's objects as fixed-size rows for the batched grounding loss.

    masks[b]: (n, N) object coverage (or None: no objects recorded); cols[b]: per object,
    its words' context columns. Returns mask (B, k, N) float32 and cols (B, k, T) float32,
    1 at each object's word columns; rows past an example's objects are zero, and an object
    without columns has a zero cols row (it is not grounded)."""
    n_pix = next((m.shape[-1] for m in masks if m is not None), 1)
    mask = torch.zeros(len(masks), k, n_pix)
    onehot = torch.zeros(len(masks), k, n_tokens)
    for b, (m, c) in enumerate(zip(masks, cols)):
        if m is None or len(m) == 0:
            continue
        if len(m) > k:
            raise ValueError(f"example with {len(m)} objects: at most {k} are stored")
        mask[b, :len(m)] = torch.as_tensor(m, dtype=torch.float32).reshape(len(m), -1)
        for j, cj in enumerate(c):
            onehot[b, j, list(cj)] = 1.0
    return mask, onehot


def pack_masks(masks: list) -> dict:
    """The replay buffer's object masks for a checkpoint: one (total objects, N) float16 tensor
    and each example's object count (-1: none recorded). Tens of thousands of small tensors
    took 40 s to load; one takes well under a second. Coverage is a multiple of 1/64 (the
    mean over an 8x8 block of pixels), which float16 holds exactly."""
    rows = [m for m in masks if m is not None and len(m)]
    n_pix = rows[0].shape[-1] if rows else 0
    return {"rows": torch.cat(rows).half() if rows else torch.zeros(0, n_pix, dtype=torch.float16),
            "counts": [-1 if m is None else len(m) for m in masks]}


def unpack_masks(packed) -> list:
    """pack_masks undone; a plain list (the checkpoints written before it) is returned as it is."""
    if not isinstance(packed, dict):
        return packed
    out, at, rows = [], 0, packed["rows"].float()
    for c in packed["counts"]:
        out.append(None if c < 0 else rows[at:at + c])
        at += max(c, 0)
    return out


def grounding_loss(layers: list, mask: torch.Tensor, cols: torch.Tensor, use: torch.Tensor, floor: float = 0.2) -> dict:
    """Grounding terms, each averaged over the 16x16 layers (so every layer the guidance may
    read is grounded, not only their mean) and over the objects of the examples in ``use``.
    Batched over layers, examples and objects: no Python loop over examples, no host read.

    layers: per layer (B, N, T) head-averaged probabilities at the latent resolution;
    mask: (B, K, N) object coverage; cols: (B, K, T) 1 at each object's word columns (see
    object_rows; objects without columns and examples outside ``use`` (B,) bool are left out).

    * ``token``: 1 - share of each object word's map inside its object (TokenCompose's token
      loss). Alone it can be met by starving the words (attempt 1): their maps keep the
      objects' shape while their share of attention falls towards zero.
    * ``share``: how far the object's words' share of attention, averaged over its pixels,
      falls below ``floor``: a pixel of an object must read that object's words.
    * ``separate``: on each object's pixels, -log of its own words' part of all objects' word
      attention: the two subjects' maps must differ where the objects are (none with one object).
    """
    probs = torch.stack(layers)  # (L, B, N, T)
    cols = cols.to(probs)
    m = mask.to(probs)[None]  # (1, B, K, N)
    n_cols = cols.sum(-1)  # (B, K)
    valid = ((n_cols > 0) & use.to(n_cols.device)[:, None]).to(probs)  # (B, K) objects grounded
    multi = valid * (valid.sum(-1, keepdim=True) > 1).to(probs)  # ... in an example with several
    s = torch.einsum("lbnt,bkt->lbkn", probs, cols)  # (L, B, K, N) the object's words' share
    a = s / n_cols.clamp_min(1.0)[None, ..., None]  # (L, B, K, N) their mean map
    area = m.sum(-1).clamp_min(1e-8)  # (1, B, K)
    token = 1.0 - (a * m).sum(-1) / a.sum(-1).clamp_min(1e-8)
    share = (floor - (s * m).sum(-1) / area).clamp_min(0.0) / floor
    own = a / a.sum(2, keepdim=True).clamp_min(1e-8)  # objects without columns add zero
    separate = -((own.clamp_min(1e-6).log() * m).sum(-1) / area)
    n_layers = probs.shape[0]
    # Weighted means; where nothing is grounded the sum is 0, as the loop's zero was.
    mean = lambda x, w: (x * w).sum() / (w.sum() * n_layers).clamp_min(1.0)
    return {"token": mean(token, valid), "share": mean(share, valid), "separate": mean(separate, multi)}


def word_columns(tokenizer, tokens: list, words: list, cache: dict = None) -> list:
    """Context columns of each object's words in one caption's tokens (first match of each
    word, in caption order; a word the tokenizer splits gives all its columns). ``cache``
    keeps each word's token ids (the scenes use a few dozen words)."""
    out, start = [], 1
    cache = {} if cache is None else cache
    for obj in words:
        cols = []
        for w in obj:
            if w not in cache:
                cache[w] = [t for t in tokenize(tokenizer, [w])[0] if t not in (49406, 49407)]
            ids = cache[w]
            for i in range(1, len(tokens) - len(ids) + 1):
                if tokens[i:i + len(ids)] == ids:
                    cols += range(i, i + len(ids))
                    break
        out.append(tuple(cols))
    return out


def init_from_export(args, tm, cfg, unet, text, device):
    """Start the UNet stage from an exported tiny model: its UNet and text weights, and (when
    the work folder has none) its autoencoder and latent statistics as vae_final.pt."""
    import safetensors.torch

    sd = safetensors.torch.load_file(args.init_from)
    if tm.read_tiny_config(args.init_from).architecture == cfg.architecture:
        unet.load_state_dict({k[len(tm.UNET_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(tm.UNET_PREFIX)})
    else:  # e.g. the Flux-shaped model started from the UNet model's text encoder and autoencoder
        log(f"{args.init_from} is another architecture: its diffusion model is not used")
    text_sd = {"clip_l." + k[len(tm.TEXT_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(tm.TEXT_PREFIX)}
    missing, unexpected = text.load_state_dict(text_sd, strict=False)
    if [k for k in missing if not k.endswith("logit_scale")] or unexpected:
        sys.exit(f"{args.init_from}: text encoder keys do not match ({missing[:3]}, {unexpected[:3]})")
    log(f"unet: initialised from {args.init_from}")


def ensure_vae_from_export(args, tm, cfg):
    path = os.path.join(args.work, "vae_final.pt")
    if os.path.exists(path) or not args.init_from:
        return
    import safetensors.torch

    sd = safetensors.torch.load_file(args.init_from)
    src = tm.read_tiny_config(args.init_from)
    taesd = tm.build_taesd(cfg)
    taesd.load_state_dict({k[len(tm.VAE_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(tm.VAE_PREFIX)})
    stats = {"latent_scale_factor": src.latent_scale_factor, "latent_rgb_factors": src.latent_rgb_factors,
             "latent_rgb_factors_bias": src.latent_rgb_factors_bias, "steps": src.notes.get("vae_steps"),
             "recon_l1_full_images": src.notes.get("vae_recon_l1", float("nan"))}
    atomic_save({"model": taesd.state_dict(), "stats": stats, "history": []}, path)
    log(f"vae: taken from {args.init_from}")


def train_unet(args, tm, cfg, device):
    path = os.path.join(args.work, "unet.pt")
    budget = 60.0 * (args.unet_minutes if args.unet_minutes is not None else args.minutes)
    ensure_vae_from_export(args, tm, cfg)
    taesd, stats, _ = load_vae_final(args, tm, cfg, device)
    scale = stats["latent_scale_factor"]
    unet, text = build_unet_stage(args, tm, cfg, device)
    if args.init_from and not os.path.exists(path):
        init_from_export(args, tm, cfg, unet, text, device)
    if args.freeze_text:  # trained first and frozen, as SD's CLIP is
        text.requires_grad_(False)
    else:
        make_text_trainable(text)
    tokenizer = tm.build_tokenizer(cfg)
    empty_tokens = tokenize(tokenizer, [""])[0]
    n_tokens = len(empty_tokens)
    empty_ids = torch.tensor([empty_tokens], dtype=torch.long)  # (1, T)
    batch_token_input(text.clip_l)
    trainable = [p for p in list(unet.parameters()) + list(text.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.unet_lr, weight_decay=0.01)
    ema = Ema([unet, text], args.ema)
    sigmas = None if cfg.architecture == "flux" else host_sigmas(cfg).to(device)
    if args.teacher and cfg.architecture != "flux":
        sys.exit("--teacher distils the UNet-shaped model into the Flux-shaped one: it needs --arch flux")
    teacher = UnetTeacher(args.teacher, tm, device) if args.teacher else None
    if teacher is not None and abs(teacher.latent_scale - scale) > 1e-6 * scale:
        sys.exit(f"--teacher {args.teacher}: its latent scale {teacher.latent_scale} is not this model's {scale}: "
                 "the two must share the autoencoder")

    cap = args.buffer
    buf_lat = torch.zeros(cap, cfg.latent_channels, cfg.latent_size, cfg.latent_size, device=device)
    buf_tok = [None] * cap
    buf_tok_ids = torch.zeros(cap, n_tokens, dtype=torch.long)  # the same ids as one host tensor (batch_token_input)
    buf_cap = [None] * cap
    buf_mask = [None] * cap  # per example: (n objects, latent pixels) coverage
    buf_cols = [None] * cap  # per example: each object's word columns
    # The same two as fixed-size rows on the device (object_rows), for the batched grounding
    # loss; the lists above are what checkpoints keep.
    buf_obj_mask = torch.zeros(cap, MAX_OBJECTS, cfg.latent_size ** 2, device=device)
    buf_obj_cols = torch.zeros(cap, MAX_OBJECTS, n_tokens, device=device)
    tok_cache, word_cache = {}, {}  # caption -> token ids, word -> token ids
    step, elapsed, produced, history = 0, 0.0, 0, []
    if os.path.exists(path):
        ck = torch.load(path, map_location=device, weights_only=False)
        unet.load_state_dict(ck["unet"])
        text.load_state_dict(ck["text"])
        for s, sd in zip(ema.shadow, ck["ema"]):
            s.load_state_dict(sd)
        opt.load_state_dict(ck["opt"])
        step, elapsed, produced, history = ck["step"], ck["elapsed"], ck["produced"], ck.get("history", [])
        n = min(produced, cap)
        buf_lat[:n] = ck["buf_lat"][:n].to(device).float()
        buf_tok[:n] = ck["buf_tok"][:n]
        if n:
            buf_tok_ids[:n] = torch.tensor(buf_tok[:n], dtype=torch.long)
        buf_cap[:n] = ck["buf_cap"][:n]
        if "buf_mask" in ck:
            buf_mask[:n] = unpack_masks(ck["buf_mask"])[:n]
            buf_cols[:n] = ck["buf_cols"][:n]
            for i in range(0, n, 4096):
                rows = object_rows(buf_mask[i:min(n, i + 4096)], buf_cols[i:min(n, i + 4096)], n_tokens)
                buf_obj_mask[i:i + len(rows[0])], buf_obj_cols[i:i + len(rows[0])] = (r.to(device) for r in rows)
        log(f"unet: resumed at step {step}, {produced} examples, {elapsed / 60:.1f} of {budget / 60:.1f} min")
    if elapsed >= budget:
        log("unet: budget already spent")
        return

    def save():
        n = min(produced, cap)
        atomic_save({"unet": unet.state_dict(), "text": text.state_dict(), "ema": [s.state_dict() for s in ema.shadow],
                     "opt": opt.state_dict(), "step": step, "elapsed": elapsed, "produced": produced,
                     "history": history, "buf_lat": buf_lat[:n].half().cpu(), "buf_tok": buf_tok[:n],
                     "buf_cap": buf_cap[:n], "buf_mask": pack_masks(buf_mask[:n]), "buf_cols": buf_cols[:n],
                     "vae_stats": stats}, path)

    @torch.no_grad()
    def produce(count):
        nonlocal produced
        images, caps, masks, words = source.get(produced, count)
        timer.lap("data")
        lat = []
        for i in range(0, count, 64):
            x = to_tensor(images[i:i + 64], device)
            # TAESD.encode is exactly what comfy.sd.VAE runs (input in [-1, 1]);
            # * scale is LatentFormat.process_in.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                z = taesd.encode(x * 2 - 1)
            lat.append(z.float() * scale)
        lat = torch.cat(lat)
        timer.lap("encode")
        for c in caps:
            if c not in tok_cache:  # the scenes' captions repeat: tokenize each once
                tok_cache[c] = tokenize(tokenizer, [c])[0]
        toks = [tok_cache[c] for c in caps]
        slots = [(produced + j) % cap for j in range(count)]
        for j, slot in enumerate(slots):
            buf_tok[slot] = toks[j]
            buf_tok_ids[slot] = torch.tensor(toks[j], dtype=torch.long)
            buf_cap[slot] = caps[j]
            buf_mask[slot] = torch.from_numpy(masks[j]).reshape(len(masks[j]), -1)
            # "shape": only the shape word's columns are grounded, so that column itself must
            # find its object (with "caption" the mean over colour and shape columns could be met
            # by the colour column alone, and the shape word's map then follows its colour).
            obj_words = [w[:1] for w in words[j]] if args.ground_words == "shape" else words[j]
            buf_cols[slot] = word_columns(tokenizer, toks[j], obj_words, word_cache)
        at = to_device(torch.tensor(slots), device)
        buf_lat[at] = lat
        rows = object_rows([buf_mask[i] for i in slots], [buf_cols[i] for i in slots], n_tokens)
        buf_obj_mask[at], buf_obj_cols[at] = (to_device(r, device) for r in rows)
        produced += count
        timer.lap("tokenize")

    source = ExampleSource(args.seed, args.workers, args.fresh, args.mix)
    unet.train()
    text.train(not args.freeze_text)
    store: list = []
    flow = cfg.architecture == "flux"
    if flow:
        options = flux_training_options(unet, cfg, store, args.grounding_weight > 0)
    else:
        options = grounding_patches(unet, store, cfg.latent_size ** 2) if args.grounding_weight > 0 else {}
    timer = PhaseTimer(args.profile > 0, device)
    t_start, t_ckpt, run_loss, run_n, run_ground, run_terms = time.time(), time.time(), 0.0, 0, 0.0, {}
    first_step, first_produced, first_elapsed = step, produced, elapsed
    try:
        if produced < args.batch:
            produce(max(args.batch, args.fresh) - produced)
            timer.end_step("fill")
        filled = produced
        while elapsed < budget and (args.profile <= 0 or step < first_step + args.profile):
            if not args.no_render_wait or source.ready(produced, args.fresh):
                produce(args.fresh)
            g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            n = min(produced, cap)
            idx = torch.randint(0, n, (args.batch,), generator=g)
            drop = torch.rand(args.batch, generator=g) < args.caption_dropout
            if flow:
                sigma = to_device(flow_sigmas(torch.randn(args.batch, generator=g), cfg.flux_shift), device).view(-1, 1, 1, 1)
            else:
                t = to_device(torch.randint(0, len(sigmas), (args.batch,), generator=g), device)
                sigma = sigmas[t].view(-1, 1, 1, 1)
            at = to_device(idx, device)
            x0 = buf_lat[at]
            noise = to_device(torch.randn(x0.shape, generator=g), device)
            # the same ids as one tensor, the empty prompt's last (its vectors fill dropped padding)
            token_ids = torch.cat([torch.where(drop[:, None], empty_ids, buf_tok_ids[idx]), empty_ids])
            if flow:  # CONST (rectified flow): x_t = (1 - s) x0 + s noise, the model predicts noise - x0
                x_in, timestep, target = (1 - sigma) * x0 + sigma * noise, sigma.view(-1), noise - x0
                extra = {"y": torch.zeros(args.batch, cfg.text_width, device=device)}  # content-free pooled vector
            else:
                x_in, timestep, target = (x0 + sigma * noise) / (sigma ** 2 + 1).sqrt(), t.float(), noise  # EPS.calculate_input
                extra = {}
            if teacher is not None:  # its expectation in place of the sample's target, where it covers the level
                taught, covered = teacher.velocity(x_in, sigma.view(-1), token_ids[:-1])
                target = torch.where(covered.view(-1, 1, 1, 1), taught, target)
            timer.lap("batch")
            for group in opt.param_groups:
                group["lr"] = lr_at(args.unet_lr, step, args.warmup, elapsed / budget)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                with torch.set_grad_enabled(not args.freeze_text):
                    context, _ = text.clip_l(token_ids)
                context, empty_context = context[:-1], context[-1:]
                if args.padding_dropout > 0:
                    # Padding dropout: the end token and padding of some captions are replaced by
                    # the empty prompt's (content-free) vectors at the same positions, so the
                    # UNet must find the caption in the word columns, not in the summary that a
                    # causal encoder leaves in the padding.
                    pad = torch.rand(args.batch, generator=g) < args.padding_dropout
                    keep = torch.ones(context.shape[:-1] + (1,))  # built on the host, copied once
                    for i in torch.nonzero(pad & ~drop).flatten().tolist():
                        keep[i, buf_tok[int(idx[i])].index(49407, 1):] = 0.0  # (not dropped: its own caption)
                    keep = to_device(keep, device).to(context.dtype)
                    context = context * keep + empty_context * (1 - keep)
                store.clear()
                pred = unet(x_in, timestep, context=context, transformer_options=options, **extra)
            per = (pred.float() - target).square().mean(dim=(1, 2, 3))
            if args.min_snr > 0 and not flow:
                # Min-SNR-gamma weighting for eps prediction: min(SNR, gamma) / SNR with
                # SNR = 1 / sigma^2. Low-noise steps (fine detail) stop dominating, so the
                # layout/colour/shape decisions made at mid and high noise learn faster.
                snr = 1.0 / sigma.view(-1) ** 2
                per = per * torch.clamp(snr, max=args.min_snr) / snr
            loss = per.mean()
            timer.lap("forward")
            if args.grounding_weight > 0:
                # Flux: each block's probabilities over all keys, renormalised over the text keys,
                # so the share floor means the same as on the UNet's cross-attention.
                maps = [p.float() / p.float().sum(-1, keepdim=True).clamp_min(1e-12) if flow else p.float()
                        for p in store]
                terms = grounding_loss(maps, buf_obj_mask[at], buf_obj_cols[at], to_device(~drop, device),
                                       args.grounding_floor)
                ground = sum(terms.values())
                loss = loss + args.grounding_weight * ground
                # Running sums stay on the device (float64, as Python's floats were): they are
                # read once per --log-every steps, so a step never waits for the device.
                run_ground = run_ground + ground.detach().double()
                for k, v in terms.items():
                    run_terms[k] = run_terms.get(k, 0.0) + v.detach().double()
            timer.lap("grounding")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            timer.lap("backward")
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            timer.lap("optimizer")
            ema.update([unet, text], step)
            timer.lap("ema")
            step += 1
            run_loss = run_loss + loss.detach().double()
            run_n += 1
            now = time.time()
            elapsed += now - t_start
            t_start = now
            if step % args.log_every == 0:
                run_loss, run_ground = float(run_loss), float(run_ground)
                history.append((step, elapsed, run_loss / run_n))
                parts = " ".join(f"{k} {float(v) / run_n:.3f}" for k, v in run_terms.items())
                log(f"unet step {step} loss {run_loss / run_n:.4f} grounding {run_ground / run_n:.4f} ({parts}) "
                    f"examples {produced} lr {opt.param_groups[0]['lr']:.2e} {elapsed / 60:.1f}/{budget / 60:.0f} min")
                run_loss, run_n, run_ground, run_terms = 0.0, 0, 0.0, {}
            if now - t_ckpt > 60 * args.ckpt_minutes and args.profile <= 0:
                save()
                t_ckpt = now
            timer.lap("logging")
            timer.end_step(step)
    finally:
        source.close()
    if args.profile > 0:  # a measurement, not training: the work folder is left as it was
        log(f"unet: profile of {step - first_step} steps (batch {args.batch}, fresh {args.fresh}, "
            f"workers {args.workers}, device {device.type}), seconds (share of the step) per phase:\n"
            + timer.table(PROFILE_PHASES))
        steps = [sum(sec.values()) for label, sec in timer.rows if label != "fill"]
        if len(steps) > 1:
            mean = sum(steps[1:]) / len(steps[1:])
            log(f"unet: profile: {mean:.4f} s per step after the first: {args.batch * 60 / mean:.0f} examples "
                f"trained per minute; {(produced - filled) * 60 / sum(steps):.0f} new (rendered and encoded) "
                f"per minute over all {len(steps)} steps")
        return
    save()
    minutes = max(elapsed - first_elapsed, 1e-9) / 60
    log(f"unet: stopped at step {step}, {produced} examples, {elapsed / 60:.1f} min; this run: "
        f"{step - first_step} steps, {(step - first_step) * args.batch / minutes:.0f} examples trained and "
        f"{(produced - first_produced) / minutes:.0f} new per minute")


# ---------------------------------------------------------------------------
# Stage: export (+ preview through the host)
# ---------------------------------------------------------------------------


def export(args, tm, cfg):
    device = torch.device("cpu")
    taesd, stats, vae_hist = load_vae_final(args, tm, cfg, device)
    path = os.path.join(args.work, "unet.pt")
    if not os.path.exists(path):
        sys.exit(f"{path} missing: run --stage unet first")
    ck = torch.load(path, map_location=device, weights_only=False)
    unet, text = build_unet_stage(args, tm, cfg, device)
    src = ck["ema"] if args.export_weights == "ema" else [ck["unet"], ck["text"]]
    unet.load_state_dict(src[0])
    text.load_state_dict(src[1])
    cfg = copy.deepcopy(cfg)
    cfg.latent_scale_factor = stats["latent_scale_factor"]
    cfg.latent_rgb_factors = stats["latent_rgb_factors"]
    cfg.latent_rgb_factors_bias = stats["latent_rgb_factors_bias"]
    hist = ck.get("history", [])
    cfg.notes = {
        "data": "benchmarks/shapesbench/scenes.py training_example, seed %d" % args.seed,
        "vae_steps": stats.get("steps"),
        "vae_recon_l1": round(stats.get("recon_l1_full_images", float("nan")), 5),
        "unet_steps": ck["step"],
        "unet_examples": ck["produced"],
        "unet_minutes": round(ck["elapsed"] / 60, 1),
        "unet_final_loss": round(hist[-1][2], 5) if hist else None,
        "weights": args.export_weights,
    }
    if args.init_from:  # a fine-tuning run: how it differs from training from scratch
        cfg.notes.update({"init_from": os.path.basename(args.init_from), "freeze_text": args.freeze_text,
                          "padding_dropout": args.padding_dropout, "grounding_weight": args.grounding_weight,
                          "mix": list(args.mix), "unet_lr": args.unet_lr,
                          "grounding_floor": args.grounding_floor, "grounding_terms": "token+share+separate",
                          "ground_words": args.ground_words})
    if args.teacher:
        cfg.notes["teacher"] = os.path.basename(args.teacher)
    size = tm.save_tiny_model(args.export, cfg, unet, text, taesd)
    n = lambda m: sum(p.numel() for p in m.parameters())
    log(f"exported {args.export}: {size / 1e6:.2f} MB; params unet {n(unet)}, text {n(text)}, "
        f"vae {n(taesd.taesd_encoder) + n(taesd.taesd_decoder)}")
    if size > tm.MAX_FILE_BYTES:
        log(f"WARNING: file exceeds the {tm.MAX_FILE_BYTES / 1e6:.0f} MB budget")


PREVIEW_PROMPTS = [
    "a red circle", "a blue square", "a green triangle", "a yellow star", "a cyan heart", "a purple cross",
    "a green circle", "a red square",
    "a red circle and a blue square", "a yellow star and a green heart", "a purple triangle and a cyan circle",
    "a blue cross and a red heart",
]


def preview(model_path: str, png: str, seeds: int = 4, steps: int = 20, cfg_scale: float = 5.0, prompts=None):
    """Grid: one row per prompt, ``seeds`` columns; sampled exactly as KSampler does."""
    import comfy.sample
    from PIL import Image, ImageDraw

    tm = _import_tiny_model()
    prompts = prompts or PREVIEW_PROMPTS
    with torch.inference_mode():
        model, clip, vae = tm.load_tiny_model(model_path)
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        rows = []
        for p in prompts:
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(p))
            latent = torch.zeros(seeds, 4, 16, 16)
            noise = torch.cat([comfy.sample.prepare_noise(latent[:1], s) for s in range(seeds)])
            out = comfy.sample.sample(model, noise, steps, cfg_scale, "euler", "normal", cond, neg, latent,
                                      seed=0, disable_pbar=True)
            rows.append((vae.decode(out).clamp(0, 1) * 255).round().byte().cpu().numpy())
    label_w, cell = 230, 128
    grid = Image.new("RGB", (label_w + cell * seeds, cell * len(prompts)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (p, imgs) in enumerate(zip(prompts, rows)):
        draw.text((4, r * cell + cell // 2 - 6), p, fill="black")
        for c in range(seeds):
            grid.paste(Image.fromarray(imgs[c]), (label_w + c * cell, r * cell))
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    grid.save(png)
    log(f"preview written to {png}")


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=["vae", "unet", "export", "all"], default="all",
                    help="all = vae, unet, then export if --export is given")
    ap.add_argument("--arch", choices=["unet", "flux"], default="unet",
                    help="the diffusion model: SD1-shaped UNet, or Flux.1-shaped (TinyModelConfig.architecture)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=0, help="render worker processes (0: render in-process)")
    ap.add_argument("--minutes", type=float, default=10.0, help="time budget per stage (wall clock)")
    ap.add_argument("--vae-minutes", type=float, default=None)
    ap.add_argument("--unet-minutes", type=float, default=None)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--profile", type=int, default=0,
                    help="UNet stage: run this many steps, print each phase's seconds per step, save nothing")
    ap.add_argument("--work", default=os.path.join(REPO, ".train_work"))
    ap.add_argument("--export", default=None, help="write the final fp16 safetensors here")
    ap.add_argument("--export-weights", choices=["ema", "raw"], default="ema")
    ap.add_argument("--preview", default=None, help="after export, sample a prompt grid to this PNG")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (cuda)")
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-crop", type=int, default=64, help="random crop side for AE training (0: full image)")
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-latent-noise", type=float, default=0.1)
    ap.add_argument("--vae-fg-weight", type=float, default=4.0, help="extra L1 weight on shape (saturated) pixels")
    ap.add_argument("--stat-images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fresh", type=int, default=3, help="new examples encoded into the replay buffer per step")
    ap.add_argument("--buffer", type=int, default=6000, help="replay buffer size (examples)")
    ap.add_argument("--no-render-wait", action="store_true",
                    help="with --workers: a step adds its --fresh examples only when the workers have "
                         "them rendered, else trains on the buffer as it is (a fast device never waits "
                         "for rendering; which step adds which examples then depends on timing)")
    ap.add_argument("--unet-lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-gamma loss weighting (0: plain MSE)")
    ap.add_argument("--init-from", default=None,
                    help="start the UNet stage from this exported model (its UNet, text encoder and autoencoder)")
    ap.add_argument("--freeze-text", action="store_true", help="keep the text encoder fixed (trained first, as SD's)")
    ap.add_argument("--padding-dropout", type=float, default=0.0,
                    help="share of captions whose end token and padding get the empty prompt's vectors")
    ap.add_argument("--grounding-weight", type=float, default=0.0,
                    help="weight of the token grounding loss (each object word's attention inside its object)")
    ap.add_argument("--grounding-floor", type=float, default=0.2,
                    help="share of an object's pixels' attention its words should at least get")
    ap.add_argument("--content-free-end", action="store_true",
                    help="the text encoder outputs zero at the end token and padding (TinyModelConfig.content_free_end)")
    ap.add_argument("--mix", type=lambda v: tuple(float(x) for x in v.split(",")), default=(),
                    help="data mix 'p_one,p_two[,p_colors]' (default: scenes.TRAINING_MIX; three objects "
                         "take 1 - p_one - p_two, p_colors is the share of captions with colour words)")
    ap.add_argument("--teacher", default=None,
                    help="--arch flux: the UNet-shaped model file whose predictions replace the flow target "
                         "within its noise range (distillation; see UnetTeacher)")
    ap.add_argument("--ground-words", choices=("caption", "shape"), default="caption",
                    help="words whose maps the grounding loss reads: each object's shape and colour words "
                         "(caption) or its shape word alone (shape)")
    args = ap.parse_args(argv)

    _setup_paths(args.device)
    torch.set_num_threads(args.threads)
    tm = _import_tiny_model()
    cfg = tm.TinyModelConfig(content_free_end=args.content_free_end, architecture=args.arch)
    os.makedirs(args.work, exist_ok=True)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log(f"config {cfg.to_json()}")
    log(f"args {vars(args)}")
    if args.stage == "vae" or (args.stage == "all" and not args.init_from):
        # A fine-tune (--init-from) keeps the exported model's autoencoder: a fresh one
        # would change the latent space the UNet was trained in.
        train_vae(args, tm, cfg, device)
    if args.stage in ("unet", "all"):
        train_unet(args, tm, cfg, device)
    if args.stage == "export" or (args.stage == "all" and args.export):
        if not args.export:
            sys.exit("--stage export needs --export PATH")
        export(args, tm, cfg)
        if args.preview:
            preview(args.export, args.preview)


if __name__ == "__main__":
    main()
