"""Write example_workflows/*.json (UI format) from the graphs in tools/graphs.py.

    .venv/bin/python tools/make_example_workflows.py
"""
from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from tools import graphs  # noqa: E402

SD15 = "v1-5-pruned-emaonly.safetensors"
# The file names of the Comfy-Org / Stability AI / Black Forest Labs releases, as ComfyUI's own
# SD3.5 and Flux examples name them (docs/workflows.md: where each file goes).
SD35_LARGE = "sd3.5_large.safetensors"
CLIP_L, CLIP_G, T5XXL = "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"
FLUX_DEV, FLUX_AE = "flux1-dev.safetensors", "ae.safetensors"
EXAMPLES = {
    "ai_t2i_tiny_model_comparison": lambda: graphs.comparison_graph(
        {"tiny": "ai_t2i_tiny_shapes.safetensors"}, "a red circle and a blue square", "circle, square",
        "red:circle, blue:square", seed=1, steps=30, cfg=5.0, size=128),
    "ai_t2i_tiny_model_layout": lambda: graphs.with_layout(graphs.comparison_graph(
        {"tiny": "ai_t2i_tiny_shapes.safetensors"}, "a red circle and a blue square", "circle, square",
        "red:circle, blue:square", seed=1, steps=30, cfg=5.0, size=128, strength=15.0, prefix="layout"),
        "circle: 0.05 0.3 0.4 0.65; square: 0.6 0.3 0.95 0.65", weight=3.0),
    # The Flux-shaped tiny model: the same nodes and the same joint-attention guidance as Flux.1
    # (flow matching: the host's "simple" schedule, as for Flux); trained with captions dropped
    # 10 % of the time, so it takes CFG like the UNet-shaped one.
    "ai_t2i_tiny_flux_comparison": lambda: graphs.comparison_graph(
        {"tiny": "ai_t2i_tiny_flux.safetensors"}, "a red circle and a blue square", "circle, square",
        "red:circle, blue:square", seed=1, steps=20, cfg=5.0, size=128, scheduler="simple", prefix="tiny_flux"),
    "ai_t2i_sd15_custom_sampler": lambda: graphs.custom_sampling_graph(
        {"checkpoint": SD15}, "a photo of a cat and a dog on the grass", "cat, dog",
        seed=1, steps=50, cfg=7.5, size=512),
    "ai_t2i_sd15_comparison": lambda: graphs.comparison_graph(
        {"checkpoint": SD15}, "a red bench and a yellow clock", "bench, clock",
        "red:bench, yellow:clock", seed=1, steps=50, cfg=7.5, size=512),
    "ai_t2i_sd15_ksampler": lambda: graphs.ksampler_graph(
        {"checkpoint": SD15}, "a photo of a cat and a dog on the grass", "cat, dog", seed=1, steps=50, cfg=7.5,
        size=512),
    "ai_t2i_sdxl_custom_sampler": lambda: graphs.custom_sampling_graph(
        {"checkpoint": "sd_xl_base_1.0.safetensors"}, "a photo of a cat and a dog on a sofa", "cat, dog", seed=1,
        steps=40, cfg=7.0, size=1024),
    "ai_t2i_sd15_lora": lambda: graphs.with_lora(graphs.custom_sampling_graph(
        {"checkpoint": SD15}, "a photo of sks dog and a cat on the grass", "sks dog, cat", seed=1, steps=50,
        cfg=7.5, size=512), "sks_dog_lora.safetensors", strength=1.0),
    "ai_t2i_sd15_controlnet": lambda: graphs.with_controlnet(graphs.ksampler_graph(
        {"checkpoint": SD15}, "a red car and a white horse on a country road", "car, horse",
        "red:car, white:horse", seed=1, steps=50, cfg=7.5, size=512), "control_v11p_sd15_canny.pth",
        "canny_edges.png", strength=0.8),
    "ai_t2i_sd35_custom_sampler": lambda: graphs.sd35_custom_sampling_graph(
        SD35_LARGE, [CLIP_L, CLIP_G, T5XXL], "a photo of a ginger cat and a black dog sitting on a sofa", "cat, dog",
        "ginger:cat, black:dog", negative="blurry, low quality, deformed", seed=1, steps=28, cfg=4.5, size=1024),
    "ai_t2i_flux_dev_custom_sampler": lambda: graphs.flux_custom_sampling_graph(
        FLUX_DEV, [CLIP_L, T5XXL], FLUX_AE, "a photo of a brown bear and a white rabbit in a forest clearing",
        "bear, rabbit", "brown:bear, white:rabbit", seed=1, steps=20, guidance=3.5, size=1024),
}


def main():
    from tools.comfy_runner import Host
    from tools.ui_workflow import api_to_ui
    host = Host()
    out = ROOT / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, make in EXAMPLES.items():
        wf = api_to_ui(make(), host.nodes.NODE_CLASS_MAPPINGS)
        (out / f"{name}.json").write_text(json.dumps(wf, indent=2) + "\n")
        print("wrote", f"example_workflows/{name}.json")


if __name__ == "__main__":
    main()
