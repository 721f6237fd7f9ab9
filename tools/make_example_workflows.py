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

EXAMPLES = {
    "ai_t2i_tiny_model_comparison": lambda: graphs.comparison_graph(
        {"tiny": "ai_t2i_tiny_shapes.safetensors"}, "a red circle and a blue square", "circle, square",
        "red:circle, blue:square", seed=1, steps=30, cfg=5.0, size=128),
    "ai_t2i_sd15_custom_sampler": lambda: graphs.custom_sampling_graph(
        {"checkpoint": "v1-5-pruned-emaonly.safetensors"}, "a photo of a cat and a dog on the grass", "cat, dog",
        seed=1, steps=50, cfg=7.5, size=512),
    "ai_t2i_sd15_comparison": lambda: graphs.comparison_graph(
        {"checkpoint": "v1-5-pruned-emaonly.safetensors"}, "a red bench and a yellow clock", "bench, clock",
        "red:bench, yellow:clock", seed=1, steps=50, cfg=7.5, size=512),
}


def main():
    from tools.comfy_runner import Host
    from tools.ui_workflow import api_to_ui
    host = Host()
    out = ROOT / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, make in EXAMPLES.items():
        wf = api_to_ui(make(), host.nodes.NODE_CLASS_MAPPINGS)
        (out / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
        print("wrote", f"example_workflows/{name}.json")


if __name__ == "__main__":
    main()
