"""Personalised-subject benchmark: a learned new shape and a known shape in one prompt.

A shape the tiny model never saw (scenes.NEW_SHAPES, e.g. a diamond) is learned as a
textual-inversion embedding by tools/learn_embedding.py. Prompts put it next to a known
shape ("a red embedding:diamond and a blue circle"), with the embedding as an AI-T2I
subject. Vanilla sampling and AI-T2I (at several strengths) run from the same noise;
each image is scored by the ShapesBench detector extended with the new shape: the same
colour segmentation, and a nearest-centroid shape classifier fitted on clean renders of
the six trained shapes plus the new ones.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shapesbench/personalised.py \\
        --embedding models/embeddings/diamond.safetensors --out results/shapesbench_personalised
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.shapesbench.evaluate import (  # noqa: E402
    DETECT_CONFIG, Detection, FitConfig, PromptSpec, ShapeModel, _assign, _box, _training_features, components,
    shape_features, summarize)
from benchmarks.shapesbench.scenes import NEW_SHAPES, SHAPES  # noqa: E402


# ---------------------------------------------------------------------------
# Detector with the new shapes
# ---------------------------------------------------------------------------


def fit_extended_model(shapes: tuple[str, ...] = SHAPES + NEW_SHAPES, cfg: FitConfig = FitConfig()) -> ShapeModel:
    """The evaluator's nearest-centroid classifier, fitted on `shapes` (deterministic)."""
    rng = np.random.default_rng(cfg.seed)
    per_class = [_training_features(s, cfg, rng) for s in shapes]
    stacked = np.concatenate(per_class)
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    centroids = np.array([((f - mean) / scale).mean(axis=0) for f in per_class])
    return ShapeModel(tuple(shapes), centroids, mean, scale)


@functools.lru_cache(maxsize=1)
def extended_model() -> ShapeModel:
    return fit_extended_model()


def detect_extended(image: np.ndarray) -> list[Detection]:
    """Coloured shapes in a uint8 (H, W, 3) image, the new shapes included; largest first."""
    model = extended_model()
    return [Detection(model.predict(shape_features(mask)), color, _box(mask), int(mask.sum()), mask)
            for color, mask in components(image, DETECT_CONFIG)]


def score_extended(image: np.ndarray, spec: PromptSpec) -> dict:
    """evaluate.score with the extended detector.

    present: every subject has its own detection of its shape (both subjects drawn as
    separate objects); bound: and of its colour; no_extra: no more detections than
    subjects; correct: all three.
    """
    dets = detect_extended(image)
    chosen = _assign(spec.subjects, dets)
    present = all(d is not None for d in chosen)
    bound = present and all(c is None or d.color == c for d, (_, c) in zip(chosen, spec.subjects))
    no_extra = len(dets) <= len(spec.subjects)
    return {"present": present, "bound": bound, "no_extra": no_extra, "correct": present and bound and no_extra,
            "found": [d is not None for d in chosen], "detected": [f"{d.color} {d.shape}" for d in dets]}


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------

# (new-shape colour, known shape, known colour): no held-out (shape, colour) pair. The first
# four whose known shape is not the learned one are used.
PAIRS = (("red", "circle", "blue"), ("green", "square", "yellow"), ("blue", "heart", "purple"),
         ("yellow", "star", "cyan"), ("purple", "triangle", "green"))
KEYS = ("present", "new_found", "known_found", "bound", "no_extra", "correct")


def prompt_specs(new_shape: str, token: str) -> list[tuple[str, PromptSpec]]:
    """(text with the embedding token, spec scored with the shape's name)."""
    out = []
    for c1, known, c2 in [p for p in PAIRS if p[1] != new_shape][:4]:
        out.append((f"a {c1} {token} and a {c2} {known}", PromptSpec(f"a {c1} {new_shape} and a {c2} {known}",
                                                                     ((new_shape, c1), (known, c2)))))
    return out


def build_graph(text: str, subjects: str, method: str, strength: float, model_name: str, seed: int, batch: int,
                steps: int, cfg: float, prefix: str) -> dict:
    """Tiny loader -> subject prompt -> KSampler or KSampler (AI-T2I) -> decode -> save (node "7")."""
    def n(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}
    g = {"1": n("AIT2ITinyModelLoader", model_name=model_name),
         "2": n("AIT2ISubjectPrompt", clip=["1", 1], text=text, subjects=subjects, attributes=""),
         "3": n("CLIPTextEncode", clip=["1", 1], text=""),
         "4": n("EmptyLatentImage", width=128, height=128, batch_size=batch)}
    common = dict(model=["1", 0], seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
                  positive=["2", 0], negative=["3", 0], latent_image=["4", 0], denoise=1.0)
    g["5"] = (n("KSampler", **common) if method == "vanilla" else
              n("AIT2IKSampler", method="AI-T2I", strength=strength, start_percent=0.0, end_percent=0.5, **common))
    g["6"] = n("VAEDecode", samples=["5", 0], vae=["1", 2])
    g["7"] = n("SaveImage", images=["6", 0], filename_prefix=prefix)
    return g


def run(args) -> None:
    from io import BytesIO

    from PIL import Image

    from benchmarks.shapesbench.run import LocalExecutor

    emb = pathlib.Path(args.embedding).resolve()
    if not emb.is_file():
        sys.exit(f"no embedding at {emb}: make one with tools/learn_embedding.py")
    out = pathlib.Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    executor = LocalExecutor(pathlib.Path(args.model).resolve())
    import folder_paths  # the host's, importable once the executor started it
    folder_paths.add_model_folder_path("embeddings", str(emb.parent))  # the host's own embeddings lookup
    token = f"embedding:{emb.stem}"
    variants = [("vanilla", 0.0, True)] + [(f"ai_t2i_s{s:g}", s, True) for s in args.strengths]
    if args.word_baseline:
        variants.append(("vanilla_word", 0.0, False))  # the plain shape word, no embedding
    rows = []
    try:
        for p, (text, spec) in enumerate(prompt_specs(args.shape, token)):
            for name, strength, learned in variants:
                prompt = text if learned else spec.text
                subject = token if learned else args.shape
                known = spec.subjects[1][0]
                t0 = time.perf_counter()
                images = executor.run(build_graph(prompt, f"{subject}, {known}", "vanilla" if strength == 0 else "ai_t2i",
                                                  strength, pathlib.Path(args.model).name, args.noise_seed, args.seeds,
                                                  args.steps, args.cfg, f"pers_p{p}_{name}"))
                seconds = time.perf_counter() - t0
                for s, png in enumerate(images):
                    file = f"p{p}_s{s}_{name}.png"
                    (out / "images" / file).write_bytes(png)
                    result = score_extended(np.asarray(Image.open(BytesIO(png)).convert("RGB")), spec)
                    rows.append({"prompt_index": p, "prompt": prompt, "method": name, "strength": strength,
                                 "seed": s, "image": f"images/{file}", "seconds_per_image": round(seconds / len(images), 3),
                                 "new_found": result["found"][0], "known_found": result["found"][1], **result})
                print(f"prompt {p} {name}: present {sum(r['present'] for r in rows[-len(images):])}/{len(images)} "
                      f"({seconds:.1f} s)", flush=True)
    finally:
        executor.close()
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (out / "summary.md").write_text(summary_markdown(rows, [v[0] for v in variants], args, emb))
    write_grid(out, rows, [v[0] for v in variants])
    print((out / "summary.md").read_text())


def _fmt(rate) -> str:
    return f"{rate[0]:.3f} [{rate[1]:.2f}, {rate[2]:.2f}]"


def summary_markdown(rows: list[dict], methods: list[str], args, emb: pathlib.Path) -> str:
    check = emb.with_suffix(".json")
    lines = [f"# ShapesBench, personalised subject: a learned '{args.shape}' embedding and a known shape", "",
             f"Embedding: `{emb.name}` (textual inversion, tools/learn_embedding.py), used as `embedding:{emb.stem}` "
             f"in the prompt and as the AI-T2I subject. {len({r['prompt_index'] for r in rows})} prompts x {args.seeds} seeds (one batch, noise seed "
             f"{args.noise_seed}), euler, {args.steps} steps, cfg {args.cfg}, AI-T2I preset over the first half of "
             "the steps; no attribute pairs. Detector: ShapesBench colour segmentation + nearest-centroid shape "
             f"classifier fitted on clean renders of {', '.join(SHAPES + NEW_SHAPES)}.", "",
             "present = both subjects drawn as separate objects of the right shapes (colour ignored); new_found / "
             "known_found = that subject alone; bound = present with the right colours; correct = bound and no "
             "extra objects. 95 % Wilson intervals.", "",
             "| method | n | " + " | ".join(KEYS) + " | s/image |", "|---|---:|" + "---|" * len(KEYS) + "---:|"]
    for m in methods:
        sub = [r for r in rows if r["method"] == m]
        rates = summarize(sub, KEYS)
        sec = np.median([r["seconds_per_image"] for r in sub])
        lines.append(f"| {m} | {len(sub)} | " + " | ".join(_fmt(rates[k]) for k in KEYS) + f" | {sec:.2f} |")
    base = {(r["prompt_index"], r["seed"]): r for r in rows if r["method"] == methods[0]}
    lines += ["", f"Paired with {methods[0]} (same prompt and noise): images where only the method has both "
              f"subjects present (wins) / only {methods[0]} has them (losses); exact two-sided sign test.", "",
              "| method | wins | losses | sign test p |", "|---|---:|---:|---:|"]
    for m in methods[1:]:
        pairs = [(r["present"], base[(r["prompt_index"], r["seed"])]["present"]) for r in rows
                 if r["method"] == m and (r["prompt_index"], r["seed"]) in base]
        wins, losses = sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)
        lines.append(f"| {m} | {wins} | {losses} | {_sign_test(wins, losses):.3f} |")
    lines += ["", "Per prompt, present (of seeds):", "", "| prompt | " + " | ".join(methods) + " |",
              "|---|" + "---:|" * len(methods)]
    for p in sorted({r["prompt_index"] for r in rows}):
        text = next(r["prompt"] for r in rows if r["prompt_index"] == p and r["method"] == methods[0])
        cells = [str(sum(r["present"] for r in rows if r["prompt_index"] == p and r["method"] == m)) for m in methods]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    if check.is_file():
        c = json.loads(check.read_text()).get("check", {})
        lines += ["", "Single-shape check written by tools/learn_embedding.py (same embedding, 20 euler steps, cfg 5):", ""]
        for label, r in c.items():
            lines.append(f"- {label}: `{r['prompt']}` -> the new shape detected in {r['detected']}/{r['n']} images "
                         f"(alone in {r['only_it']})")
    return "\n".join(lines) + "\n"


def _sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign test of wins vs losses (ties dropped)."""
    from math import comb
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def rewrite_reports(args) -> None:
    """summary.md and grid.png again from results.jsonl."""
    out = pathlib.Path(args.out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    (out / "summary.md").write_text(summary_markdown(rows, methods, args, pathlib.Path(args.embedding).resolve()))
    write_grid(out, rows, methods)


def write_grid(out: pathlib.Path, rows: list[dict], methods: list[str], seeds: int = 4) -> None:
    """grid.png: one row per prompt and method, the first `seeds` images at half size."""
    from PIL import Image, ImageDraw
    prompts = sorted({r["prompt_index"] for r in rows})
    cell, label = 64, 120
    grid = Image.new("RGB", (label + cell * seeds, cell * len(prompts) * len(methods)), "white")
    draw = ImageDraw.Draw(grid)
    y = 0
    for p in prompts:
        for m in methods:
            draw.text((4, y + cell // 2 - 6), f"p{p} {m}", fill="black")
            for r in rows:
                if r["prompt_index"] == p and r["method"] == m and r["seed"] < seeds:
                    im = Image.open(out / r["image"]).convert("RGB").resize((cell, cell))
                    grid.paste(im, (label + r["seed"] * cell, y))
            y += cell
    grid.save(out / "grid.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedding", default=str(ROOT / "models" / "embeddings" / "diamond.safetensors"))
    ap.add_argument("--shape", default="diamond", help="the shape the embedding stands for (scenes.NEW_SHAPES)")
    ap.add_argument("--model", default=str(ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"))
    ap.add_argument("--out", default=str(ROOT / "results" / "shapesbench_personalised"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--strengths", default="1,10,30", help="AI-T2I strengths to compare with vanilla")
    ap.add_argument("--no-word-baseline", dest="word_baseline", action="store_false",
                    help="skip vanilla with the plain shape word instead of the embedding")
    ap.add_argument("--summary-only", action="store_true", help="rewrite summary.md and grid.png from results.jsonl")
    args = ap.parse_args(argv)
    args.strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    rewrite_reports(args) if args.summary_only else run(args)


if __name__ == "__main__":
    main()
