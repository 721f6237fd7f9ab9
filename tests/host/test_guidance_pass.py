"""The guidance pass (nodes/host/guidance_pass.py): its options (the fused attention kernel,
in the pass's copy only), the input scale the update is taken at, the fast path against the
straightforward one on a real host UNet; on tiny random-weight DiTs (SD3/SD3.5 MMDiT,
Flux.1) the gradient reaching the latent and a guided run (plumbing only: random weights say
nothing of how well guidance works on real SD3/Flux)."""
import pytest
import torch

import comfy.samplers
from ai_t2i_pack import ai_t2i_attention as engine
from ai_t2i_pack.ai_t2i_attention.layers import choose_layers
from ai_t2i_pack.nodes.host import families, guidance_pass, keys, unet_hooks
from dit_models import LATENT, T, Probe, conds, make_guidance_pass, sample
from runner import guided_sampler, patch, run


def test_fast_path_matches_straightforward_path(pack, sd15_prompt):
    """Stopping the guidance forward after the last layer read, and running it on the host's
    fused attention kernel, changes the gradient by rounding only: the guided images of the
    two paths are far closer to each other than either is to the unguided image."""
    from dataclasses import replace
    patched, model, pos, neg = sd15_prompt
    fast = guided_sampler(pack, scale_factor=200.0)
    slow = guided_sampler(pack, scale_factor=200.0)
    slow.settings = replace(slow.settings, stop_early=False, fused_attention=False)
    reference = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=16, steps=4)
    a = run(patched, fast, pos, neg, size=16, steps=4)
    b = run(patched, slow, pos, neg, size=16, steps=4)
    moved = (a - reference).abs().max()
    assert moved > 1e-2
    assert (a - b).abs().max() < 0.05 * moved  # rounding of values up to ~100
    for ra, rb in zip(fast.runs.latest().reports, slow.runs.latest().reports):
        assert ra.losses["total"] == pytest.approx(rb.losses["total"], rel=1e-4)


def test_guidance_pass_uses_the_fused_attention_kernel(pack, sd15_small):
    """Only the guidance pass swaps the kernel, whatever override another pack set."""
    family = families.family_of(sd15_small[0].model)
    other = object()
    options = {"transformer_options": {"optimized_attention_override": other}}
    recorder = engine.AttentionRecorder(frozenset())

    def pass_options(fused_attention):
        return guidance_pass.pass_options(options, recorder, family, (), (8, 8), 77, fused_attention)
    fused, host = pass_options(True), pass_options(False)
    assert fused["transformer_options"]["optimized_attention_override"] is unet_hooks.differentiable_attention
    assert host["transformer_options"]["optimized_attention_override"] is other
    assert options["transformer_options"]["optimized_attention_override"] is other  # the model's own is untouched


def test_update_moves_the_unet_input_as_the_reference_does(pack):
    """The step is taken on the UNet's input z = c_in * x, c_in read from the host's own
    model sampling: 1/sqrt(1 + sigma^2) for eps and v models (SD1.x/SDXL, SD2.x-v), 1 for
    flow matching (SD3, Flux). A step alpha * dL/dz on z is alpha * dL/dx / c_in^2 on x."""

    import comfy.model_sampling as ms

    class Settings:
        sampling_settings = {}

    sigma = torch.tensor([14.6, 1.0, 0.1])
    x = torch.randn(3, 4, 8, 8)
    for kind in (ms.EPS, ms.V_PREDICTION):
        cls = type("M", (ms.ModelSamplingDiscrete, kind), {})
        c_in = guidance_pass.input_scale(cls(Settings()), sigma, x)
        torch.testing.assert_close(c_in.flatten(), 1 / torch.sqrt(1 + sigma ** 2))
    flow = type("F", (ms.ModelSamplingDiscreteFlow, ms.CONST), {})(Settings())
    torch.testing.assert_close(guidance_pass.input_scale(flow, sigma, x).flatten(), torch.ones(3))
    with torch.inference_mode():  # the host runs nodes under inference mode; the scale must still carry grad
        c_in = guidance_pass.input_scale(cls(Settings()), sigma.clone(), x.clone())
    z = (x * c_in).requires_grad_(True)
    (z / c_in).sum().backward()
    torch.testing.assert_close(z.grad, (1 / c_in).expand_as(x))


def test_gradient_reaches_the_latent(pack, dit_model):
    name, model, pooled = dit_model
    out = {}

    def check(guider, sigmas, model_options, noise):
        p = make_guidance_pass(guider)
        layers = choose_layers(p.hooked, (LATENT, LATENT), "auto", "joint+single" if name == "flux" else "joint")
        x = (noise * sigmas[0]).requires_grad_(True)
        with torch.enable_grad():
            maps = p.attention(x, sigmas[:1], model_options, layers)
            (maps[..., 2] * torch.linspace(-1, 1, maps.shape[2])).sum().backward()
        out["grad"], out["maps"] = x.grad, maps

    sample(patch(pack, model), Probe(check), *conds(pooled))
    assert out["maps"].shape == (1, 16, 16, T)
    assert torch.isfinite(out["grad"]).all() and out["grad"].abs().max() > 0


def test_guided_run_moves_guided_steps_only_and_cfg_calls_are_the_hosts(pack, dit_model):
    name, model, pooled = dit_model
    recorder_key = keys.RECORDER_KEY
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
    pos, neg = conds(pooled)
    sampler = guided_sampler(pack, end_percent=0.5)
    out = sample(patch(pack, m), sampler, pos, neg, steps=4, callback=callback)
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


def test_zero_strength_is_the_base_sampler_bit_for_bit(pack, dit_model):
    name, model, pooled = dit_model
    pos, neg = conds(pooled)
    base = sample(model, comfy.samplers.sampler_object("euler"), pos, neg)
    off = sample(patch(pack, model), guided_sampler(pack, strength=0.0), pos, neg)
    guided = sample(patch(pack, model), guided_sampler(pack), pos, neg)
    assert torch.equal(base, off)
    assert not torch.allclose(base, guided)
