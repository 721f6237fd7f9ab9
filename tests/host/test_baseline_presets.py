"""The baseline presets (Divide & Bind, A-STAR, CONFORM) end to end on a real host UNet."""
import pytest
import torch

import comfy.samplers
from ai_t2i_pack.nodes.host.errors import GuidanceError
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
    reports = sampler.runs.latest().reports
    assert [r.step for r in reports] == [0, 1]
    assert all(r.final_total is not None and not r.skipped for r in reports)
    if method == "A-STAR":  # retention reads the previous guided step's maps: none at the first step
        assert "retention" not in reports[0].losses and "retention" in reports[1].losses
    if method == "CONFORM":  # a fixed count of refinement updates at the refinement step
        assert reports[0].iterations == sampler.settings.preset.refinement.max_iters + 1


def refining_steps(settings, n=50) -> dict:
    """step -> threshold of every step of n on which the settings' preset refines."""
    targets = {i: settings.preset.refinement_at(i, n) for i in range(n)}
    return {i: t.threshold for i, t in targets.items() if t is not None}


def test_presets_bring_their_refinement_points(pack):
    assert refining_steps(settings(pack, method="Divide & Bind")) == {0: 0.05, 10: 0.2, 20: 0.3}
    assert refining_steps(settings(pack, method="A-STAR")) == {}
    assert refining_steps(settings(pack, method="Attend-and-Excite")) == {0: 0.05, 10: 0.5, 20: 0.8}


def test_refinement_on_for_a_method_without_one_is_an_error(pack):
    """A-STAR declares no refinement: 'on' is refused with a message, never a silent single pass."""
    with pytest.raises(GuidanceError, match="A-STAR has no iterative refinement.*'preset' or 'off'"):
        settings(pack, method="A-STAR", refinement="on")
    assert refining_steps(settings(pack, method="A-STAR", refinement="off")) == {}


def test_refinement_on_tests_the_declared_term(pack):
    """AI-T2I with refinement on refines on its presence term at Attend-and-Excite's points;
    CONFORM's refinement is a fixed count (no term decides)."""
    ai = settings(pack, method="AI-T2I", refinement="on")
    assert refining_steps(ai) == {0: 0.05, 10: 0.5, 20: 0.8} and ai.preset.refinement_at(10, 50).test == "presence"
    conform = settings(pack, method="CONFORM")
    assert refining_steps(conform) == {0: None, 10: None, 20: None} and conform.preset.refinement_at(0, 50).test is None
