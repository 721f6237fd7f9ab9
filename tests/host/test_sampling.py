"""The guided sampler (nodes/host/sampling.py) end to end on a real host UNet: exactness
when off, the effect the method says when on, samplers it refuses."""
import pytest
import torch

import comfy.samplers
from ai_t2i_pack import ai_t2i_attention as engine
from runner import guided_sampler, run


@pytest.mark.parametrize("base", ["euler", "dpmpp_2m", "euler_ancestral", "heun"])
def test_zero_strength_reproduces_base_sampler(pack, sd15_prompt, base):
    patched, model, pos, neg = sd15_prompt
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


def test_guidance_changes_output(pack, sd15_prompt):
    """Strength 0 gives the plain sampler's output bit for bit; at strength 1 each guided update
    moves the latent the way the loss says: at the updated latent (same sigma) the two
    subjects' centroids are further apart, and the centroid terms (isolation + aggregation,
    weighted) are lower than at the latent before it."""
    patched, model, pos, neg = sd15_prompt
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


def test_adaptive_sampler_refused(pack):
    with pytest.raises(Exception, match="chooses its own steps"):
        guided_sampler(pack, "dpm_adaptive")
