"""Every example workflow matches the installed node definitions, and the embedded-model
one runs through the executor."""
import copy
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))
TINY = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_matches_node_definitions(host, path):
    from tools.ui_workflow import api_to_ui, ui_to_api
    wf = json.loads(path.read_text())
    graph = ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)
    assert any(n["class_type"].startswith("AIT2I") for n in graph.values())
    again = api_to_ui(graph, host.nodes.NODE_CLASS_MAPPINGS)
    assert [n["widgets_values"] for n in again["nodes"]] == [n["widgets_values"] for n in wf["nodes"]]


def test_renamed_input_is_caught(host):
    from tools.ui_workflow import ui_to_api
    wf = json.loads(EXAMPLES[0].read_text())
    broken = copy.deepcopy(wf)
    node = next(n for n in broken["nodes"] if n["type"] == "AIT2IKSampler")
    node["widgets_values"] = node["widgets_values"][:-1]
    with pytest.raises(ValueError, match="widget values"):
        ui_to_api(broken, host.nodes.NODE_CLASS_MAPPINGS)
    sock = next(n for n in wf["nodes"] if n["type"] == "VAEDecode")["inputs"][0]
    sock["name"] = "latent"
    with pytest.raises(ValueError, match="no input named 'latent'"):
        ui_to_api(wf, host.nodes.NODE_CLASS_MAPPINGS)


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
