"""Every example workflow matches the installed node definitions (checked by our converter
and by the host's own prompt validation), is what its graph builder makes today, and the
embedded-model one runs through the executor."""
import asyncio
import copy
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))
TINY = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"
# where the examples' model files would live (SD3.5 and Flux: the diffusion model, text encoders, VAE)
MODEL_KINDS = ("checkpoints", "loras", "controlnet", "diffusion_models", "text_encoders", "vae")
FILE_WIDGET = re.compile(r".*_name\d*")  # ckpt_name, unet_name, vae_name, clip_name1 ...


def _model_file_names():
    """The model file names the examples reference (any *_name or *_nameN widget value that is a file name)."""
    from tools.make_example_workflows import EXAMPLES as BUILDERS
    return {v for make in BUILDERS.values() for node in make().values() for k, v in node["inputs"].items()
            if FILE_WIDGET.fullmatch(k) and isinstance(v, str) and "." in v}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    models = tmp_path_factory.mktemp("models")  # empty stand-ins: validation looks at names, never contents
    for name in _model_file_names():
        (models / name).write_bytes(b"")
    return Host(output_dir=str(tmp_path_factory.mktemp("out")), extra_model_dirs={k: models for k in MODEL_KINDS})


def test_every_example_is_what_its_builder_makes(host):
    """The checked-in files are up to date (tools/make_example_workflows.py), and the builders
    only use inputs the nodes have: a renamed widget fails here."""
    from tools.make_example_workflows import EXAMPLES as BUILDERS
    from tools.ui_workflow import api_to_ui
    assert sorted(BUILDERS) == [p.stem for p in EXAMPLES]
    for path in EXAMPLES:
        made = json.loads(json.dumps(api_to_ui(BUILDERS[path.stem](), host.nodes.NODE_CLASS_MAPPINGS)))
        assert made == json.loads(path.read_text()), f"{path.name} is stale: run tools/make_example_workflows.py"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_matches_node_definitions(host, path):
    from tools.ui_workflow import api_to_ui, ui_to_api
    wf = json.loads(path.read_text())
    graph = ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    assert any(n["class_type"].startswith("AIT2I") for n in graph.values())
    again = api_to_ui(graph, host.nodes.NODE_CLASS_MAPPINGS)
    assert [n["widgets_values"] for n in again["nodes"]] == [n["widgets_values"] for n in wf["nodes"]]
    # The host's own validation (types, required inputs, ranges, combo values): with the model
    # files present by name, the only thing it may refuse is a control image that is not uploaded.
    valid, error, _, node_errors = asyncio.run(host.execution.validate_prompt("check", graph, None))
    problems = [(graph[k]["class_type"], e["type"], e.get("extra_info", {}).get("input_name"))
                for k, errs in node_errors.items() for e in errs["errors"]]
    assert [p for p in problems if p != ("LoadImage", "custom_validation_failed", "image")] == []
    assert valid or problems, error


def test_renamed_input_is_caught(host):
    from tools.ui_workflow import ui_to_api
    wf = json.loads((ROOT / "example_workflows" / "ai_t2i_sd15_comparison.json").read_text())
    broken = copy.deepcopy(wf)
    node = next(n for n in broken["nodes"] if n["type"] == "AIT2IKSampler")
    node["widgets_values"] = node["widgets_values"][:5]  # scheduler on: scheduler has no default to fall back to
    with pytest.raises(ValueError, match="widget values"):
        ui_to_api(broken, host.nodes.NODE_CLASS_MAPPINGS)
    sock = next(n for n in wf["nodes"] if n["type"] == "VAEDecode")["inputs"][0]
    sock["name"] = "latent"
    with pytest.raises(ValueError, match="no input named 'latent'"):
        ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)


def _renamed(cls, old, new):
    """The node class as it would be after renaming one of its inputs."""
    class Renamed(cls):
        @classmethod
        def INPUT_TYPES(c):
            spec = cls.INPUT_TYPES()
            return {group: {(new if k == old else k): v for k, v in inputs.items()} for group, inputs in spec.items()}
    return Renamed


@pytest.mark.parametrize("node_type, old, new", [("AIT2IKSampler", "strength", "guidance_strength"),
                                                 ("AIT2ISubjectPrompt", "clip", "text_encoder"),
                                                 ("AIT2IGuidedSampler", "end_percent", "stop_percent")])
def test_node_definition_change_breaks_the_examples_check(host, node_type, old, new):
    from tools.make_example_workflows import EXAMPLES as BUILDERS
    from tools.ui_workflow import api_to_ui, ui_to_api
    classes = {**host.nodes.NODE_CLASS_MAPPINGS, node_type: _renamed(host.nodes.NODE_CLASS_MAPPINGS[node_type], old, new)}
    users = [name for name, make in BUILDERS.items() if any(n["class_type"] == node_type for n in make().values())]
    assert users
    for name in users:
        with pytest.raises(ValueError, match="no input named"):
            api_to_ui(BUILDERS[name](), classes)
        stored = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
        if old == "clip":  # a socket: the stored workflow names it
            with pytest.raises(ValueError, match=f"no input named '{old}'"):
                ui_to_api(stored, classes)


def test_bad_values_and_missing_links_are_caught(host):
    from tools.ui_workflow import ui_to_api
    wf = json.loads((ROOT / "example_workflows" / "ai_t2i_sd15_ksampler.json").read_text())
    sampler = next(n for n in wf["nodes"] if n["type"] == "AIT2IKSampler")
    broken = copy.deepcopy(wf)
    next(n for n in broken["nodes"] if n["id"] == sampler["id"])["widgets_values"][2] = 0  # steps
    with pytest.raises(ValueError, match="steps=0 is outside"):
        ui_to_api(broken, host.nodes.NODE_CLASS_MAPPINGS)
    broken = copy.deepcopy(wf)
    next(n for n in broken["nodes"] if n["id"] == sampler["id"])["widgets_values"][3] = "7.5"  # cfg
    with pytest.raises(ValueError, match="is not a FLOAT"):
        ui_to_api(broken, host.nodes.NODE_CLASS_MAPPINGS)
    broken = copy.deepcopy(wf)
    node = next(n for n in broken["nodes"] if n["id"] == sampler["id"])
    next(s for s in node["inputs"] if s["name"] == "positive")["link"] = None
    with pytest.raises(ValueError, match="required input positive is not connected"):
        ui_to_api(broken, host.nodes.NODE_CLASS_MAPPINGS)


def _saved_images(host, outputs, node):
    """The images a SaveImage node wrote: (N, H, W, 3) float in 0..255."""
    import numpy as np
    from PIL import Image
    return np.stack([np.asarray(Image.open(pathlib.Path(host.output_dir) / im["subfolder"] / im["filename"])
                                .convert("RGB"), dtype=np.float64) for im in outputs[node]["images"]])


def _hot(tile):
    """(H, W) bool: where a heatmap tile is in the top third of its ramp (yellow to red)."""
    return (tile[..., 0] > 200) & (tile[..., 2] < 60)


def _run_short(host, example: str):
    """Run an example workflow through the executor with 6 steps (end_percent 0.5 guides steps 0,
    1, 2): its outputs, the vanilla and guided images (from ImageBatch "10") and the loss log's
    step lines parsed into {term: value} (from the guided KSampler "6")."""
    from tools.ui_workflow import ui_to_api
    wf = json.loads((ROOT / "example_workflows" / f"{example}.json").read_text())
    graph = ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    for node in graph.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 6
    outputs = host.run(graph)
    vanilla, guided = _saved_images(host, outputs, "10")
    lines = [line for line in outputs["6"]["text"][0].splitlines() if line.startswith("step ")]
    assert [int(line.split()[1]) for line in lines] == [0, 1, 2]
    losses = [{k: float(v) for k, v in re.findall(r"(\w+)=([-\w.+]+)", line) if k != "alpha"} for line in lines]
    return graph, outputs, vanilla, guided, losses


@pytest.mark.skipif(not TINY.exists(), reason="the embedded model file is not in models/")
def test_tiny_model_example_runs(host):
    """The comparison example does what it is for: from the same seed, KSampler (AI-T2I)
    gives another image than the vanilla KSampler; its loss log has finite losses at each
    guided step, the isolation term lower at the last guided step than at the first; and its
    maps at the last guided step show the two subjects in separate places."""
    import math

    import numpy as np

    _, outputs, vanilla, guided, losses = _run_short(host, "ai_t2i_tiny_model_comparison")
    assert np.abs(vanilla - guided).mean() > 5.0  # of 255: the guidance changed the image
    assert all(math.isfinite(v) for step in losses for v in step.values())
    assert {"isolation", "aggregation", "presence", "attribute", "total"} <= losses[0].keys()
    assert losses[-1]["isolation"] < losses[0]["isolation"]
    # Tiles: step 0 (circle, square), then step 2 (circle, square), over no image.
    tiles = _saved_images(host, outputs, "11")
    assert tiles.shape[0] == 2 * 2
    circle, square = _hot(tiles[2]), _hot(tiles[3])
    assert circle.any() and square.any()
    assert (circle & square).sum() <= 0.05 * (circle | square).sum()  # where one subject is, the other is not
    centroids = [np.argwhere(m).mean(axis=0) / m.shape[0] for m in (circle, square)]
    assert np.linalg.norm(centroids[0] - centroids[1]) > 0.25  # of the tile's side


TINY_FLUX = ROOT / "models" / "ai_t2i_tiny_flux.safetensors"


@pytest.mark.skipif(not TINY_FLUX.exists(), reason="the Flux-shaped embedded model file is not in models/")
def test_tiny_flux_example_runs(host):
    """The Flux-shaped tiny model's comparison example runs through the executor with the
    joint-attention guidance: from the same seed the guided image differs from vanilla's, the
    loss log has finite loss terms at each guided step, and the maps of both subjects are
    drawn (each word's map has a hot region)."""
    import math

    import numpy as np

    graph, outputs, vanilla, guided, losses = _run_short(host, "ai_t2i_tiny_flux_comparison")
    assert graph["1"]["inputs"]["model_name"] == TINY_FLUX.name
    assert np.abs(vanilla - guided).mean() > 2.0  # of 255: the guidance changed the image
    assert all(math.isfinite(v) for step in losses for v in step.values())
    assert {"isolation", "aggregation", "total"} <= losses[0].keys()
    tiles = _saved_images(host, outputs, "11")  # step 0 (circle, square), step 2 (circle, square)
    assert tiles.shape[0] == 2 * 2
    assert all(_hot(tile).any() for tile in tiles)
