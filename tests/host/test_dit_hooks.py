"""The DiT's hooks (nodes/host/dit_hooks.py) on tiny random-weight host models (SD3/SD3.5
MMDiT, Flux.1): the recorded map is the joint attention's own softmax, and the model's
options are left as they were after a run, an error and a cancel.

Plumbing only: random weights say nothing of how well guidance works on real SD3/Flux."""
import pytest
import torch

import comfy.model_management
import comfy.samplers
from ai_t2i_pack.ai_t2i_attention.layers import Layer
from dit_models import LATENT, T, Probe, conds, make_guidance_pass, sample
from runner import guided_sampler, options_snapshot as _snapshot, patch


@pytest.mark.parametrize("joint_keys", ["all", "text"])
def test_recorded_map_is_the_joint_softmax(pack, dit_model, joint_keys):
    """For one block, the pass's map equals softmax(QK^T / sqrt(d)) recomputed here in float64
    from the q and k of the host's own attention call, over the whole [text, image] sequence,
    image queries, text columns, head mean. q and k are caught by another pack's block patch
    and attention override (host mechanisms only), in the very call the pass records.
    joint_keys "text" (the "text softmax" map rule): the softmax is over the text keys alone."""
    name, model, pooled = dit_model
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
    result = {}

    def check(guider, sigmas, model_options, noise):
        # Unfused: the override set before ours computes the output; not stopped: that call returns.
        p = make_guidance_pass(guider, fused=False, stop_early=False, joint_keys=joint_keys)
        x = noise * sigmas[0]
        result["maps"] = p.attention(x, sigmas[:1], model_options, [Layer(("double", 1, 0), 2, pool=True)])

    sample(patch(pack, m), Probe(check), *conds(pooled))
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
    text_only = torch.softmax(q[:, :, first_image:] @ k[:, :, :T].transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
    text_only = text_only.mean(1).reshape(1, 16, 16, T)
    if joint_keys == "text":
        expected, other = text_only, expected
    else:
        other = text_only
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
    assert (got.double() - other).abs().max() > 1e-3  # the two rules give other maps
    assert got.std(dim=(1, 2)).min() > 0  # the maps vary over the image


def test_options_unchanged_after_a_run_an_error_and_a_cancel(pack, dit_model):
    name, model, pooled = dit_model
    pos, neg = conds(pooled)
    before = _snapshot(model.model_options)
    patched = patch(pack, model)
    assert _snapshot(model.model_options) == before  # the patch node patched a copy
    patched_before = _snapshot(patched.model_options)
    sample(patched, guided_sampler(pack), pos, neg)
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
        sample(failing, guided_sampler(pack), pos, neg)
    assert _snapshot(failing.model_options) == failing_before

    def cancel(i, denoised, x, total):
        comfy.model_management.interrupt_current_processing(True)

    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(patched, guided_sampler(pack, end_percent=1.0), pos, neg, callback=cancel)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert _snapshot(patched.model_options) == patched_before
    assert _snapshot(model.model_options) == before
    # Nothing stayed patched: plain sampling on the patched model is the unpatched model's, bit for bit.
    euler = comfy.samplers.sampler_object("euler")
    assert torch.equal(sample(patched, euler, pos, neg), sample(model, euler, pos, neg))
