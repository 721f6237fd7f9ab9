"""A guided run (nodes/host/guided_run.py) on a real host UNet: the update lowers the loss,
the errors a user can fix are raised before sampling starts, and the images of a batch are
guided independently."""
import pytest
import torch

import comfy.samplers
from runner import guided_sampler, run


def test_one_guided_step_lowers_the_loss(pack, sd15_prompt):
    """Two steps at the same sigma: euler's dt is 0 between them, so the only change to
    the latent is the guided update, and the second step's loss is at the updated latent."""
    patched, _, pos, neg = sd15_prompt
    ms = patched.get_model_object("model_sampling")
    s = float(comfy.samplers.calculate_sigmas(ms, "normal", 10)[2])
    sigmas = torch.tensor([s, s, 0.0])
    sampler = guided_sampler(pack, end_percent=1.0, scale_factor=2.0)
    run(patched, sampler, pos, neg, size=16, sigmas=sigmas)
    before, after = (r.losses["total"] for r in sampler.runs.latest().reports)
    assert after < before


def test_unpatched_model_and_plain_prompt_errors(pack, sd15_prompt, sd15_small):
    patched, model, pos, neg = sd15_prompt
    with pytest.raises(Exception, match="AI-T2I Attention Patch"):
        run(model, guided_sampler(pack), pos, neg, size=16, steps=2)
    with pytest.raises(Exception, match="AI-T2I Subject Prompt"):
        run(patched, guided_sampler(pack), neg, neg, size=16, steps=2)


def test_batch_guided_in_one_pass_matches_single(pack, sd15_prompt):
    """Images of a batch are guided independently: image 0 of a batch of 2 equals the same
    seed's single image (noise for the batch is drawn as the host does, image by image)."""
    patched, _, pos, neg = sd15_prompt
    single = run(patched, guided_sampler(pack), pos, neg, size=16, steps=4, seed=11, batch=1)
    batch = run(patched, guided_sampler(pack), pos, neg, size=16, steps=4, seed=11, batch=2)
    assert torch.allclose(single[0], batch[0], rtol=1e-4, atol=1e-3)


def test_joint_map_rule_leaves_a_unet_as_it_is(pack, sd15_prompt):
    """joint_map is a joint-attention model's setting: on a UNet every rule gives the same
    sample, bit for bit (its default, the sharpened map, once reshaped UNet maps too)."""
    patched, _, pos, neg = sd15_prompt
    samples = [run(patched, guided_sampler(pack, strength=20.0, joint_map=rule), pos, neg, size=16, steps=4)
               for rule in ("joint softmax", "sharpened joint softmax", "text softmax")]
    assert torch.equal(samples[0], samples[1]) and torch.equal(samples[0], samples[2])
    plain = run(patched, comfy.samplers.sampler_object("euler"), pos, neg, size=16, steps=4)
    assert (samples[0] - plain).abs().max() > 1e-5  # the guidance did act
