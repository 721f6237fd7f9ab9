"""The layout example workflow runs through the executor, and the layout node's bad input
surfaces as a graph error that names the fix."""
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"
EXAMPLE = ROOT / "example_workflows" / "ai_t2i_tiny_model_layout.json"

pytestmark = pytest.mark.skipif(not TINY.exists(), reason="the embedded model file is not in models/")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


def short_graph(host):
    from tools.ui_workflow import ui_to_api
    graph = ui_to_api(json.loads(EXAMPLE.read_text()), host.nodes.NODE_CLASS_MAPPINGS)
    for node in graph.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 6
    return graph


def test_layout_example_runs(host):
    graph = short_graph(host)
    layout = [k for k, n in graph.items() if n["class_type"] == "AIT2ISubjectLayout"]
    assert len(layout) == 1
    guided = next(n for n in graph.values() if n["class_type"] == "AIT2IKSampler")
    assert guided["inputs"]["positive"] == [layout[0], 0]
    outputs = host.run(graph)
    assert sum(len(o["images"]) for o in outputs.values() if "images" in o) == 2 + 2 * 2


def test_bad_box_is_a_graph_error(host):
    from tools.comfy_runner import GraphError
    graph = short_graph(host)
    node = next(n for n in graph.values() if n["class_type"] == "AIT2ISubjectLayout")
    node["inputs"]["boxes"] = "circle: 0.6 0.3 0.4 0.65"
    with pytest.raises(GraphError, match="x0 >= x1"):
        host.run(graph)
