"""API-format graphs executed by ComfyUI's own executor, with the pack loaded as a custom node."""
import pytest


@pytest.fixture(scope="module")
def host(tmp_path_factory, model_files):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


def _images(outputs, node):
    return outputs[node]["images"]


def test_custom_sampling_graph_runs(host, model_files):
    from tools.graphs import custom_sampling_graph
    g = custom_sampling_graph({"checkpoint": model_files["checkpoint"]}, "a cat and a dog", "cat, dog",
                              steps=2, size=128, seed=3)
    out = host.run(g)
    assert len(_images(out, "13")) == 1
    assert len(_images(out, "15")) == 2  # 2 subjects x the one guided step (first = last)
    log = out["14"]["text"][0]
    assert "step   0" in log and "isolation=" in log


def test_comparison_graph_runs_on_embedded_model(host):
    from tools.graphs import comparison_graph
    out = host.run(comparison_graph({"tiny": "ai_t2i_tiny_shapes.safetensors"}, "a red circle and a blue square",
                                    "circle, square", "red:circle", steps=6, size=128, cfg=5.0))
    assert len(_images(out, "10")) == 2 and len(_images(out, "11")) == 4
    assert "attribute=" in out["6"]["text"][0]


def test_bad_subject_is_a_clear_error_and_host_keeps_working(host, model_files):
    from tools.comfy_runner import GraphError
    from tools.graphs import custom_sampling_graph
    bad = custom_sampling_graph({"checkpoint": model_files["checkpoint"]}, "a cat and a dog", "cat, horse",
                                steps=2, size=128)
    with pytest.raises(GraphError, match="'horse' is not in the prompt. Words in the prompt: a, cat, and, a, dog"):
        host.run(bad)
    good = custom_sampling_graph({"checkpoint": model_files["checkpoint"]}, "a cat and a dog", "cat, dog",
                                 steps=2, size=128)
    assert len(_images(host.run(good), "13")) == 1
