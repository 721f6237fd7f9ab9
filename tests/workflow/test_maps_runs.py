"""Which run AI-T2I Attention Maps shows, through the host's executor: the run that made the
latent wired to it (one Guided Sampler may feed two SamplerCustom nodes), and, for a run that
guided no step (strength 0, a range without steps), a tile and a log line saying so while the
prompt succeeds and the image is the plain sampler's."""
import copy
import pathlib

import numpy as np
import pytest

from ai_t2i_pack.nodes import preview_notice as notice

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = "ai_t2i_tiny_shapes.safetensors"
PROMPT = ("a red circle and a blue square", "circle, square")

pytestmark = pytest.mark.skipif(not (ROOT / "models" / TINY).exists(), reason="the embedded model file is not in models/")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


def _saved(host, outputs, node) -> list:
    """The images a SaveImage node wrote, as (H, W, 3) uint8 arrays."""
    from PIL import Image
    return [np.asarray(Image.open(pathlib.Path(host.output_dir) / im["subfolder"] / im["filename"]).convert("RGB"))
            for im in outputs[node]["images"]]


def _as_saved(tile) -> np.ndarray:
    """(1, H, W, 3) float tile -> what SaveImage writes for it."""
    return np.clip(255.0 * tile[0].numpy(), 0, 255).astype(np.uint8)


def _custom(**kw):
    from tools.graphs import custom_sampling_graph
    return custom_sampling_graph({"tiny": TINY}, *PROMPT, seed=1, steps=4, cfg=5.0, size=128, **kw)


@pytest.mark.parametrize("guided_widgets, reason", [
    ({"strength": 0.0}, "no step was guided (strength 0)"),
    ({"start_percent": 0.3, "end_percent": 0.3}, "no step was guided (the range 0.30..0.30 holds none of the 4 steps)"),
], ids=["strength_0", "empty_range"])
def test_unguided_run_succeeds_with_a_notice_and_the_plain_image(host, pack, guided_widgets, reason):
    graph = _custom()
    graph["6"]["inputs"].update(guided_widgets)
    out = host.run(graph)  # raises GraphError if the prompt fails
    image, = _saved(host, out, "13")
    tile, = _saved(host, out, "15")
    np.testing.assert_array_equal(tile, _as_saved(notice.notice_tile("AI-T2I: " + reason, image.shape[:2])))
    assert out["14"]["text"] == ["AI-T2I: " + reason]
    plain = copy.deepcopy(graph)  # the base sampler straight into SamplerCustomAdvanced, no maps node
    plain["11"]["inputs"]["sampler"] = ["5", 0]
    del plain["14"], plain["15"]
    plain["13"]["inputs"]["filename_prefix"] = "plain"
    np.testing.assert_array_equal(image, _saved(host, host.run(plain), "13")[0])


def test_ksampler_at_strength_0_gives_the_notice_and_the_vanilla_image(host, pack):
    """KSampler (AI-T2I) beside the vanilla KSampler, same seed: at strength 0 both images are
    equal and its maps output is the same notice tile (256 x 256 without images), not a black tile."""
    from tools.graphs import comparison_graph
    out = host.run(comparison_graph({"tiny": TINY}, *PROMPT, seed=1, steps=4, cfg=5.0, size=128, strength=0.0,
                                    prefix="ks0"))
    vanilla, guided = _saved(host, out, "10")
    np.testing.assert_array_equal(vanilla, guided)
    tile, = _saved(host, out, "11")
    np.testing.assert_array_equal(tile, _as_saved(notice.notice_tile("AI-T2I: no step was guided (strength 0)")))
    assert out["6"]["text"] == ["AI-T2I: no step was guided (strength 0)"]


def _loss_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("step ") and "alpha=" in line]


def test_one_guided_sampler_in_two_sampler_nodes(host):
    """One Guided Sampler feeds two SamplerCustomAdvanced nodes (seeds 1 and 2), each with its
    maps node. Changing only the maps nodes' steps reruns them alone (the samplers' outputs
    come from the cache): each must still show its own run's losses, not the run that
    happened to execute last."""
    graph = _custom(prefix="shared")
    graph["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 2}}
    graph["21"] = {"class_type": "SamplerCustomAdvanced", "inputs": {**graph["11"]["inputs"], "noise": ["20", 0]}}
    graph["22"] = {"class_type": "VAEDecode", "inputs": {"samples": ["21", 0], "vae": ["1", 2]}}
    graph["23"] = {"class_type": "AIT2IAttentionMaps", "inputs": {**graph["14"]["inputs"], "samples": ["21", 0],
                                                                  "images": ["22", 0]}}
    graph["24"] = {"class_type": "SaveImage", "inputs": {"images": ["23", 0], "filename_prefix": "shared_maps_2"}}
    first = host.run(graph)
    losses = {node: _loss_lines(first[node]["text"][0]) for node in ("14", "23")}
    assert losses["14"] and losses["14"] != losses["23"]  # two seeds, two runs
    for node in ("14", "23"):
        graph[node]["inputs"]["steps"] = "all"
    again = host.run(graph)
    assert {node: _loss_lines(again[node]["text"][0]) for node in ("14", "23")} == losses
    assert len(again["15"]["images"]) == len(again["24"]["images"]) == 2 * 2  # both guided steps x 2 subjects
