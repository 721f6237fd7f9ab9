"""The baseline presets (Divide & Bind, A-STAR, CONFORM) end to end on a real host UNet."""
import pytest
import torch

import comfy.samplers
from runner import encode, guided_sampler, patch, plain, run, settings


@pytest.fixture(scope="module")
def setup(pack, sd15_small):
    model, clip = sd15_small
    pos = encode(pack, clip, "a red cat and a dog", "cat, dog", "red:cat")
    return patch(pack, model), model, pos, plain(clip)


@pytest.mark.parametrize("method", ["Divide & Bind", "A-STAR", "CONFORM"])
def test_baseline_preset_runs_and_changes_the_latent(pack, setup, method):
    patched, model, pos, neg = setup
    reference = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=16, steps=4)
    sampler = guided_sampler(pack, method=method)
    guided = run(patched, sampler, pos, neg, size=16, steps=4)
    assert torch.isfinite(guided).all()
    assert not torch.allclose(reference, guided)
    reports = sampler.last_run.reports
    assert [r.step for r in reports] == [0, 1]
    assert all(r.final_total is not None and not r.skipped for r in reports)
    if method == "A-STAR":  # retention reads the previous guided step's maps: none at the first step
        assert "retention" not in reports[0].losses and "retention" in reports[1].losses
    if method == "CONFORM":  # a fixed count of refinement updates at the refinement step
        assert reports[0].iterations == sampler.settings.schedule.max_refinement_iters + 1


def test_presets_bring_their_refinement_points(pack):
    assert settings(pack, method="Divide & Bind").schedule.refinement == {0.0: 0.05, 0.2: 0.2, 0.4: 0.3}
    assert settings(pack, method="A-STAR").schedule.refinement == {}
    assert settings(pack, method="Attend-and-Excite").schedule.refinement == {0.0: 0.05, 0.2: 0.5, 0.4: 0.8}
