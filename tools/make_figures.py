"""Figures for the README, made through ComfyUI's executor on the embedded tiny model.

--heatmaps: docs/heatmaps.png. One row per run (vanilla, AI-T2I), from the same seed: the
decoded image, then each subject's attention heatmap over it at the first and the last
guided step, before and after that step's update. The graph is the custom-sampling one
with 'AI-T2I Record Maps After Guidance' between the Guided Sampler and the sampler, so the
tiles are exactly what 'AI-T2I Attention Maps' outputs. The vanilla row runs the same graph
at a strength so small that the latent does not move (1e-9): its maps are those of plain
sampling, and its before and after maps coincide.

    .venv/bin/python tools/make_figures.py --heatmaps [--strength 1] [--seed 0]
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

TINY = "ai_t2i_tiny_shapes.safetensors"
VANILLA_STRENGTH = 1e-9  # guidance runs and records, the update is below float resolution


def heatmap_graph(prompt: str, subjects: str, seed: int, steps: int, strength: float, prefix: str,
                  attributes: str = "") -> dict:
    from tools.graphs import custom_sampling_graph
    g = custom_sampling_graph({"tiny": TINY}, prompt, subjects, attributes, seed=seed, steps=steps, cfg=5.0,
                              size=128, strength=strength, prefix=prefix)
    g["16"] = {"class_type": "AIT2IRecordMapsAfter", "inputs": {"sampler": ["6", 0]}}
    g["11"]["inputs"]["sampler"] = ["16", 0]
    g["14"]["inputs"]["sampler"] = ["16", 0]
    return g


def _saved(out: dict, node: str, folder: pathlib.Path):
    from PIL import Image
    return [Image.open(folder / i.get("subfolder", "") / i["filename"]).convert("RGB") for i in out[node]["images"]]


def make_heatmaps(args) -> pathlib.Path:
    from PIL import Image, ImageDraw

    from tools.comfy_runner import Host
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="figures_"))
    try:
        host = Host(output_dir=str(tmp))
        subjects = [s.strip() for s in args.subjects.split(",")]
        rows = []
        for label, strength in (("vanilla", VANILLA_STRENGTH), (f"AI-T2I (strength {args.strength:g})", args.strength)):
            out = host.run(heatmap_graph(args.prompt, args.subjects, args.seed, args.steps, strength,
                                         prefix="fig_" + label.split()[0], attributes=args.attributes))
            text = out["14"]["text"][0].splitlines()
            rows.append((label, _saved(out, "13", tmp)[0], _saved(out, "15", tmp), text))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # Tiles: per step (first, last), before then after, subjects in order.
    order = [line.split(":")[0] for line in rows[0][3] if " update: " in line]
    cell, gap, head, left = args.cell, 4, 30, 128
    n_tiles = len(order) * len(subjects)
    width = left + (cell + gap) * (1 + n_tiles)
    fig = Image.new("RGB", (width, head + (cell + gap) * len(rows)), "white")
    draw = ImageDraw.Draw(fig)
    x = left + cell + gap
    draw.text((left, 4), "image", fill="black")
    for when in order:  # e.g. "step 0 before update"
        for s in subjects:
            draw.text((x, 4), when.replace(" update", ""), fill="black")
            draw.text((x, 16), s, fill="black")
            x += cell + gap
    for r, (label, image, tiles, _) in enumerate(rows):
        y = head + r * (cell + gap)
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        fig.paste(image.resize((cell, cell)), (left, y))
        for t, tile in enumerate(tiles):
            fig.paste(tile.resize((cell, cell)), (left + (cell + gap) * (1 + t), y))
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.quantize(colors=192).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB): prompt {args.prompt!r}, seed {args.seed}, "
          f"{args.steps} steps")
    for label, _, _, text in rows:
        print(label, "|", " / ".join(line for line in text if "alpha=" in line))
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heatmaps", action="store_true", help="write docs/heatmaps.png")
    # the demo's prompt and first seed (tools/demo.py), at the node's default strength
    from tools.demo import demo_prompt
    demo = demo_prompt()
    ap.add_argument("--prompt", default=demo["prompt"])
    ap.add_argument("--subjects", default=demo["subjects"])
    ap.add_argument("--attributes", default=demo["attributes"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--cell", type=int, default=96, help="tile size in pixels")
    ap.add_argument("--out", default=str(ROOT / "docs" / "heatmaps.png"))
    args = ap.parse_args(argv)
    if not args.heatmaps:
        ap.error("choose a figure: --heatmaps")
    make_heatmaps(args)


if __name__ == "__main__":
    main()
