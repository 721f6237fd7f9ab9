"""Attention maps before and after each guided update, and the preview node's tiles: the run
they show is the one that made the latent wired to the node."""
import pytest
import torch

import comfy.sample
import comfy.samplers

from ai_t2i_pack.nodes import preview_notice as notice
from ai_t2i_pack.nodes.host import errors, guided_run
from runner import encode, guided_sampler, patch, plain, run


def _record_after(pack, sampler):
    with torch.inference_mode():
        return pack.nodes.AIT2IRecordMapsAfter.execute(sampler=sampler).result[0]


@pytest.fixture(scope="module")
def prompt(pack, sd15_small):
    model, clip = sd15_small
    return patch(pack, model), encode(pack, clip, "a photo of a cat and a dog", "cat, dog"), plain(clip)


@pytest.fixture(scope="module")
def moved(pack, prompt):
    """A guided run (4 steps, 2 guided, batch 2) recording maps after the updates; its output."""
    model, pos, neg = prompt
    sampler = _record_after(pack, guided_sampler(pack, strength=50.0))
    return sampler, run(model, sampler, pos, neg, size=32, steps=4, batch=2)


def _max_change(record):
    return max(float((record.maps_after[k] - record.maps[k]).abs().max()) for k in record.maps)


def test_plain_guided_run_records_no_after_maps(pack, prompt, monkeypatch):
    monkeypatch.setattr(guided_run.GuidedRun, "_maps_after", lambda *a: pytest.fail("after-maps pass in a plain run"))
    model, pos, neg = prompt
    sampler = guided_sampler(pack)
    run(model, sampler, pos, neg, size=32, steps=2)
    record = sampler.runs.latest()
    assert list(record.maps) == [0] and record.maps_after == {}


def test_before_and_after_maps(pack, prompt, moved):
    """After-maps exist for every guided step, have the before-maps' shape, and differ
    from them when the update moved the latent; when the update is (almost) nil, the
    after-pass reproduces the before-maps."""
    rec = moved[0].runs.latest()
    assert sorted(rec.maps_after) == sorted(rec.maps) == [0, 1]
    for k in rec.maps:
        assert rec.maps_after[k].shape == rec.maps[k].shape == (2, 2, 16, 16)
        assert torch.isfinite(rec.maps_after[k]).all()
    model, pos, neg = prompt
    still = _record_after(pack, guided_sampler(pack, strength=1e-9))
    run(model, still, pos, neg, size=32, steps=2, batch=2)
    assert list(still.runs.latest().maps_after) == [0]
    noise_floor = _max_change(still.runs.latest())
    assert noise_floor < 1e-6
    # Maps of this random-weight model are near uniform (about 1/77 per token): changes are small.
    assert _max_change(rec) > max(100 * noise_floor, 1e-6)


def test_maps_node_shows_before_and_after(pack, moved):
    sampler, samples = moved
    images = torch.rand(2, 48, 40, 3)
    out = pack.nodes.AIT2IAttentionMaps.execute(sampler=sampler, samples={"samples": samples}, steps="first, last",
                                                images=images)
    tiles = out.result[0]
    assert tiles.shape == (2 * 2 * 2 * 2, 48, 40, 3)  # steps x (before, after) x images x subjects
    legend = out.ui["text"][0].splitlines()
    assert legend[1].startswith("step 0 before") and legend[2].startswith("step 0 after")
    assert legend[3].startswith("step 1 before") and legend[1].endswith("image 1 cat, image 1 dog")
    assert not torch.equal(tiles[:4], tiles[4:8])  # before and after tiles come from different maps
    with pytest.raises(ValueError, match="Guided Sampler"):
        pack.nodes.AIT2IRecordMapsAfter.execute(sampler=object())


def _maps_node(pack, sampler, samples, steps="first, last", images=None):
    return pack.nodes.AIT2IAttentionMaps.execute(sampler=sampler, samples={"samples": samples}, steps=steps,
                                                 images=images)


def test_samples_from_elsewhere_fail_loudly(pack, prompt):
    """The maps node shows the run that made the latent wired to it. Samples another sampler
    made, or a latent changed after the run, name the wire to connect instead of showing
    another run's maps."""
    model, pos, neg = prompt
    ours, other = guided_sampler(pack), guided_sampler(pack)
    ours_out = run(model, ours, pos, neg, size=32, steps=2)
    other_out = run(model, other, pos, neg, size=32, steps=2, seed=2)
    assert _maps_node(pack, ours, ours_out).result[0].shape[0] == 2
    changed = ours_out.clone()
    changed[0, 0, 0, 0] += 1e-3
    for samples in (other_out, changed, ours_out[:, :, :8]):
        with pytest.raises(errors.GuidanceError, match="did not come from a run of this AI-T2I Guided Sampler: "
                                                       "connect the 'output' LATENT"):
            _maps_node(pack, ours, samples)
    with pytest.raises(ValueError, match="not an 'AI-T2I Guided Sampler'"):
        _maps_node(pack, object(), ours_out)


def test_one_sampler_in_two_sampler_nodes_gives_each_its_own_maps(pack, prompt):
    """One Guided Sampler used by two SamplerCustom nodes (seeds 1 and 2): each output's maps
    are those of a fresh sampler run on that seed alone, whichever ran last."""
    model, pos, neg = prompt
    shared = guided_sampler(pack)
    first = run(model, shared, pos, neg, size=32, steps=2, seed=1)
    second = run(model, shared, pos, neg, size=32, steps=2, seed=2)
    tiles = [_maps_node(pack, shared, out).result for out in (first, second)]
    for seed, (maps, log_text) in zip((1, 2), tiles):
        alone = guided_sampler(pack)
        out = run(model, alone, pos, neg, size=32, steps=2, seed=seed)
        expected_maps, expected_log = _maps_node(pack, alone, out).result
        torch.testing.assert_close(maps, expected_maps, rtol=0, atol=0)
        assert log_text == expected_log
    assert not torch.equal(tiles[0][0], tiles[1][0])


def test_non_square_latent_gives_tiles_of_its_shape(pack, prompt):
    """A 24 x 16 latent (tall): without images the tiles keep its 3:2 aspect ratio, longer
    side 256, instead of being stretched to a 256 x 256 square."""
    model, pos, neg = prompt
    sampler = guided_sampler(pack)
    latent = torch.zeros(1, 4, 24, 16)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2)
    with torch.inference_mode():
        out = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 1), 5.0, sampler, sigmas, pos, neg,
                                         latent, seed=1, disable_pbar=True)
    tiles = _maps_node(pack, sampler, out).result[0]
    assert tiles.shape == (2, 256, 171, 3)
    h, w = sampler.runs.latest().map_size
    assert h * 2 == w * 3  # the maps have the latent's shape


def test_unguided_run_shows_a_notice_not_an_error(pack, prompt):
    """Strength 0 guides no step: the maps node returns one tile saying so (the images' size)
    and the loss log says the same; the KSampler's record carries the same reason."""
    model, pos, neg = prompt
    for sampler, reason in ((guided_sampler(pack, strength=0.0), "no step was guided (strength 0)"),
                            (guided_sampler(pack, start_percent=0.3, end_percent=0.3),
                             "no step was guided (the range 0.30..0.30 holds none of the 2 steps)")):
        out = run(model, sampler, pos, neg, size=32, steps=2)
        images = torch.rand(1, 48, 40, 3)
        result = _maps_node(pack, sampler, out, steps="0, 5", images=images)
        tile, log_text = result.result
        torch.testing.assert_close(tile, notice.notice_tile("AI-T2I: " + reason, (48, 40)), rtol=0, atol=0)
        assert log_text == "AI-T2I: " + reason and result.ui["text"] == [log_text]
        ink = (tile - torch.tensor(notice.BACKGROUND) / 255).abs().amax(dim=-1) > 0.5
        assert 0.01 < ink.float().mean() < 0.5  # text drawn, not a blank or black tile
        assert sampler.runs.latest().unguided_reason == reason
