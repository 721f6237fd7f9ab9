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


@pytest.fixture
def control_image(tmp_path):
    """A 128 px edge-like image in a temporary input folder (LoadImage reads the input folder)."""
    import folder_paths
    import numpy as np
    from PIL import Image
    edges = np.zeros((128, 128, 3), np.uint8)
    edges[32:96, 30:34] = edges[32:96, 94:98] = 255
    Image.fromarray(edges).save(tmp_path / "edges.png")
    old = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    yield "edges.png"
    folder_paths.set_input_directory(old)


def test_lora_and_controlnet_graph_runs(host, model_files, control_image):
    from tools.graphs import custom_sampling_graph, with_controlnet, with_lora
    g = with_controlnet(with_lora(custom_sampling_graph(
        {"checkpoint": model_files["checkpoint"]}, "a photo of sks dog and a cat", "sks dog, cat", steps=2, size=128,
        seed=5), model_files["lora"]), model_files["controlnet"], control_image)
    kinds = {n["class_type"]: k for k, n in g.items()}
    lora, apply = kinds["LoraLoader"], kinds["ControlNetApplyAdvanced"]
    assert g["4"]["inputs"]["model"] == [lora, 0] and g["2"]["inputs"]["clip"] == [lora, 1]  # patch and prompt
    assert g["9"]["inputs"]["positive"] == [apply, 0] and g[apply]["inputs"]["positive"] == ["2", 0]
    out = host.run(g)
    assert len(out["13"]["images"]) == 1
    assert len(out["15"]["images"]) == 2  # both subjects' maps: the trigger-word subject resolved through the LoRA CLIP
    assert "isolation=" in out["14"]["text"][0]
