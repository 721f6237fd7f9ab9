"""ShapesBench layout run: does each subject land in the box it was given?

For two-subject evaluation prompts, every subject gets a target box (random, non-
overlapping, square, 30-40 % of the canvas side: the sizes the model draws; one layout per
prompt, fixed by the prompt index). Each prompt x seed is sampled with

    vanilla            the host's KSampler (the boxes are only the target)
    ai_t2i@S           KSampler (AI-T2I) at strength S, no layout
    layout@S           the same, with 'AI-T2I Subject Layout' giving the boxes

through ComfyUI's executor in this process. The exact evaluator detects the objects; a
subject's score is the IoU of its detection's box with its target box (0 when it is not
detected), and whether its detection's centre lies in the target box.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shapesbench/layout.py --out results/shapesbench_layout \\
        --prompts 0-5,15-20 --seeds 8 --strengths 1,20 [--weight 1.0]

Resumable: results.jsonl gets one line per (prompt, seed, method); a restart with the same
--out skips what is there. --summary-only rewrites summary.md.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
from io import BytesIO

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.shapesbench.evaluate import PromptSpec, detect, score  # noqa: E402
from benchmarks.shapesbench.prompts import EVAL_PROMPTS, subject_prompt_inputs, subject_words  # noqa: E402
from benchmarks.shapesbench.run import (DEFAULT_MODEL, LocalExecutor, ResultsWriter, image_grid, model_digest,  # noqa: E402
                                        parse_prompt_selection, read_results)

CANVAS = 128
# Settings that must match for lines of one results.jsonl to be comparable; the model by file
# name and digest, as run.py keeps them (rows from before the model was kept match no run).
RUN_KEYS = ("model", "model_sha256", "steps", "cfg", "sampler", "scheduler", "noise_seed", "weight", "end_percent")


def target_boxes(prompt_index: int, n: int = 2, lo: float = 0.30, hi: float = 0.40,
                 gap: float = 0.04) -> list[tuple[float, float, float, float]]:
    """n random non-overlapping square boxes (x0, y0, x1, y1) as fractions, fixed per prompt."""
    rng = np.random.default_rng(7000 + prompt_index)
    while True:
        boxes = []
        for size in rng.uniform(lo, hi, n):
            x0, y0 = rng.uniform(0.02, 0.98 - size, 2)
            box = (x0, y0, x0 + size, y0 + size)
            if all(max(b[0] - box[2], box[0] - b[2], b[1] - box[3], box[1] - b[3]) >= gap for b in boxes):
                boxes.append(box)
        if len(boxes) == n:
            return [tuple(round(float(v), 3) for v in b) for b in boxes]


def boxes_text(words: list[str], boxes) -> str:
    return "; ".join(f"{w}: {b[0]} {b[1]} {b[2]} {b[3]}" for w, b in zip(words, boxes))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def build_graph(spec: PromptSpec, boxes: str, method: str, args, prefix: str) -> dict:
    """API graph of one job (all seeds as one batch); images come out of node "7"."""
    g = {
        "1": _n("AIT2ITinyModelLoader", model_name=args.model.name),
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=spec.text,
                **subject_prompt_inputs(spec)),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=""),
        "4": _n("EmptyLatentImage", width=CANVAS, height=CANVAS, batch_size=args.seeds),
    }
    common = dict(model=["1", 0], seed=args.noise_seed, steps=args.steps, cfg=args.cfg, sampler_name=args.sampler,
                  scheduler=args.scheduler, negative=["3", 0], latent_image=["4", 0], denoise=1.0)
    kind, _, strength = method.partition("@")
    if kind == "vanilla":
        g["5"] = _n("KSampler", positive=["2", 0], **common)
    else:
        positive = ["2", 0]
        if kind == "layout":
            g["8"] = _n("AIT2ISubjectLayout", conditioning=["2", 0], boxes=boxes, weight=args.weight)
            positive = ["8", 0]
        g["5"] = _n("AIT2IKSampler", positive=positive, method="AI-T2I", strength=float(strength),
                    start_percent=0.0, end_percent=args.end_percent, **common)
    g["6"] = _n("VAEDecode", samples=["5", 0], vae=["1", 2])
    g["7"] = _n("SaveImage", images=["6", 0], filename_prefix=prefix)
    return g


def score_image(png: bytes, spec: PromptSpec, boxes) -> dict:
    from PIL import Image

    image = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
    result = score(image, spec)
    everything = [d.box for d in detect(image)]
    per_subject = []
    for (shape, _), target in zip(spec.subjects, boxes):
        found = result["boxes"].get(shape)
        target_px = [v * CANVAS for v in target]
        # Diagnostic: the best IoU of any detected object, whatever its shape and colour.
        any_iou = round(max((iou(b, target_px) for b in everything), default=0.0), 4)
        if found is None:
            per_subject.append({"iou": 0.0, "centre_in": False, "found": False, "any_iou": any_iou})
            continue
        cx, cy = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2
        per_subject.append({"iou": round(iou(found, target_px), 4), "found": True, "any_iou": any_iou,
                            "centre_in": target_px[0] <= cx <= target_px[2] and target_px[1] <= cy <= target_px[3]})
    return {"correct": result["correct"], "present": result["present"], "subjects": per_subject}


def run_settings(args) -> dict:
    """The settings a row is made under, as RUN_KEYS names them."""
    digest = model_digest(args.model) if args.model.is_file() else None
    return {k: args.model.name if k == "model" else digest if k == "model_sha256" else getattr(args, k)
            for k in RUN_KEYS}


def run(args) -> None:
    out = pathlib.Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    methods = ["vanilla"] + [f"{k}@{s:g}" for s in args.strengths for k in ("ai_t2i", "layout")]
    prompt_ids = parse_prompt_selection(args.prompts, len(EVAL_PROMPTS))
    existing = read_results(path, repair=True)
    mine = run_settings(args)
    for row in existing:
        other = {k: row.get(k) for k in RUN_KEYS}
        if other != mine:
            raise SystemExit(f"{path} was made with other settings {other} (this run: {mine}); use another --out")
    done = {(r["prompt_index"], r["seed"], r["method"]) for r in existing}
    jobs = [(p, m) for p in prompt_ids for m in methods
            if any((p, s, m) not in done for s in range(args.seeds))]
    print(f"{len(done)} results already; {len(jobs)} jobs to run", flush=True)
    writer = ResultsWriter(path)
    executor = LocalExecutor(args.model) if jobs else None
    started = time.perf_counter()
    try:
        for j, (p, m) in enumerate(jobs):
            spec = EVAL_PROMPTS[p]
            boxes = target_boxes(p)
            text = boxes_text(subject_words(spec), boxes)
            t0 = time.perf_counter()
            images = executor.run(build_graph(spec, text, m, args, prefix=f"layout_p{p:02d}"))
            seconds = time.perf_counter() - t0
            rows = []
            for s, png in enumerate(images):
                if (p, s, m) in done:
                    continue
                name = f"p{p:02d}_s{s}_{m.replace('@', '_s')}.png"
                (out / "images" / name).write_bytes(png)
                rows.append({"prompt_index": p, "prompt": spec.text, "seed": s, "method": m, "boxes": text,
                             "image": f"images/{name}", **mine, "seconds_per_image": round(seconds / len(images), 3),
                             **score_image(png, spec, boxes)})
            writer.append(rows)
            elapsed = time.perf_counter() - started
            print(f"[{j + 1}/{len(jobs)}] p{p:02d} {m:<10} {seconds:.1f} s; {elapsed:.0f} s elapsed", flush=True)
    finally:
        if executor is not None:
            executor.close()
    write_summary(out, methods)


def _bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(a - b) for paired per-image values, resampling images."""
    rng = np.random.default_rng(seed)
    d = a - b
    means = d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def write_summary(out: pathlib.Path, methods: list[str] | None = None) -> None:
    rows = read_results(out / "results.jsonl")
    if not rows:
        return
    present = [m for m in (methods or []) if any(r["method"] == m for r in rows)]
    present += sorted({r["method"] for r in rows} - set(present),
                      key=lambda m: (m != "vanilla", float(m.partition("@")[2] or 0), m))
    first = rows[0]
    lines = [
        "# ShapesBench layout: does each subject land in its box?", "",
        f"Model {first.get('model', 'not recorded')}, {CANVAS} px, {first['steps']} {first['sampler']} steps, cfg {first['cfg']}, guidance over "
        f"the first {first['end_percent']:.0%} of the steps, layout weight {first['weight']}. Each prompt has one "
        "random layout of two non-overlapping square boxes (30-40 % of the side); the seeds of a prompt are one "
        "batch from one noise seed, so all methods start from the same noise image by image.", "",
        "Per subject: IoU of the detected object's box with its target box (0 if not detected), and whether the "
        "detection's centre is inside the target box. 'both > 0.5': images where both subjects have IoU > 0.5. "
        "'correct': the plain ShapesBench score (both shapes, right colours, nothing extra). 'any object "
        "IoU > 0.5' (a diagnostic): the box holds some detected object, of any shape and colour.", "",
        "| method | images | mean IoU | IoU > 0.5 | centre in box | both > 0.5 | correct | any object IoU > 0.5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_image = {}
    for m in present:
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: (r["prompt_index"], r["seed"]))
        ious = np.array([[s["iou"] for s in r["subjects"]] for r in rs])
        centre = np.array([[s["centre_in"] for s in r["subjects"]] for r in rs])
        any_iou = np.array([[s.get("any_iou", np.nan) for s in r["subjects"]] for r in rs])
        per_image[m] = ({(r["prompt_index"], r["seed"]): i for i, r in enumerate(rs)}, ious)
        lines.append(f"| {m} | {len(rs)} | {ious.mean():.3f} | {(ious > 0.5).mean():.3f} | {centre.mean():.3f} | "
                     f"{(ious > 0.5).all(axis=1).mean():.3f} | {np.mean([r['correct'] for r in rs]):.3f} | "
                     f"{(any_iou > 0.5).mean():.3f} |")
    lines += ["", "Paired differences of mean IoU per image (95 % bootstrap over images):", ""]
    pairs = [(m, "vanilla") for m in present if m != "vanilla"]
    pairs += [(m, m.replace("layout", "ai_t2i")) for m in present if m.startswith("layout")]
    for a, b in pairs:
        if a not in per_image or b not in per_image:
            continue
        (ia, va), (ib, vb) = per_image[a], per_image[b]
        common = sorted(set(ia) & set(ib))
        xa = np.array([va[ia[k]].mean() for k in common])
        xb = np.array([vb[ib[k]].mean() for k in common])
        lo, hi = _bootstrap_diff(xa, xb)
        lines.append(f"- {a} minus {b}: {np.mean(xa - xb):+.3f} [{lo:+.3f}, {hi:+.3f}] (n={len(common)})")
    lines += ["", f"Images with their target boxes (first subject black, second magenta; seed 0): `grid.png`.", ""]
    old = out / "summary.md"
    notes = old.read_text().partition("\n## Notes\n") if old.exists() else ("", "", "")
    text = "\n".join(lines) + ("\n## Notes\n" + notes[2] if notes[1] else "")
    old.write_text(text if text.endswith("\n") else text + "\n")
    write_grid(out, rows, present)
    print(f"wrote {out / 'summary.md'} and grid.png", flush=True)


def write_grid(out: pathlib.Path, rows: list[dict], methods: list[str], seed: int = 0) -> None:
    """One row per prompt, one column per method, seed `seed`, target boxes drawn."""
    from PIL import Image, ImageDraw

    prompts = sorted({r["prompt_index"] for r in rows})
    by = {(r["prompt_index"], r["method"]): r for r in rows if r["seed"] == seed}
    cell = CANVAS

    def tile(i, j):
        p, r = prompts[i], by.get((prompts[i], methods[j]))
        if r is None or not (out / r["image"]).exists():
            return None
        im = Image.open(out / r["image"]).convert("RGB").resize((cell, cell))
        d = ImageDraw.Draw(im)
        for box, colour in zip(target_boxes(p), ("black", "magenta")):
            d.rectangle([v * cell for v in box], outline=colour)
        return im

    image_grid([EVAL_PROMPTS[p].text for p in prompts], methods, tile, cell=cell, label_w=200).save(out / "grid.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "results" / "shapesbench_layout"))
    ap.add_argument("--prompts", default="0-5,15-20", help="indices of EVAL_PROMPTS, e.g. 0-5,15-20")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--strengths", default="1,20", help="AI-T2I strengths, comma separated")
    ap.add_argument("--weight", type=float, default=1.0, help="the layout node's weight")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--scheduler", default="normal")
    ap.add_argument("--end-percent", type=float, default=0.5)
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    args.model = pathlib.Path(args.model)
    args.strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    if args.summary_only:
        write_summary(pathlib.Path(args.out))
        return
    run(args)


if __name__ == "__main__":
    main()
