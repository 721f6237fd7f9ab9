"""The SD3.5 and Flux.1 dev example workflows beyond node definitions: their subject words
are found in their prompts by the real SD3 and Flux tokenizers, FluxGuidance hands the
subjects on, and the Flux graph's AI-T2I part runs through the host's executor on a
random-weight Flux dev file that the host's own UNETLoader detects.

Plumbing only: no real SD3.5 or Flux weights are used, so nothing here says how the images
of these workflows look."""
import pytest
import torch

from ai_t2i_pack import ai_t2i_attention as engine
from ai_t2i_pack.nodes.host import conditioning, tokens
from host_fixtures import CACHE

FLUX_FILE = "random_flux_dev_v1.safetensors"
T = 12  # text tokens of the test conditioning
SUBJECT_COLUMNS = ((2,), (5, 6))


def _builders():
    from tools.make_example_workflows import EXAMPLES
    return EXAMPLES


def _only(graph, class_type):
    found = [k for k, n in graph.items() if n["class_type"] == class_type]
    assert len(found) == 1, f"{class_type}: {len(found)} nodes"
    return found[0]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("out")))


@pytest.mark.parametrize("name, streams", [("ai_t2i_sd35_custom_sampler", ("l", "t5xxl")),
                                           ("ai_t2i_flux_dev_custom_sampler", ("t5xxl",))])
def test_example_subjects_are_found_by_the_models_tokenizers(host, name, streams):
    """What the Subject Prompt resolves on the example's own text encoders (SD3: CLIP-L/G
    and T5 as TripleCLIPLoader loads them; Flux: T5): every subject and attribute word in
    every stream of the context. A subject missing from the prompt fails here."""
    from comfy.text_encoders.flux import FluxTokenizer
    from comfy.text_encoders.sd3_clip import SD3Tokenizer
    graph = _builders()[name]()
    prompt = graph[_only(graph, "AIT2ISubjectPrompt")]["inputs"]
    loader = graph[prompt["clip"][0]]
    tokenizer = {"TripleCLIPLoader": SD3Tokenizer, "DualCLIPLoader": FluxTokenizer}[loader["class_type"]]()
    if loader["class_type"] == "DualCLIPLoader":
        assert loader["inputs"]["type"] == "flux"
    found, raw = tokens.stream_tokenizations(tokenizer.tokenize_with_weights, prompt["text"], streams)
    words = engine.parse_list(prompt["subjects"])
    pairs = engine.parse_attributes(prompt["attributes"])
    groups = engine.resolve_streams(prompt["text"], found, words, pairs, tokens.presence_columns(raw))
    assert len(groups.subjects) == len(words) == 2 and len(groups.attributes) == len(pairs) == 2
    starts = [s.offset for s in found] + [10 ** 9]
    for columns in groups.subjects + tuple(cols for cols, _ in groups.attributes):
        # the word's columns lie in every stream of the context (SD3: CLIP's and T5's)
        assert all(any(lo <= c < hi for c in columns) for lo, hi in zip(starts, starts[1:]))


def test_flux_guidance_keeps_the_subjects_on_the_entry(host):
    """The host's FluxGuidance copies each entry and adds its guidance: the subjects (and the
    rest of the entry) must come through, the input conditioning unchanged."""
    key = conditioning.SUBJECTS_KEY
    spec = object()
    context = torch.zeros(1, T, 4096)
    given = [[context, {"pooled_output": torch.zeros(1, 768), key: spec}]]
    out = host.nodes.NODE_CLASS_MAPPINGS["FluxGuidance"]().execute(given, 2.5)[0]
    assert len(out) == 1 and out[0][0] is context
    assert out[0][1][key] is spec and out[0][1]["guidance"] == 2.5
    assert "guidance" not in given[0][1]


@pytest.fixture(scope="module")
def flux_file():
    """A random-weight Flux dev file (1 double-, 1 single-stream block at the real width),
    made once and cached beside the other random model files, in the host's diffusion
    model folder."""
    import folder_paths
    from tools import random_models
    folder = CACHE / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    if not (folder / FLUX_FILE).exists():
        random_models.write_random_flux_dev_file(folder / FLUX_FILE)
    return FLUX_FILE


class _TestConditioning:
    """Test-only node: the conditioning an 'AI-T2I Subject Prompt' on Flux's encoders gives
    (a T5-wide context, CLIP-L's pooled vector, the subjects' columns), made from random
    tensors, since no real T5 is at hand."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self):
        key = conditioning.SUBJECTS_KEY
        groups = engine.TokenGroups(SUBJECT_COLUMNS, (), tuple(range(T)))
        spec = engine.ResolvedSubjects("a bear and a white rabbit", ("bear", "white rabbit"), (), groups)
        g = torch.Generator().manual_seed(0)
        return ([[torch.randn(1, T, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                         key: spec}]],)


def _flux_graph_on_test_conditioning(flux_file: str, guidance: float) -> dict:
    """The Flux example's graph (its builder, at 128 px and 2 steps, no vanilla branch) on the
    random file, with the test conditioning in place of the Subject Prompt and its text
    encoders, and without the VAE (whose random decode would test nothing here)."""
    from tools.graphs import flux_custom_sampling_graph
    g = flux_custom_sampling_graph(flux_file, ["clip_l.safetensors", "t5xxl_fp16.safetensors"], "ae.safetensors",
                                   "a bear and a white rabbit", "bear, white rabbit", seed=3, steps=2,
                                   guidance=guidance, size=128, vanilla=False)
    prompt = _only(g, "AIT2ISubjectPrompt")
    g[prompt] = {"class_type": "AIT2ITestConditioning", "inputs": {}}
    for class_type in ("DualCLIPLoader", "VAELoader", "VAEDecode"):
        del g[_only(g, class_type)]
    maps = _only(g, "AIT2IAttentionMaps")
    del g[maps]["inputs"]["images"]
    for k in [k for k, n in g.items() if n["class_type"] == "SaveImage" and n["inputs"]["images"][0] != maps]:
        del g[k]
    assert g[_only(g, "FluxGuidance")]["inputs"]["conditioning"] == [prompt, 0]
    return g


def test_flux_example_graph_runs_through_the_executor(host, flux_file, monkeypatch):
    """UNETLoader -> ModelSamplingFlux -> AI-T2I Attention Patch; the prompt's conditioning
    -> FluxGuidance -> BasicGuider (no negative); KSamplerSelect -> AI-T2I Guided Sampler ->
    SamplerCustomAdvanced -> AI-T2I Attention Maps: the run guides, and the guidance value
    FluxGuidance set reaches the guidance pass (another value gives other maps)."""
    monkeypatch.setitem(host.nodes.NODE_CLASS_MAPPINGS, "AIT2ITestConditioning", _TestConditioning)
    logs = {}
    for guidance in (1.0, 8.0):
        graph = _flux_graph_on_test_conditioning(flux_file, guidance)
        out = host.run(graph)
        maps = _only(graph, "AIT2IAttentionMaps")
        assert len(out[_only(graph, "SaveImage")]["images"]) == 2  # 2 subjects x the one guided step
        logs[guidance] = out[maps]["text"][0]
        assert "subjects=bear, white rabbit" in logs[guidance] and "step   0" in logs[guidance]
        assert "nan" not in logs[guidance].lower()
    step0 = {g: next(line for line in text.splitlines() if "step   0" in line) for g, text in logs.items()}
    assert step0[1.0] != step0[8.0], "the guidance pass did not see FluxGuidance's value"


@pytest.mark.parametrize("name", ["ai_t2i_sd35_custom_sampler", "ai_t2i_flux_dev_custom_sampler"])
def test_vanilla_branch_differs_from_the_guided_one_only_by_ai_t2i(name):
    """The unguided SamplerCustomAdvanced beside the guided one: the same noise, sigmas and
    latent, a guider of the same kind and conditioning on the model before the patch, the
    base sampler unwrapped; the saved batch is (vanilla, AI-T2I) and the patch is last on
    the MODEL chain (after ModelSamplingSD3/Flux)."""
    g = _builders()[name]()
    runs = [k for k, n in g.items() if n["class_type"] == "SamplerCustomAdvanced"]
    assert len(runs) == 2
    guided, vanilla = sorted(runs, key=lambda k: g[g[k]["inputs"]["sampler"][0]]["class_type"] != "AIT2IGuidedSampler")
    gi, vi = g[guided]["inputs"], g[vanilla]["inputs"]
    assert g[gi["sampler"][0]]["class_type"] == "AIT2IGuidedSampler"
    assert vi["sampler"] == g[gi["sampler"][0]]["inputs"]["sampler"]  # the KSamplerSelect it wraps
    assert [vi[k] for k in ("noise", "sigmas", "latent_image")] == [gi[k] for k in ("noise", "sigmas", "latent_image")]
    g_guider, v_guider = g[gi["guider"][0]], g[vi["guider"][0]]
    assert v_guider["class_type"] == g_guider["class_type"] == ("BasicGuider" if "flux" in name else "CFGGuider")
    patch = g[g_guider["inputs"]["model"][0]]
    assert patch["class_type"] == "AIT2IAttentionPatch"
    assert v_guider["inputs"] == {**g_guider["inputs"], "model": patch["inputs"]["model"]}
    assert g[patch["inputs"]["model"][0]]["class_type"] == ("ModelSamplingFlux" if "flux" in name else "ModelSamplingSD3")
    saved = g[_only(g, "ImageBatch")]["inputs"]
    assert [g[saved[k][0]]["inputs"]["samples"][0] for k in ("image1", "image2")] == [vanilla, guided]
