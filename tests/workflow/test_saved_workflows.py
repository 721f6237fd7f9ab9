"""Workflows saved before the nodes moved to ComfyUI's V3 schema load and run unchanged.

``data/v1_all_nodes.json`` is a UI-format workflow (what the page saves) made with the pack's
V1 node classes (commit 23bb8da), using all eight nodes with non-default widget values;
``data/v1_all_nodes_outputs.npz`` holds the images that run gave. Today's nodes must read
every widget value under the same name and give the same images."""
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).parent / "data"
SAVED = DATA / "v1_all_nodes.json"
PACK_NODES = {"AIT2ISubjectPrompt", "AIT2ISubjectLayout", "AIT2IAttentionPatch", "AIT2IGuidedSampler",
              "AIT2IKSampler", "AIT2IAttentionMaps", "AIT2IRecordMapsAfter", "AIT2ITinyModelLoader"}
# Saved with the V1 classes: the widget values each node holds, by input name.
SAVED_WIDGETS = {
    "AIT2IGuidedSampler": {"method": "AI-T2I", "strength": 2.0, "start_percent": 0.0, "end_percent": 0.4,
                           "scale_factor": 18.0, "isolation_metric": "cosine", "refinement": "off", "level": "1/1",
                           "layers": "down+up"},
    "AIT2IKSampler": {"seed": 4, "steps": 6, "cfg": 5.0, "sampler_name": "euler_ancestral", "scheduler": "karras",
                      "denoise": 1.0, "method": "Attend-and-Excite", "strength": 1.5, "start_percent": 0.0,
                      "end_percent": 0.5, "layers": "down"},
    "AIT2ISubjectLayout": {"boxes": "circle: 0.05 0.3 0.4 0.65; square: 0.6 0.3 0.95 0.65", "weight": 2.0,
                           "mask_subjects": "", "width": 0, "height": 0},
    "AIT2ISubjectPrompt": {"text": "a red circle and a blue square", "subjects": "circle, square",
                           "attributes": "red:circle, blue:square"},
}

# Widget values of inputs added at a node's end after the file was saved: their defaults.
ADDED_WIDGETS = {"AIT2IGuidedSampler": ["sharpened joint softmax"], "AIT2IKSampler": ["sharpened joint softmax"]}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


def test_saved_workflow_uses_every_node():
    wf = json.loads(SAVED.read_text())
    assert {n["type"] for n in wf["nodes"]} >= PACK_NODES


def test_saved_widget_values_keep_their_names(host):
    """Today's nodes read the saved widget values in the V1 order: each lands on the input it was
    saved for (a reordered or renamed input moves a value to the wrong name or fails here)."""
    from tools.ui_workflow import api_to_ui, ui_to_api
    wf = json.loads(SAVED.read_text())
    graph = ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    for node in graph.values():
        expected = SAVED_WIDGETS.get(node["class_type"])
        if expected:
            got = {k: v for k, v in node["inputs"].items() if k in expected}
            assert got == expected, f"{node['class_type']}: saved widget values read as {got}"
    # Widgets added at a node's end since (the samplers' joint_map) read as their defaults, as on the page.
    for node in graph.values():
        if node["class_type"] in ("AIT2IGuidedSampler", "AIT2IKSampler"):
            assert node["inputs"]["joint_map"] == "sharpened joint softmax"
    again = api_to_ui(graph, host.nodes.NODE_CLASS_MAPPINGS)
    for saved, today in zip(wf["nodes"], again["nodes"]):
        added = ADDED_WIDGETS.get(saved["type"], [])
        assert today["widgets_values"] == saved["widgets_values"] + added


@pytest.mark.skipif(not (ROOT / "models" / "ai_t2i_tiny_shapes.safetensors").exists(),
                    reason="the embedded model file is not in models/")
def test_saved_workflow_runs_and_gives_the_saved_images(host):
    from PIL import Image

    from tools.ui_workflow import ui_to_api
    graph = ui_to_api(json.loads(SAVED.read_text()), host.nodes.NODE_CLASS_MAPPINGS)
    outputs = host.run(graph)
    out_dir = pathlib.Path(host.output_dir)
    images = {}
    for node_id, out in outputs.items():
        prefix = graph[node_id]["inputs"].get("filename_prefix")
        for i, im in enumerate(out.get("images", [])):
            images[f"{prefix}_{i}"] = np.asarray(Image.open(out_dir / im["subfolder"] / im["filename"]).convert("RGB"))
    saved = np.load(DATA / "v1_all_nodes_outputs.npz")
    counts = [sum(k.rsplit("_", 1)[0] == p for k in images) for p in
              ("v1_custom", "v1_maps", "v1_ksampler", "v1_ksampler_maps")]
    assert counts == saved["counts"].tolist(), f"image counts per SaveImage {counts}, saved {saved['counts']}"
    for name in ("v1_custom_0", "v1_ksampler_0", "v1_maps_0", "v1_ksampler_maps_0"):
        diff = np.abs(images[name].astype(np.int16) - saved[name].astype(np.int16))
        # Same graph, same model, same noise: equal up to float rounding of other CPUs' kernels.
        assert diff.mean() < 0.5 and diff.max() <= 16, f"{name}: mean |diff| {diff.mean():.2f}, max {diff.max()}"


def test_widget_values_that_do_not_fit_are_refused(host):
    """Too few values read the missing ones at their defaults, as the page does; more values
    than widgets, or a missing one with no default, are refused naming the node."""
    from tools.ui_workflow import ui_to_api
    wf = json.loads(SAVED.read_text())
    prompt = next(n for n in wf["nodes"] if n["type"] == "AIT2ISubjectPrompt")
    prompt["widgets_values"] = prompt["widgets_values"][:1]
    assert ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)[str(prompt["id"])]["inputs"]["subjects"] == "cat, dog"
    sampler = next(n for n in wf["nodes"] if n["type"] == "AIT2IGuidedSampler")
    sampler["widgets_values"] = sampler["widgets_values"] + ["joint softmax", "extra"]
    with pytest.raises(ValueError, match=rf"node #{sampler['id']} AIT2IGuidedSampler: 11 widget values, the node has 10"):
        ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    sampler["widgets_values"] = sampler["widgets_values"][:9]
    ksampler = next(n for n in wf["nodes"] if n["type"] == "AIT2IKSampler")
    ksampler["widgets_values"] = ksampler["widgets_values"][:5]  # up to sampler_name: scheduler has no default
    with pytest.raises(ValueError, match=rf"node #{ksampler['id']} AIT2IKSampler: 5 widget values, the node has 13"):
        ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
