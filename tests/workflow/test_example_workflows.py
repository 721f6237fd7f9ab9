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
    node["widgets_values"] = node["widgets_values"][:-1]
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


@pytest.mark.skipif(not TINY.exists(), reason="the embedded model file is not in models/")
def test_tiny_model_example_runs(host):
    from tools.ui_workflow import ui_to_api
    wf = json.loads((ROOT / "example_workflows" / "ai_t2i_tiny_model_comparison.json").read_text())
    graph = ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    for node in graph.values():  # a short run: the graph, not the quality, is under test
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 6
    outputs = host.run(graph)
    saved = [o for o in outputs.values() if "images" in o]
    assert sum(len(o["images"]) for o in saved) == 2 + 2 * 2  # vanilla + AI-T2I, 2 subjects x 2 steps of maps
