"""Attention maps before and after each guided update, and the preview node's tiles."""
import pytest
import torch

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
    from importlib import import_module
    sampling = import_module(pack.__name__ + ".nodes.host.sampling")
    monkeypatch.setattr(sampling.GuidedRun, "_maps_after", lambda *a: pytest.fail("after-maps pass in a plain run"))
    model, pos, neg = prompt
    sampler = guided_sampler(pack)
    run(model, sampler, pos, neg, size=32, steps=2)
    assert list(sampler.last_run.maps) == [0] and sampler.last_run.maps_after == {}


def test_before_and_after_maps(pack, prompt, moved):
    """After-maps exist for every guided step, have the before-maps' shape, and differ
    from them when the update moved the latent; when the update is (almost) nil, the
    after-pass reproduces the before-maps."""
    rec = moved[0].last_run
    assert sorted(rec.maps_after) == sorted(rec.maps) == [0, 1]
    for k in rec.maps:
        assert rec.maps_after[k].shape == rec.maps[k].shape == (2, 2, 16, 16)
        assert torch.isfinite(rec.maps_after[k]).all()
    model, pos, neg = prompt
    still = _record_after(pack, guided_sampler(pack, strength=1e-9))
    run(model, still, pos, neg, size=32, steps=2, batch=2)
    assert list(still.last_run.maps_after) == [0]
    noise_floor = _max_change(still.last_run)
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
