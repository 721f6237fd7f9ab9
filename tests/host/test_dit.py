"""Joint-attention models (SD3/SD3.5 MMDiT, Flux.1) on tiny random-weight host models:
the recorded maps, the gradient, a guided run, clean model options, clear errors, the work
estimate and the subject columns on the real SD3 and Flux tokenizers.

Plumbing only: random weights say nothing of how well guidance works on real SD3/Flux."""
from importlib import import_module

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import comfy.model_management
import comfy.sample
import comfy.samplers
from runner import guided_sampler, options_snapshot as _snapshot, patch

T = 12  # text tokens of the test context
SUBJECTS = ((2,), (5, 6))  # the subjects' context columns (the second spans two tokens)
LATENT = 32  # 32x32 latent: a 16x16 patch grid


def _mod(pack, name):
    return import_module(f"{pack.__name__}.{name}")


FAMILIES = {
    "sd3": lambda b: (b.sd3_model(depth=2, blocks=3), 2048),
    "sd35m": lambda b: (b.sd3_model(depth=2, blocks=3, qk_norm="rms", x_block_self_attn_layers=(0, 1)), 2048),
    "flux": lambda b: (b.flux_model(width=64, heads=2, double=2, single=2), 768),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, pack):
    from tools import random_models as builders
    model, pooled = FAMILIES[request.param](builders)
    return request.param, model, pooled


def _conds(pack, pooled, seed=0):
    """(positive with subjects, negative) made directly as tensors: context (1, T, 4096)."""
    engine = _mod(pack, "ai_t2i_attention")
    key = _mod(pack, "nodes.host.conditioning").SUBJECTS_KEY
    g = torch.Generator().manual_seed(seed)
    groups = engine.TokenGroups(SUBJECTS, (), tuple(range(T)))
    spec = engine.ResolvedSubjects("a cat and a teddy bear", ("cat", "teddy bear"), (), groups)
    pos = [[torch.randn(1, T, 4096, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g), key: spec}]]
    neg = [[torch.randn(1, T, 4096, generator=g) * 0.1, {"pooled_output": torch.zeros(1, pooled)}]]
    return pos, neg


def _sample(model, sampler, pos, neg, steps=4, seed=1, callback=None, cfg=3.0):
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    latent = torch.zeros(1, 16, LATENT, LATENT)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, seed=seed,
                                          callback=callback, disable_pbar=True)


class _Probe(comfy.samplers.Sampler):
    """A SAMPLER that hands the host's guider (conditioning processed as for sampling) to a
    test function instead of sampling."""

    def __init__(self, fn):
        self.fn = fn

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        with torch.inference_mode(False):
            self.fn(model_wrap, sigmas, extra_args["model_options"], noise.clone())
        return noise


def _guidance_pass(pack, guider, fused=True, stop_early=True):
    gp = _mod(pack, "nodes.host.guidance_pass")
    entry, _ = _mod(pack, "nodes.host.conditioning").subject_entry(guider.conds)
    return gp.GuidancePass(guider, entry, gp.patched_layers(guider.model_options), stop_early, fused)


# -- (a) the recorded map is the joint attention's own softmax ------------------------------------

def test_recorded_map_is_the_joint_softmax(pack, family):
    """For one block, the pass's map equals softmax(QK^T / sqrt(d)) recomputed here in float64
    from the q and k of the host's own attention call, over the whole [text, image] sequence,
    image queries, text columns, head mean. q and k are caught by another pack's block patch
    and attention override (host mechanisms only), in the very call the pass records."""
    name, model, pooled = family
    caught = {}

    def probe_block(args, extra):
        to = {**args["transformer_options"], "probe_block": True}
        return extra["original_block"]({**args, "transformer_options": to})

    def probe_attention(func, *args, **kwargs):
        if kwargs["transformer_options"].get("probe_block") and "q" not in caught:
            caught["q"], caught["k"], caught["kw"] = args[0].detach(), args[1].detach(), dict(kwargs)
            caught["heads"] = kwargs["heads"] if "heads" in kwargs else args[3]
        return func(*args, **kwargs)

    m = model.clone()
    m.set_model_patch_replace(probe_block, "dit", "double_block", 1)
    m.model_options["transformer_options"]["optimized_attention_override"] = probe_attention
    layers_mod = _mod(pack, "ai_t2i_attention.layers")
    result = {}

    def check(guider, sigmas, model_options, noise):
        # Unfused: the override set before ours computes the output; not stopped: that call returns.
        p = _guidance_pass(pack, guider, fused=False, stop_early=False)
        x = noise * sigmas[0]
        result["maps"] = p.attention(x, sigmas[:1], model_options, [layers_mod.Layer(("double", 1, 0), 2, pool=True)])

    _sample(patch(pack, m), _Probe(check), *_conds(pack, pooled))
    q, k = caught["q"].double(), caught["k"].double()
    if not caught["kw"].get("skip_reshape"):  # SD3: (B, L, heads * d)
        h = caught["heads"]
        q, k = (t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k))
    registers = 0
    first_image = registers + T
    assert q.shape[2] == first_image + (LATENT // 2) ** 2  # the whole joint sequence: text, then image
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    expected = probs[:, :, first_image:, registers:registers + T].mean(1).reshape(1, 16, 16, T)
    got = result["maps"]
    assert got.shape == (1, 16, 16, T)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
    text_only = torch.softmax(q[:, :, first_image:] @ k[:, :, :T].transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
    assert (got.double() - text_only.mean(1).reshape(1, 16, 16, T)).abs().max() > 1e-3  # not a text-only softmax
    assert got.std(dim=(1, 2)).min() > 0  # the maps vary over the image


# -- (b) the gradient reaches the sampler's latent ------------------------------------------------

def test_gradient_reaches_the_latent(pack, family):
    name, model, pooled = family
    out = {}

    def check(guider, sigmas, model_options, noise):
        p = _guidance_pass(pack, guider)
        layers = _mod(pack, "ai_t2i_attention.layers").choose_layers(p.hooked, (LATENT, LATENT), "auto", "joint+single"
                                                                      if name == "flux" else "joint")
        x = (noise * sigmas[0]).requires_grad_(True)
        with torch.enable_grad():
            maps = p.attention(x, sigmas[:1], model_options, layers)
            (maps[..., 2] * torch.linspace(-1, 1, maps.shape[2])).sum().backward()
        out["grad"], out["maps"] = x.grad, maps

    _sample(patch(pack, model), _Probe(check), *_conds(pack, pooled))
    assert out["maps"].shape == (1, 16, 16, T)
    assert torch.isfinite(out["grad"]).all() and out["grad"].abs().max() > 0


# -- (c) a guided run: moves the latent at guided steps only; its CFG calls are the host's ----------

def test_guided_run_moves_guided_steps_only_and_cfg_calls_are_the_hosts(pack, family):
    name, model, pooled = family
    recorder_key = _mod(pack, "nodes.host.keys").RECORDER_KEY
    calls = []

    def record_calls(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        if recorder_key not in args["c"]["transformer_options"]:  # a CFG call, not the guidance pass
            calls.append((args["input"].clone(), args["timestep"].clone(), dict(args["c"]), out.clone()))
        return out

    steps = []

    def callback(i, denoised, x, total):
        steps.append((x.clone(), denoised.clone()))

    m = model.clone()
    m.set_model_unet_function_wrapper(record_calls)
    pos, neg = _conds(pack, pooled)
    sampler = guided_sampler(pack, end_percent=0.5)
    out = _sample(patch(pack, m), sampler, pos, neg, steps=4, callback=callback)
    assert torch.isfinite(out).all()
    assert [r.step for r in sampler.runs.latest().reports] == [0, 1]

    # Euler: the state entering step i+1 is x_i + (s_{i+1} - s_i) (x_i - denoised_i) / s_i; the model
    # then sees it moved by the guided update at guided steps, unchanged elsewhere.
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)
    moved = []
    for i in range(3):
        x, den = steps[i]
        expected = x + (x - den) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        moved.append(float((steps[i + 1][0] - expected).abs().max()))
    assert moved[0] > 1e-3 and moved[1] < 1e-5 and moved[2] < 1e-5, moved  # step 1 guided; 2, 3 not

    # Every CFG call of the patched model gives, bit for bit, what the unpatched model gives on that input.
    assert len(calls) >= 4  # one per step at least (cond and uncond batched or not)
    for x, t, c, got in calls:
        to = {k: v for k, v in c["transformer_options"].items() if k != "patches_replace"}
        with torch.inference_mode():
            want = model.model.apply_model(x, t, **{**c, "transformer_options": to})
        assert torch.equal(got, want)


def test_zero_strength_is_the_base_sampler_bit_for_bit(pack, family):
    name, model, pooled = family
    pos, neg = _conds(pack, pooled)
    base = _sample(model, comfy.samplers.sampler_object("euler"), pos, neg)
    off = _sample(patch(pack, model), guided_sampler(pack, strength=0.0), pos, neg)
    guided = _sample(patch(pack, model), guided_sampler(pack), pos, neg)
    assert torch.equal(base, off)
    assert not torch.allclose(base, guided)


# -- (d) model options are left as they were ---------------------------------------------------------

def test_options_unchanged_after_a_run_an_error_and_a_cancel(pack, family):
    name, model, pooled = family
    pos, neg = _conds(pack, pooled)
    before = _snapshot(model.model_options)
    patched = patch(pack, model)
    assert _snapshot(model.model_options) == before  # the patch node patched a copy
    patched_before = _snapshot(patched.model_options)
    _sample(patched, guided_sampler(pack), pos, neg)
    assert _snapshot(patched.model_options) == patched_before

    def failing_block(args, extra):  # another pack's block patch failing inside the guidance pass
        if args["img"].requires_grad:
            raise RuntimeError("boom in the guidance pass")
        return extra["original_block"](args)

    failing = model.clone()
    failing.set_model_patch_replace(failing_block, "dit", "double_block", 0)
    failing = patch(pack, failing)
    failing_before = _snapshot(failing.model_options)
    with pytest.raises(RuntimeError, match="boom in the guidance pass"):
        _sample(failing, guided_sampler(pack), pos, neg)
    assert _snapshot(failing.model_options) == failing_before

    def cancel(i, denoised, x, total):
        comfy.model_management.interrupt_current_processing(True)

    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _sample(patched, guided_sampler(pack, end_percent=1.0), pos, neg, callback=cancel)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert _snapshot(patched.model_options) == patched_before
    assert _snapshot(model.model_options) == before
    # Nothing stayed patched: plain sampling on the patched model is the unpatched model's, bit for bit.
    euler = comfy.samplers.sampler_object("euler")
    assert torch.equal(_sample(patched, euler, pos, neg), _sample(model, euler, pos, neg))


# -- (e) clear errors -------------------------------------------------------------------------------

def test_unsupported_joint_attention_model_is_refused_by_name(pack):
    import comfy.supported_models
    from tools import random_models as builders
    if not hasattr(comfy.supported_models, "Flux2"):
        pytest.skip("this ComfyUI has no Flux.2 model class (it came after 0.3.64): there is nothing to refuse")
    config = dict(image_model="flux2", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=64,
                  hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8] * 4,
                  theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, global_modulation=True,
                  mlp_silu_act=True, ops_bias=False, dtype=torch.float32)
    flux2 = builders._patcher(comfy.supported_models.Flux2, config, 0)
    with pytest.raises(ValueError, match=r"supports .*SD3/SD3.5 \(MMDiT\) and Flux.1.*this model is a Flux2 \(Flux\).*"
                                         r"Use an SD1.x/SD2.x/SDXL, SD3/SD3.5 or Flux.1 checkpoint"):
        patch(pack, flux2)


def test_dit_layer_choice_errors_name_the_fix(pack, family):
    name, model, pooled = family
    pos, neg = _conds(pack, pooled)
    with pytest.raises(Exception, match=r"no down\+up blocks; choose layers 'auto' or 'joint'"):
        _sample(patch(pack, model), guided_sampler(pack, layers="down+up"), pos, neg)
    with pytest.raises(Exception, match="level 1/1 cannot be made by pooling it"):
        _sample(patch(pack, model), guided_sampler(pack, level="1/1"), pos, neg)


# -- the work estimate against torch's FLOP counter --------------------------------------------------

class _Stop(Exception):
    pass


def _counted_share(model, slot, latent, pooled):
    """FLOPs of the host's forward stopped after block `slot` (by a block patch of this test)
    over a whole forward."""
    dm = model.model.diffusion_model
    x, t = torch.randn(1, 16, latent, latent), torch.tensor([0.5])
    kwargs = {"context": torch.randn(1, T, 4096), "y": torch.randn(1, pooled)}
    if pooled == 768:
        kwargs["guidance"] = torch.tensor([3.5])

    def stop_after(args, extra):
        extra["original_block"](args)
        raise _Stop()

    flops = []
    for stop in (True, False):
        m = model.clone()
        if stop:
            m.set_model_patch_replace(stop_after, "dit", *slot)
        to = m.model_options.get("transformer_options", {})
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            try:
                dm(x, t, transformer_options=dict(to), **kwargs)
            except _Stop:
                pass
        flops.append(counter.get_total_flops())
    return flops[0] / flops[1]


@pytest.mark.parametrize("latent", [32, 16])
def test_work_estimate_matches_counted_flops(pack, family, latent):
    name, model, pooled = family
    dit, structure = _mod(pack, "nodes.host.dit"), _mod(pack, "nodes.host.structure")
    items = dit.dit_work(model.model, (latent, latent), T)
    keys = [k for k, _ in items if k is not None]
    for key in (keys[0], keys[1], keys[-1]):
        estimate = structure.work_until(items, [key])
        measured = _counted_share(model, ({"double": "double_block", "single": "single_block"}[key[0]], key[1]), latent,
                                  pooled)
        assert abs(estimate - measured) < 0.03, (name, key, estimate, measured)
        assert 0.0 < estimate < 1.0


def test_auto_reads_joint_blocks_within_budget_on_full_size_models(pack):
    """On the real SD3.5 Large and Flux.1 sizes (meta device: shapes only), auto reads Flux's
    19 double blocks (about a third of its forward), and SD3.5's first joint blocks up to the
    budget (its joint blocks are the whole network)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    layers_mod = _mod(pack, "ai_t2i_attention.layers")
    dit, structure = _mod(pack, "nodes.host.dit"), _mod(pack, "nodes.host.structure")

    import comfy.model_base
    # The host's model classes around full-size diffusion models, without the rest of BaseModel's state
    # (the walk reads the diffusion model only).
    flux = object.__new__(comfy.model_base.Flux)
    torch.nn.Module.__init__(flux)
    flux.diffusion_model = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                                mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, device="meta",
                                operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16)
    sd35 = object.__new__(comfy.model_base.SD3)
    torch.nn.Module.__init__(sd35)
    sd35.diffusion_model = OpenAISignatureMMDITWrapper(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=38, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}},
        num_patches=36864, pos_embed_max_size=192, qk_norm="rms", device="meta",
        operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16)
    results = {}
    for name, model, tokens in (("flux", flux, 256), ("sd35", sd35, 154)):
        layers = dit.dit_layers(model)
        items = dit.dit_work(model, (128, 128), tokens)
        share = lambda ls: structure.work_until(items, [l.key for l in ls])  # noqa: E731
        chosen = layers_mod.choose_layers(layers, (128, 128), "auto", "auto", share)
        results[name] = (layers_mod.describe_layers(chosen), share(chosen), {l.factor for l in chosen})
    assert results["flux"][0] == "double " + ", ".join(map(str, range(19))) + " (19 layers)"
    assert 0.25 < results["flux"][1] < 0.45 and results["flux"][2] == {8}  # 1024 px: 64x64 grid pooled to 16x16
    assert results["sd35"][0].startswith("double 0, 1, ") and 0.6 < results["sd35"][1] <= layers_mod.AUTO_WORK_BUDGET


# -- subject columns on the real SD3 and Flux tokenizers ------------------------------------------

def _streams(pack, tokenizer, streams, text, subjects, attributes=()):
    tokens = _mod(pack, "nodes.host.tokens")
    engine = _mod(pack, "ai_t2i_attention")
    found, raw = tokens.stream_tokenizations(tokenizer.tokenize_with_weights, text, streams)
    return engine.resolve_streams(text, found, subjects, attributes, tokens.presence_columns(raw)), raw


def _find(ids, word_ids):
    """Positions of the first run of word_ids inside ids (the tokenizer library's own ids)."""
    n = len(word_ids)
    start = next(i for i in range(len(ids) - n + 1) if ids[i:i + n] == word_ids)
    return tuple(range(start, start + n))


def test_sd3_columns_are_the_words_clip_and_t5_columns(pack):
    from comfy.text_encoders.sd3_clip import SD3Tokenizer
    tok = SD3Tokenizer()
    groups, raw = _streams(pack, tok, ("l", "t5xxl"), "a photo of a cat and a teddy bear", ["cat", "teddy bear"])
    clip_len = 77 * len(raw["l"])
    t5_ids = [t[0] for t in raw["t5xxl"][0]]
    clip_ids = [t[0] for t in raw["l"][0]]
    t5 = lambda w: tok.t5xxl.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    clip = lambda w: tok.clip_l.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert clip_len == 77 and len(t5_ids) == 77  # SD3 pads T5 to 77 tokens
    cat_t5 = tuple(clip_len + c for c in _find(t5_ids, t5("cat")))
    assert groups.subjects[0] == (5,) + cat_t5 and _find(clip_ids, clip("cat")) == (5,)  # start, a, photo, of, a, cat
    teddy_t5 = tuple(clip_len + c for c in _find(t5_ids, t5("teddy bear")))
    assert len(teddy_t5) > 2  # T5 splits "teddy" into pieces: all are the subject's columns
    assert groups.subjects[1] == _find(clip_ids, clip("teddy bear")) + teddy_t5
    # presence axis: CLIP's columns 1..75, then every T5 column (no start token in T5)
    assert groups.text_columns == tuple(range(1, 76)) + tuple(range(clip_len, clip_len + len(t5_ids)))
    t5_only, _ = _streams(pack, tok, ("t5xxl",), "a photo of a cat", ["cat"])
    assert t5_only.subjects == (_find(t5_ids, t5("cat")),)  # T5 alone (no CLIP loaded): its columns from 0


def test_flux_columns_are_t5_only(pack):
    from comfy.text_encoders.flux import FluxTokenizer
    tok = FluxTokenizer()
    groups, raw = _streams(pack, tok, ("t5xxl",), "a red car next to a blue bird", ["car", "bird"],
                           [("red", "car"), ("blue", "bird")])
    ids = [t[0] for t in raw["t5xxl"][0]]
    t5 = lambda w: tok.t5xxl.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert len(ids) == 256  # Flux pads T5 to 256 tokens
    assert groups.subjects == (_find(ids, t5("car")), _find(ids, t5("bird")))
    assert groups.attributes == ((_find(ids, t5("red")), 0), (_find(ids, t5("blue")), 1))
    assert groups.text_columns == tuple(range(256))
    with pytest.raises(ValueError, match="'horse' is not in the prompt. Words in the prompt: a, red, car"):
        _streams(pack, tok, ("t5xxl",), "a red car next to a blue bird", ["car", "horse"])


def test_context_streams_follow_the_encoders_loaded(pack):
    """Which streams make the context, read from the host's own text-encoder classes
    (built without weights: no encoder loaded, then a stand-in module per loaded one)."""
    from types import SimpleNamespace
    from comfy.text_encoders.sd3_clip import SD3ClipModel
    tokens = _mod(pack, "nodes.host.tokens")
    sd3 = SD3ClipModel(clip_l=False, clip_g=False, t5=False)
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ()
    sd3.t5xxl = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("t5xxl",)
    sd3.clip_g = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("g", "t5xxl")
    sd3.clip_l = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("l", "t5xxl")
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=torch.nn.Identity())) is None
