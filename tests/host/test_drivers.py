"""Driving a base sampler through a guided run (nodes/host/drivers.py): in place or step by
step, every scheduled step guided, a seed per step-by-step call, a sampler keeping a private
copy of the latent refused, a model call's step read from its sigma."""
import pytest
import torch

import comfy.samplers
from ai_t2i_pack.nodes.host import drivers, guided_run, sampling
from ai_t2i_pack.nodes.host.errors import GuidanceError
from runner import guided_sampler, run


@pytest.mark.parametrize("base", ["dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "heun", "dpmpp_sde", "lms", "uni_pc"])
def test_guides_every_scheduled_step(pack, sd15_prompt, base):
    patched, _, pos, neg = sd15_prompt
    sampler = guided_sampler(pack, base, end_percent=0.5)
    out = run(patched, sampler, pos, neg, size=16, steps=6)
    assert torch.isfinite(out).all()
    assert [r.step for r in sampler.runs.latest().reports] == [0, 1, 2]


def test_stepwise_mode_never_repeats_a_seed(pack):
    """Samplers driven step by step get a distinct seed per call, so their noise never repeats."""
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


def test_in_place_step_is_the_position_of_its_sigma(pack, sd15_prompt):
    """In place, a model call's step is where its sigma stands in the sampler's sigmas; a
    sigma repeated at two positions is each in turn. A sampler calling the model at a sigma
    that is no step's (euler with churn) is refused by name instead of guiding a guessed step."""
    patched, _, pos, neg = sd15_prompt
    ms = patched.get_model_object("model_sampling")
    s = float(comfy.samplers.calculate_sigmas(ms, "normal", 10)[2])
    sampler = guided_sampler(pack, end_percent=1.0)
    run(patched, sampler, pos, neg, size=16, sigmas=torch.tensor([s, s, 0.5 * s, 0.0]))
    record = sampler.runs.latest()
    assert [r.step for r in record.reports] == [0, 1, 2] and sorted(record.maps) == [0, 1, 2]
    euler = comfy.samplers.sampler_object("euler").sampler_function
    churn = sampling.GuidedSampler(comfy.samplers.KSAMPLER(euler, {"s_churn": 1.0}), guided_sampler(pack).settings)
    with pytest.raises(GuidanceError, match="none of its steps' sigmas"):
        run(patched, churn, pos, neg, size=16, steps=4)


def test_sampler_with_private_latent_copy_is_refused(pack, sd15_prompt, monkeypatch):
    patched, _, pos, neg = sd15_prompt
    euler = comfy.samplers.sampler_object("euler").sampler_function

    def sample_private_copy(model, x, sigmas, **kw):
        return euler(lambda z, s, **a: model(z.clone(), s, **a), x, sigmas, **kw)

    monkeypatch.setattr(drivers, "IN_PLACE_SAMPLERS", drivers.IN_PLACE_SAMPLERS | {"sample_private_copy"})
    sampler = sampling.GuidedSampler(comfy.samplers.KSAMPLER(sample_private_copy), guided_sampler(pack).settings)
    with pytest.raises(GuidanceError, match="private copy"):
        run(patched, sampler, pos, neg, size=16, steps=4)
