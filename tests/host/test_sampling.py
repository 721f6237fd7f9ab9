"""The guided sampler on a real host UNet: exactness when off, effect when on."""
import pytest
import torch

import comfy.samplers
from runner import encode, guided_sampler, patch, plain, run


@pytest.fixture(scope="module")
def setup(pack, sd15_small):
    model, clip = sd15_small
    return patch(pack, model), model, encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip)


@pytest.mark.parametrize("base", ["euler", "dpmpp_2m", "euler_ancestral", "heun"])
def test_zero_strength_reproduces_base_sampler(pack, setup, base):
    patched, model, pos, neg = setup
    reference = run(model, comfy.samplers.sampler_object(base), pos, neg, size=16, steps=4, seed=3)
    off = run(patched, guided_sampler(pack, base, strength=0.0), pos, neg, size=16, steps=4, seed=3)
    empty_range = run(patched, guided_sampler(pack, base, end_percent=0.0), pos, neg, size=16, steps=4, seed=3)
    assert torch.equal(reference, off)
    assert torch.equal(reference, empty_range)


def _centroid_terms(engine, raw: torch.Tensor) -> tuple[float, float, float]:
    """(isolation, aggregation, centroid distance) of (1, 2, H, W) raw subject maps: the loss's
    terms that read the raw maps alone, and the distance between the subjects' centroids."""
    maps = engine.SubjectMaps(raw, raw, raw.new_zeros(1, 0, *raw.shape[2:]), ())
    w = engine.LossWeights()
    c = engine.centroid(raw)[0]
    return (float(engine.losses.isolation_term(maps, w)), float(engine.losses.aggregation_term(maps, w)),
            float((c[0] - c[1]).norm()))


def test_guidance_changes_output(pack, setup):
    """Strength 0 gives the plain sampler's output bit for bit; at strength 1 each guided update
    moves the latent the way the loss says: at the updated latent (same sigma) the two
    subjects' centroids are further apart, and the centroid terms (isolation + aggregation,
    weighted) are lower than at the latent before it."""
    from importlib import import_module
    engine = import_module(pack.__name__ + ".ai_t2i_attention")
    patched, model, pos, neg = setup
    reference = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=16, steps=4)
    assert torch.equal(run(patched, guided_sampler(pack, strength=0.0), pos, neg, size=16, steps=4), reference)
    with torch.inference_mode():
        sampler = pack.nodes.AIT2IRecordMapsAfter.execute(sampler=guided_sampler(pack)).result[0]
    guided = run(patched, sampler, pos, neg, size=16, steps=4)
    assert torch.isfinite(guided).all() and not torch.allclose(reference, guided)
    record = sampler.runs.latest()
    assert sorted(record.maps) == sorted(record.maps_after) == [0, 1]
    w = engine.LossWeights()
    for report in record.reports:
        iso, agg, apart = _centroid_terms(engine, record.maps[report.step])
        # The recorded maps are the ones the step's loss read: its terms come out the same.
        assert iso == pytest.approx(report.losses["isolation"], rel=1e-5)
        assert agg == pytest.approx(report.losses["aggregation"], rel=1e-5)
        iso_after, agg_after, apart_after = _centroid_terms(engine, record.maps_after[report.step])
        assert apart_after > apart, (report.step, apart, apart_after)
        assert w.isolation * iso_after + w.aggregation * agg_after < w.isolation * iso + w.aggregation * agg


def test_one_guided_step_lowers_the_loss(pack, setup):
    """Two steps at the same sigma: euler's dt is 0 between them, so the only change to
    the latent is the guided update, and the second step's loss is at the updated latent."""
    patched, _, pos, neg = setup
    ms = patched.get_model_object("model_sampling")
    s = float(comfy.samplers.calculate_sigmas(ms, "normal", 10)[2])
    sigmas = torch.tensor([s, s, 0.0])
    sampler = guided_sampler(pack, end_percent=1.0, scale_factor=2.0)
    run(patched, sampler, pos, neg, size=16, sigmas=sigmas)
    before, after = (r.losses["total"] for r in sampler.runs.latest().reports)
    assert after < before


@pytest.mark.parametrize("base", ["dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "heun", "dpmpp_sde", "lms", "uni_pc"])
def test_guides_every_scheduled_step(pack, setup, base):
    patched, _, pos, neg = setup
    sampler = guided_sampler(pack, base, end_percent=0.5)
    out = run(patched, sampler, pos, neg, size=16, steps=6)
    assert torch.isfinite(out).all()
    assert [r.step for r in sampler.runs.latest().reports] == [0, 1, 2]


def test_stepwise_mode_never_repeats_a_seed(pack):
    """Samplers driven step by step get a distinct seed per call, so their noise never repeats."""
    from importlib import import_module
    guided_run = import_module(pack.__name__ + ".nodes.host.guided_run")
    drivers = import_module(pack.__name__ + ".nodes.host.drivers")
    run_ = guided_run.GuidedRun.__new__(guided_run.GuidedRun)
    run_.settings = guided_sampler(pack, "heun").settings
    run_.total_steps = 6
    run_.guided_steps = run_.settings.schedule.guided_steps(run_.total_steps)
    run_.update = lambda x, sigma, step, mo: x
    seeds = []

    def fake_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        seeds.append(extra_args["seed"])
        return x

    fn = drivers.step_by_step(fake_sampler, run_)
    fn(None, torch.zeros(1, 4, 8, 8), torch.linspace(1, 0, 7), extra_args={"seed": 5, "model_options": {}})
    assert seeds == [5, 6, 7, 8]  # steps 0, 1, 2 one by one, then the rest from step 3
    assert len(set(seeds)) == len(seeds)


def test_in_place_step_is_the_position_of_its_sigma(pack, setup):
    """In place, a model call's step is where its sigma stands in the sampler's sigmas; a
    sigma repeated at two positions is each in turn. A sampler calling the model at a sigma
    that is no step's (euler with churn) is refused by name instead of guiding a guessed step."""
    patched, _, pos, neg = setup
    ms = patched.get_model_object("model_sampling")
    s = float(comfy.samplers.calculate_sigmas(ms, "normal", 10)[2])
    sampler = guided_sampler(pack, end_percent=1.0)
    run(patched, sampler, pos, neg, size=16, sigmas=torch.tensor([s, s, 0.5 * s, 0.0]))
    assert [r.step for r in sampler.runs.latest().reports] == [0, 1, 2] and sorted(sampler.runs.latest().maps) == [0, 1, 2]
    from importlib import import_module
    sampling = import_module(pack.__name__ + ".nodes.host.sampling")
    euler = comfy.samplers.sampler_object("euler").sampler_function
    churn = sampling.GuidedSampler(comfy.samplers.KSAMPLER(euler, {"s_churn": 1.0}), guided_sampler(pack).settings)
    with pytest.raises(sampling.GuidanceError, match="none of its steps' sigmas"):
        run(patched, churn, pos, neg, size=16, steps=4)


def test_sampler_with_private_latent_copy_is_refused(pack, setup, monkeypatch):
    patched, _, pos, neg = setup
    from importlib import import_module
    sampling = import_module(pack.__name__ + ".nodes.host.sampling")
    drivers = import_module(pack.__name__ + ".nodes.host.drivers")
    euler = comfy.samplers.sampler_object("euler").sampler_function

    def sample_private_copy(model, x, sigmas, **kw):
        return euler(lambda z, s, **a: model(z.clone(), s, **a), x, sigmas, **kw)

    monkeypatch.setattr(drivers, "IN_PLACE_SAMPLERS", drivers.IN_PLACE_SAMPLERS | {"sample_private_copy"})
    sampler = sampling.GuidedSampler(comfy.samplers.KSAMPLER(sample_private_copy), guided_sampler(pack).settings)
    with pytest.raises(sampling.GuidanceError, match="private copy"):
        run(patched, sampler, pos, neg, size=16, steps=4)


def test_adaptive_sampler_refused(pack):
    with pytest.raises(Exception, match="chooses its own steps"):
        guided_sampler(pack, "dpm_adaptive")


def test_unpatched_model_and_plain_prompt_errors(pack, setup, sd15_small):
    patched, model, pos, neg = setup
    with pytest.raises(Exception, match="AI-T2I Attention Patch"):
        run(model, guided_sampler(pack), pos, neg, size=16, steps=2)
    with pytest.raises(Exception, match="AI-T2I Subject Prompt"):
        run(patched, guided_sampler(pack), neg, neg, size=16, steps=2)


def test_weights_become_grad_capable_without_changing_values(pack, sd15_small):
    from importlib import import_module
    grads = import_module(pack.__name__ + ".nodes.host.gradients")
    with torch.inference_mode():
        lin = torch.nn.Linear(3, 2)
    before = lin.weight.detach().clone()
    assert lin.weight.is_inference()
    converted = grads.make_grad_capable(lin)
    assert converted == (6 + 2) * 4
    assert not lin.weight.is_inference() and torch.equal(lin.weight, before)


def test_batch_guided_in_one_pass_matches_single(pack, setup):
    """Images of a batch are guided independently: image 0 of a batch of 2 equals the same
    seed's single image (noise for the batch is drawn as the host does, image by image)."""
    patched, _, pos, neg = setup
    single = run(patched, guided_sampler(pack), pos, neg, size=16, steps=4, seed=11, batch=1)
    batch = run(patched, guided_sampler(pack), pos, neg, size=16, steps=4, seed=11, batch=2)
    assert torch.allclose(single[0], batch[0], rtol=1e-4, atol=1e-3)


def test_fast_path_matches_straightforward_path(pack, setup):
    """Stopping the guidance forward after the last layer read, and running it on the host's
    fused attention kernel, changes the gradient by rounding only: the guided images of the
    two paths are far closer to each other than either is to the unguided image."""
    from dataclasses import replace
    patched, model, pos, neg = setup
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
    from importlib import import_module
    guidance_pass = import_module(pack.__name__ + ".nodes.host.guidance_pass")
    families = import_module(pack.__name__ + ".nodes.host.families")
    unet_hooks = import_module(pack.__name__ + ".nodes.host.unet_hooks")
    engine = import_module(pack.__name__ + ".ai_t2i_attention")
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
    from importlib import import_module

    import comfy.model_sampling as ms
    guidance_pass = import_module(pack.__name__ + ".nodes.host.guidance_pass")

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
