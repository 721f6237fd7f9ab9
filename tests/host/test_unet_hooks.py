"""The cross-attention hook (nodes/host/unet_hooks.py) on real host UNets (SD1.5 and SDXL
topologies): the maps a guided run reads, another pack's attn2 patch composed with it in
either order, a prompt over 77 tokens."""
import pytest
import torch

import comfy.samplers
from comfy.ldm.modules.attention import optimized_attention
from runner import encode, guided_sampler, patch, plain, run


def test_sd15_guided_run_reads_expected_maps(pack, sd15_small):
    model, clip = sd15_small
    pos = encode(pack, clip, "a photo of a cat and a dog", "cat, dog")
    sampler = guided_sampler(pack, level="1/4")
    out = run(patch(pack, model), sampler, pos, plain(clip), size=64, steps=2)
    rec = sampler.runs.latest()
    assert torch.isfinite(out).all()
    assert rec.map_size == (16, 16)  # 64x64 latent (512 px) at latent/4: the reference's 16x16 maps
    assert [r.step for r in rec.reports] == [0]  # end_percent 0.5 of 2 steps
    assert rec.maps[0].shape == (1, 2, 16, 16)
    assert all(r.losses["total"] > 0 and not r.skipped for r in rec.reports)


def test_sdxl_guided_run(pack, sdxl_small):
    model, clip = sdxl_small
    pos = encode(pack, clip, "a red car and a blue bird", "car, bird", "red:car, blue:bird")
    sampler = guided_sampler(pack)
    out = run(patch(pack, model), sampler, pos, plain(clip), size=32, steps=2, batch=2)
    rec = sampler.runs.latest()
    assert torch.isfinite(out).all()
    assert rec.map_size == (16, 16)  # auto level on a 32x32 latent: latent/2, the 16x16 maps
    assert rec.maps[0].shape == (2, 2, 16, 16)
    assert rec.reports[0].losses["attribute"] > 0


def test_existing_attn2_patch_still_runs(pack, sd15_small):
    model, clip = sd15_small
    calls = []

    def other_pack_patch(q, k, v, extra_options):
        calls.append(extra_options["block"])
        return optimized_attention(q, k, v, extra_options["n_heads"])

    m = model.clone()
    m.set_model_attn2_replace(other_pack_patch, "input", 7, 0)
    m.set_model_attn2_replace(other_pack_patch, "output", 3)  # a block-wide (2-key) patch
    sampler = guided_sampler(pack, level="1/4")
    run(patch(pack, m), sampler, encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip), size=32, steps=2)
    assert ("input", 7) in calls and ("output", 3) in calls
    assert len(sampler.runs.latest().reports) == 1


@pytest.mark.parametrize("order", ["before", "after"])
def test_ipadapter_style_patch_composes_in_either_order(pack, sd15_small, order):
    """Another pack's attn2 replace (IPAdapter-style: it adds to the attention output) on a
    layer the loss reads, put before or after 'AI-T2I Attention Patch': both run, in the
    guidance pass and in the ordinary ones, the run is guided and the image finite."""
    model, clip = sd15_small
    calls = []

    def other_pack_patch(q, k, v, extra_options):
        calls.append(q.requires_grad)
        out = optimized_attention(q, k, v, extra_options["n_heads"])
        return out + 0.1 * out.tanh()

    def with_other(m):
        m = m.clone()
        m.set_model_attn2_replace(other_pack_patch, "input", 7, 0)
        return m

    m = patch(pack, with_other(model)) if order == "before" else with_other(patch(pack, model))
    sampler = guided_sampler(pack, level="1/4", layers="down+up")
    out = run(m, sampler, encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip), size=32, steps=2)
    assert torch.isfinite(out).all()
    assert len(sampler.runs.latest().reports) == 1 and not sampler.runs.latest().reports[0].skipped
    assert "input 7" in sampler.runs.latest().layers
    assert True in calls and False in calls  # in the guidance pass (with gradients) and in the plain ones
    base = run(with_other(model), comfy.samplers.sampler_object("euler"), encode(pack, clip, "a cat and a dog",
               "cat, dog"), plain(clip), size=32, steps=2)
    assert not torch.allclose(out, base)  # guided


def test_prompt_over_77_tokens(pack, sd15_small):
    model, clip = sd15_small
    filler = ", ".join(["a very detailed painting"] * 20)
    text = f"{filler}, a cat sitting next to a dog"
    pos = encode(pack, clip, text, "cat, dog")
    spec = pos[0][1]["ai_t2i_subjects"]
    assert min(min(c) for c in spec.groups.subjects) >= 77  # both words live in the second chunk
    assert pos[0][0].shape[1] >= 154
    sampler = guided_sampler(pack)
    out = run(patch(pack, model), sampler, pos, plain(clip), size=32, steps=2)
    assert torch.isfinite(out).all() and len(sampler.runs.latest().reports) == 1
