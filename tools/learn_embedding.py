#!/usr/bin/env python3
"""Learn a new shape as a textual-inversion embedding of the embedded tiny model.

The tiny model was trained on six shapes (benchmarks/shapesbench/scenes.py SHAPES). This
script renders a few scenes of a shape it never saw (NEW_SHAPES, e.g. a diamond), then
optimises 1-2 new token vectors with the model's own training objective (eps-prediction
MSE, min-SNR weighted, the host's discrete sigmas) while the UNet, the text encoder and
the autoencoder stay frozen. The vectors are written as a standard embedding file
(safetensors, key ``emb_params``, shape (vectors, 64)) that the host's CLIP loads from its
embeddings folder when a prompt says ``embedding:<name>``.

At the end it samples single-shape prompts with the learned embedding, loaded back through
the host's embedding path, and counts how often the new shape is detected (the ShapesBench
detector extended with the new shape): the honest check that learning worked.

    # the shipped embedding: a star, learned from the word "square" (the control: a shape the
    # model knows, so the check says whether learning works at all)
    OMP_NUM_THREADS=1 .venv/bin/python tools/learn_embedding.py --shape star --init square --steps 400 \\
        --out models/embeddings/learned_star.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tools import train_tiny_model as trainer  # noqa: E402  (path setup, sigmas, trainable CLIP layers)

END_TOKEN = 49407


def render_set(shape: str, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """count single-object scenes of `shape`: uint8 (count, 128, 128, 3) and colour words."""
    from benchmarks.shapesbench import scenes
    rng = np.random.default_rng([seed, 17])
    images, colors = [], []
    for _ in range(count):
        scene = scenes.sample_scene(rng, 1, shapes=(shape,), allow_held_out=True)
        images.append(scenes.render(scene)[0])
        colors.append(scene.objects[0].color)
    return np.stack(images), colors


def prompt_tokens(tokenizer, text: str, vectors: torch.Tensor) -> list:
    """The 77 tokens of `text` followed by the embedding's vectors (before the end token).

    vectors: (V, width). Returns a list of ints and (width,) tensors, as the host's
    tokenizer lays out an embedding (one list element per vector).
    """
    ids = [t for t, _ in tokenizer.tokenize_with_weights(text)["l"][0]]
    end = ids.index(END_TOKEN)
    v = vectors.shape[0]
    return ids[:end] + [vectors[i] for i in range(v)] + ids[end:len(ids) - v]


def word_vector(clip_l, tokenizer, word: str) -> torch.Tensor:
    """(width,) mean input embedding of a word's tokens."""
    ids = [t for t, _ in tokenizer.tokenize_with_weights(word)["l"][0]]
    ids = ids[1:ids.index(END_TOKEN)]
    table = clip_l.transformer.get_input_embeddings().weight
    return table[ids].detach().float().mean(0)


def learn(args) -> dict:
    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    torch.manual_seed(args.seed)
    cfg = tm.read_tiny_config(args.model)
    model, clip, vae = tm.load_tiny_model(args.model)
    unet = model.model.diffusion_model
    unet.requires_grad_(False).eval()
    text = clip.cond_stage_model
    text.requires_grad_(False).eval()
    trainer.make_text_trainable(text)
    tokenizer = tm.build_tokenizer(cfg)
    clip_l = text.clip_l

    images, colors = render_set(args.shape, args.images, args.seed)
    with torch.no_grad():
        latents = model.model.latent_format.process_in(vae.encode(torch.from_numpy(images).float() / 255.0)).float()
    sigmas = trainer.host_sigmas(cfg)

    init = word_vector(clip_l, tokenizer, args.init)
    g = torch.Generator().manual_seed(args.seed)
    vectors = (init[None].repeat(args.vectors, 1) + 0.01 * init.norm() / init.numel() ** 0.5
               * torch.randn(args.vectors, init.numel(), generator=g)).requires_grad_(True)
    opt = torch.optim.AdamW([vectors], lr=args.lr, weight_decay=0.0)

    # A fixed evaluation set (image, timestep, noise, colour word or not): the same loss,
    # without sampling noise, for the starting word and for the learned vectors.
    ge = torch.Generator().manual_seed(args.seed + 1)
    n_eval = 64
    eval_idx = torch.arange(n_eval) % len(latents)
    eval_t = torch.linspace(50, len(sigmas) - 50, n_eval).long()
    eval_noise = torch.randn(n_eval, *latents.shape[1:], generator=ge)

    def diffusion_loss(idx, t, noise, vec, with_color) -> torch.Tensor:
        sigma = sigmas[t].view(-1, 1, 1, 1)
        x_in = (latents[idx] + sigma * noise) / (sigma ** 2 + 1).sqrt()
        texts = [f"a {colors[int(i)]}" if c else "a" for i, c in zip(idx, with_color)]
        context, _ = clip_l([prompt_tokens(tokenizer, s, vec) for s in texts])
        pred = unet(x_in, timesteps=t.float(), context=context)
        snr = 1.0 / sigma.view(-1) ** 2
        return ((pred - noise).square().mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5.0) / snr).mean()

    def eval_loss(vec) -> float:
        with torch.no_grad():
            return float(diffusion_loss(eval_idx, eval_t, eval_noise, vec, torch.ones(n_eval, dtype=torch.bool)))

    start_loss = eval_loss(init[None].repeat(args.vectors, 1))
    print(f"eval loss with the word {args.init!r}: {start_loss:.5f}", flush=True)
    history, t0, running = [], time.time(), []
    for step in range(args.steps):
        idx = torch.randint(0, len(latents), (args.batch,), generator=g)
        t = torch.randint(0, len(sigmas), (args.batch,), generator=g)
        noise = torch.randn(args.batch, *latents.shape[1:], generator=g)
        loss = diffusion_loss(idx, t, noise, vectors, torch.rand(args.batch, generator=g) < 0.8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0:
            history.append((step + 1, round(time.time() - t0, 1), float(np.mean(running))))
            print(f"step {step + 1} loss {np.mean(running):.4f} {time.time() - t0:.0f} s", flush=True)
            running = []
    end_loss = eval_loss(vectors.detach())
    print(f"eval loss: word {args.init!r} {start_loss:.5f} -> learned {end_loss:.5f}", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import comfy.utils
    meta = {"shape": args.shape, "init": args.init, "steps": str(args.steps), "images": str(args.images),
            "eval_loss_init": f"{start_loss:.5f}", "eval_loss_learned": f"{end_loss:.5f}"}
    comfy.utils.save_torch_file({"emb_params": vectors.detach().float().contiguous()}, str(out), metadata=meta)
    print(f"wrote {out} ({args.vectors} x {vectors.shape[1]}) in {time.time() - t0:.0f} s")
    return {"history": history, "seconds": time.time() - t0, "eval_loss_init": start_loss,
            "eval_loss_learned": end_loss, "vector_norms": vectors.detach().norm(dim=1).tolist(),
            "init_norm": float(init.norm())}


def check(args) -> dict:
    """Sample single-shape prompts with the learned embedding (loaded by the host's CLIP
    from its embeddings folder) and with plain words; count detections of the new shape."""
    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    import comfy.sample
    from benchmarks.shapesbench.personalised import detect_extended
    out = pathlib.Path(args.out)
    model, clip, vae = tm.load_tiny_model(args.model, embedding_directory=str(out.parent))
    prompts = {"learned": f"a embedding:{out.stem}", "word": f"a {args.shape}", "init word": f"a {args.init}"}
    result = {}
    with torch.inference_mode():
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = torch.zeros(args.check_seeds, 4, 16, 16)
        noise = comfy.sample.prepare_noise(latent, 1000)
        for label, text in prompts.items():
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
            samples = comfy.sample.sample(model, noise, 20, 5.0, "euler", "normal", cond, neg, latent, seed=1000,
                                          disable_pbar=True)
            imgs = (vae.decode(samples).clamp(0, 1) * 255).round().byte().numpy()
            found = [[d.shape for d in detect_extended(im)] for im in imgs]
            hits = sum(args.shape in f for f in found)
            only = sum(f == [args.shape] for f in found)
            result[label] = {"prompt": text, "detected": hits, "only_it": only, "n": len(imgs),
                             "shapes": found}
            print(f"{label:10s} {text!r}: {args.shape} in {hits}/{len(imgs)} images "
                  f"(alone in {only}); detected {found}")
    return result


def _portable(value):
    """Paths inside the repository as relative paths, others as file names (for the report)."""
    if isinstance(value, str) and os.path.isabs(value):
        path = pathlib.Path(value).resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"))
    ap.add_argument("--shape", default="diamond", help="a shape of scenes.NEW_SHAPES")
    ap.add_argument("--name", default=None, help="embedding name (default: the --out file's stem)")
    ap.add_argument("--out", default=str(ROOT / "models" / "embeddings" / "diamond.safetensors"))
    ap.add_argument("--init", default="square", help="word whose token embedding starts the vectors")
    ap.add_argument("--vectors", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--check-seeds", type=int, default=16, help="images per prompt in the final check (0: none)")
    ap.add_argument("--check-only", action="store_true", help="skip learning, check an existing file")
    args = ap.parse_args(argv)
    if args.name:
        args.out = str(pathlib.Path(args.out).with_name(args.name + ".safetensors"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = {"args": {k: _portable(v) for k, v in vars(args).items()}}
    if not args.check_only:
        report["learn"] = learn(args)
    if args.check_seeds:
        report["check"] = check(args)
    log = pathlib.Path(args.out).with_suffix(".json")
    log.write_text(json.dumps(report, indent=1))
    print("wrote", log)


if __name__ == "__main__":
    main()
