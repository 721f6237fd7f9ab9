import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from ai_t2i_attention import (LOSSES, PRESETS, LossWeights, Preset, SubjectMaps, TokenGroups, centroid,
                              configured_preset, subject_maps)
from ai_t2i_attention.losses import (TERMS, aggregation_term, attribute_term, isolation_term, presence_term,
                                     weighted_terms)
from ai_t2i_attention.regions import pixel_grid

H = W = 16
GRID = pixel_grid(H, W)
DIAG = math.sqrt(15 ** 2 + 15 ** 2)


def render(centres, amps, sigma=1.5):
    """Differentiable sum-free Gaussian blobs: centres (..., n, 2), amps (n,) -> (..., n, H, W)."""
    d2 = ((GRID - centres[..., None, None, :]) ** 2).sum(-1)
    return amps[..., None, None] * torch.exp(-d2 / (2 * sigma ** 2))


def make_maps(raw, smoothed=None, attribute=None, attribute_of=()):
    b = raw.shape[0]
    if attribute is None:
        attribute = raw.new_zeros(b, 0, *raw.shape[2:])
    return SubjectMaps(raw, raw if smoothed is None else smoothed, attribute, tuple(attribute_of))


def deltas(points, b=1):
    """(len(points) subjects) maps with one pixel each: points = [[(y, x, v), ...] per subject]."""
    m = torch.zeros(b, len(points), H, W)
    for s, pts in enumerate(points):
        for y, x, v in pts:
            m[:, s, y, x] = v
    return m


def descend(params, loss_fn, lr, steps):
    for _ in range(steps):
        loss = loss_fn()
        (g,) = torch.autograd.grad(loss.sum(), params)
        assert torch.isfinite(g).all()
        with torch.no_grad():
            params -= lr * g


# ---------------------------------------------------------------- hand-computed values

def test_aggregation_value_by_hand():
    # peak (2,2), second (2,12), third (12,2): (0 + 10 + 10 + ||c2 - c3||) / D
    raw = deltas([[(2, 2, 1.0), (2, 12, 0.8), (12, 2, 0.6)]])
    got = aggregation_term(make_maps(raw), LossWeights())
    expected = (0 + 10 + 10 + math.sqrt(200)) / DIAG
    torch.testing.assert_close(got, torch.tensor([expected]))
    # one blob only: the other regions are exhausted and do not count
    single = deltas([[(4, 4, 1.0)]])
    torch.testing.assert_close(aggregation_term(make_maps(single), LossWeights()), torch.tensor([0.0]))


def test_aggregation_sums_over_subjects():
    a = [(2, 2, 1.0), (2, 12, 0.8)]
    b = [(12, 12, 1.0), (12, 6, 0.5)]
    both = aggregation_term(make_maps(deltas([a, b])), LossWeights())
    one = aggregation_term(make_maps(deltas([a])), LossWeights()) + aggregation_term(make_maps(deltas([b])), LossWeights())
    torch.testing.assert_close(both, one)
    torch.testing.assert_close(both, torch.tensor([(10 + 6) / DIAG]))


def test_isolation_euclidean_and_cosine_values_by_hand():
    raw = deltas([[(0, 0, 1.0)], [(15, 15, 2.0)]])
    euc = isolation_term(make_maps(raw), LossWeights())
    torch.testing.assert_close(euc, torch.tensor([1 - math.sqrt(450) / math.sqrt(512)]))
    cos = isolation_term(make_maps(raw), LossWeights(isolation_metric="cosine"))
    torch.testing.assert_close(cos, torch.tensor([0.0]))  # disjoint maps: cos = 0, distance 1
    same = deltas([[(5, 5, 1.0)], [(5, 5, 3.0)]])
    torch.testing.assert_close(isolation_term(make_maps(same), LossWeights(isolation_metric="cosine")), torch.tensor([1.0]))
    torch.testing.assert_close(isolation_term(make_maps(same), LossWeights()), torch.tensor([1.0]))
    # a single subject has no pair: zero, not an error
    torch.testing.assert_close(isolation_term(make_maps(deltas([[(5, 5, 1.0)]])), LossWeights()), torch.tensor([0.0]))


def test_isolation_is_mean_over_pairs():
    raw = deltas([[(0, 0, 1.0)], [(0, 15, 1.0)], [(15, 0, 1.0)]])
    n = math.sqrt(512)
    expected = ((1 - 15 / n) + (1 - 15 / n) + (1 - math.sqrt(450) / n)) / 3
    torch.testing.assert_close(isolation_term(make_maps(raw), LossWeights()), torch.tensor([expected]))


def test_presence_value_by_hand():
    sm = torch.zeros(2, 2, H, W)
    sm[0, 0, 3, 3], sm[0, 1, 9, 9] = 0.3, 0.8
    sm[1, 0, 3, 3], sm[1, 1, 9, 9] = 1.2, 1.5  # above 1: clamped to zero loss
    got = presence_term(make_maps(torch.zeros(2, 2, H, W), smoothed=sm), LossWeights())
    torch.testing.assert_close(got, torch.tensor([0.7, 0.0]))


def test_attribute_value_by_hand():
    raw = deltas([[(2, 2, 1.0)]])
    attr = deltas([[(2, 12, 1.0), (12, 2, 0.5)]])
    got = attribute_term(make_maps(raw, attribute=attr, attribute_of=(0,)), LossWeights())
    # two regions, 10 px from the subject peak each; the third is exhausted (no c2-c3 pair term)
    torch.testing.assert_close(got, torch.tensor([20 / DIAG]))
    # no pairs -> zero
    torch.testing.assert_close(attribute_term(make_maps(raw), LossWeights()), torch.tensor([0.0]))


def test_ai_t2i_total_is_the_weighted_sum():
    g = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 3, H, W, generator=g)
    sm = torch.rand(2, 3, H, W, generator=g)
    attr = torch.rand(2, 1, H, W, generator=g)
    maps = make_maps(raw, smoothed=sm, attribute=attr, attribute_of=(1,))
    w = LossWeights()
    out = LOSSES["ai_t2i"](maps, w)
    assert set(out) == {"isolation", "aggregation", "presence", "attribute", "total"}
    expected = 2.0 * isolation_term(maps, w) + 1.25 * aggregation_term(maps, w) \
        + 0.25 * presence_term(maps, w) + 0.75 * attribute_term(maps, w)
    torch.testing.assert_close(out["total"], expected)
    for name in ("isolation", "aggregation", "presence", "attribute"):
        torch.testing.assert_close(out[name], TERMS[name](maps, w))
    # a zero weight drops the term entirely
    out0 = weighted_terms(maps, LossWeights(isolation=0.0), ("isolation", "aggregation"))
    assert "isolation" not in out0
    torch.testing.assert_close(out0["total"], 1.25 * aggregation_term(maps, w))
    ae = LOSSES["attend_and_excite"](maps, w)
    torch.testing.assert_close(ae["total"], presence_term(maps, w))


# ---------------------------------------------------------------- optimisation behaviour

def _spread_from_peak(m):
    """Mean distance of the activation mass from the map's arg-max pixel."""
    i = int(m.argmax())
    p = torch.tensor([i // W, i % W], dtype=torch.float32)
    return float(((GRID - p).norm(dim=-1) * m).sum() / m.sum())


def test_aggregation_pulls_secondary_blobs_to_main_peak():
    # One subject drawn as three separated blobs (scattered activation).
    centres = torch.tensor([[4.0, 4.0], [12.0, 12.0], [4.0, 12.0]], requires_grad=True)
    amps = torch.tensor([1.0, 0.6, 0.5])
    w = LossWeights(isolation=0.0, presence=0.0, attribute=0.0)

    def loss():
        m = render(centres, amps).sum(0)
        return LOSSES["ai_t2i"](make_maps(m[None, None]), w)["total"]

    m0 = render(centres, amps).sum(0).detach()
    spread0, loss0 = _spread_from_peak(m0), float(loss().detach())
    sep0 = torch.pdist(centres.detach()).mean()
    descend(centres, loss, lr=5.0, steps=20)
    m1 = render(centres, amps).sum(0).detach()
    spread1 = _spread_from_peak(m1)
    sep1 = torch.pdist(centres.detach()).mean()
    assert spread1 < 0.85 * spread0, (spread0, spread1)
    assert sep1 < 0.7 * sep0, (sep0, sep1)
    assert float(loss().detach()) < 0.85 * loss0
    # both secondary blobs came closer to the main blob
    d0 = torch.tensor([[12.0, 12.0], [4.0, 12.0]]) - torch.tensor([4.0, 4.0])
    d1 = centres.detach()[1:] - centres.detach()[0]
    assert (d1.norm(dim=-1) < d0.norm(dim=-1) - 1.0).all(), d1


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_isolation_separates_overlapping_subjects(metric):
    centres = torch.tensor([[7.0, 6.0], [8.0, 9.0]], requires_grad=True)  # two overlapping subjects
    amps = torch.ones(2)
    w = LossWeights(isolation_metric=metric)

    def loss():
        return isolation_term(make_maps(render(centres, amps)[None]), w)

    def measures():
        m = render(centres.detach(), amps)
        c = centroid(m)
        return float((c[0] - c[1]).norm()), float(F.cosine_similarity(m[0].flatten(), m[1].flatten(), dim=0))

    dist0, cos0 = measures()
    loss0 = float(loss().detach())
    descend(centres, loss, lr=5.0, steps=10)
    dist1, cos1 = measures()
    assert float(loss().detach()) < loss0
    assert dist1 > dist0 + 2.0, (dist0, dist1)
    assert cos1 < 0.5 * cos0, (cos0, cos1)


def test_presence_raises_weakest_subject_peak():
    # Real pipeline: (B, H, W, T) probabilities -> subject_maps -> presence.
    t = 20  # 0 start, 1..5 text, 6 end, 7.. pad; start takes most of the attention, as in SD
    groups = TokenGroups(subjects=((2,), (4,)), text_columns=(1, 2, 3, 4, 5))
    logits = torch.zeros(1, H, W, t)
    logits[..., 0] = 5.0
    logits[..., 2] += 1.0 * (GRID[..., 1] < 8)  # "cat" attended in the left half
    logits[..., 4] -= 0.5  # "dog" neglected
    logits.requires_grad_(True)

    def maps():
        return subject_maps(logits.softmax(-1), groups)

    def loss():
        return presence_term(maps(), LossWeights())

    peaks0 = maps().smoothed.flatten(2).amax(-1).detach()[0]
    assert peaks0[1] < peaks0[0]
    loss0 = float(loss().detach())
    descend(logits, loss, lr=10.0, steps=20)
    peaks1 = maps().smoothed.flatten(2).amax(-1).detach()[0]
    assert peaks1[1] > peaks0[1] + 0.3, (peaks0, peaks1)
    assert peaks1.min() > peaks0.min() + 0.3
    assert float(loss().detach()) < loss0 - 0.3


def test_attribute_pulls_attribute_map_to_subject_peak():
    subject = render(torch.tensor([[4.0, 4.0]]), torch.ones(1))  # (1, H, W), fixed
    centre = torch.tensor([[11.0, 11.0]], requires_grad=True)  # "red" lands elsewhere
    anchor = torch.tensor([4.0, 4.0])

    def attr():
        return render(centre, torch.ones(1))

    def loss():
        return attribute_term(make_maps(subject[None], attribute=attr()[None], attribute_of=(0,)), LossWeights())

    dist0 = float((centroid(attr().detach())[0] - anchor).norm())
    loss0 = float(loss().detach())
    descend(centre, loss, lr=5.0, steps=12)
    dist1 = float((centroid(attr().detach())[0] - anchor).norm())
    assert dist1 < 0.5 * dist0, (dist0, dist1)
    assert float(loss().detach()) < loss0


# ---------------------------------------------------------------- general properties

def _random_pipeline(s, b=2, seed=0, attributes=True, requires_grad=True):
    t = 24
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, H, W, t, generator=g) * 1.5)
    logits[..., 0] += 4.0
    logits.requires_grad_(requires_grad)
    subjects = tuple((c,) for c in range(1, s + 1))
    attrs = (((s + 1,), 0), ((s + 2, s + 3), s - 1)) if attributes else ()
    groups = TokenGroups(subjects=subjects, attributes=attrs, text_columns=tuple(range(1, s + 5)))
    return logits, groups


@pytest.mark.parametrize("s", range(2, 9))
def test_any_number_of_subjects_finite_loss_and_gradient(s):
    logits, groups = _random_pipeline(s, seed=s)
    maps = subject_maps(logits.softmax(-1), groups)
    assert maps.raw.shape == (2, s, H, W)
    for metric in ("euclidean", "cosine"):
        for name, fn in LOSSES.items():
            out = fn(maps, LossWeights(isolation_metric=metric))
            assert out["total"].shape == (2,)
            assert torch.isfinite(out["total"]).all()
            (grad,) = torch.autograd.grad(out["total"].sum(), logits, retain_graph=True)
            assert torch.isfinite(grad).all()
            assert grad.abs().sum() > 0, name


def test_degenerate_maps_give_finite_gradients():
    cases = [torch.zeros(2, 3, H, W), torch.full((2, 3, H, W), 1 / 256)]
    same = torch.zeros(2, 3, H, W)
    same[:, :, 5, 5] = 1.0  # three subjects on the same single pixel
    cases.append(same)
    for m in cases:
        for metric in ("euclidean", "cosine"):
            raw = m.clone().requires_grad_(True)
            attr = m[:, :1].clone().requires_grad_(True)
            out = LOSSES["ai_t2i"](make_maps(raw, attribute=attr, attribute_of=(2,)), LossWeights(isolation_metric=metric))
            assert torch.isfinite(out["total"]).all()
            for gr in torch.autograd.grad(out["total"].sum(), (raw, attr)):
                assert torch.isfinite(gr).all()


def test_batch_images_are_independent():
    logits, groups = _random_pipeline(3, b=2, seed=7, requires_grad=False)
    for metric in ("euclidean", "cosine"):
        w = LossWeights(isolation_metric=metric)
        base = LOSSES["ai_t2i"](subject_maps(logits.softmax(-1), groups), w)
        changed = logits.clone()
        changed[1] = torch.flip(changed[1], dims=(0,)) * 2.0
        other = LOSSES["ai_t2i"](subject_maps(changed.softmax(-1), groups), w)
        for k in base:
            torch.testing.assert_close(other[k][0], base[k][0])
        assert (other["total"][1] - base["total"][1]).abs() > 1e-4
        # and no gradient from image 0's loss reaches image 1
        x = logits.clone().requires_grad_(True)
        out = LOSSES["ai_t2i"](subject_maps(x.softmax(-1), groups), w)
        (grad,) = torch.autograd.grad(out["total"][0], x)
        assert float(grad[1].abs().sum()) == 0.0 and float(grad[0].abs().sum()) > 0
        # and image 0 alone gives the same loss as in the batch
        single = LOSSES["ai_t2i"](subject_maps(logits[:1].softmax(-1), groups), w)
        torch.testing.assert_close(single["total"], base["total"][:1])


def test_registry_signature_and_total_shape():
    maps = make_maps(torch.rand(3, 2, H, W), attribute=torch.rand(3, 1, H, W), attribute_of=(0,))
    assert {"ai_t2i", "attend_and_excite"} <= set(LOSSES)
    for name, fn in LOSSES.items():
        params = list(inspect.signature(fn).parameters)
        assert params == ["maps", "w"], (name, params)
        out = fn(maps, LossWeights())
        assert isinstance(out, dict) and "total" in out
        for k, v in out.items():
            assert v.shape == (3,), (name, k, v.shape)


def test_presets_are_valid():
    assert "AI-T2I" in PRESETS and "Attend-and-Excite" in PRESETS
    maps = make_maps(torch.rand(1, 2, H, W))
    for name, p in PRESETS.items():
        assert isinstance(p, Preset) and isinstance(p.weights, LossWeights) and isinstance(p.refine, bool)
        assert p.refinement is not None or not p.refine, name
        assert p.loss in LOSSES, name
        assert p.weights.isolation_metric in ("euclidean", "cosine")
        out = LOSSES[p.loss](maps, p.weights)
        assert torch.isfinite(out["total"]).all()
    assert PRESETS["AI-T2I"].weights == LossWeights()
    assert PRESETS["AI-T2I"].refine is False and PRESETS["Attend-and-Excite"].refine is True
    assert PRESETS["Attend-and-Excite"].refinement.points == {0.0: 0.05, 0.2: 0.5, 0.4: 0.8}
    assert PRESETS["Attend-and-Excite"].refinement.test == "presence"
    assert "isolation" not in LOSSES["ai_t2i"](maps, PRESETS["AI-T2I aggregation only"].weights)
    assert "aggregation" not in LOSSES["ai_t2i"](maps, PRESETS["AI-T2I isolation only"].weights)
    d = LossWeights()
    assert (d.isolation, d.aggregation, d.presence, d.attribute) == (2.0, 1.25, 0.25, 0.75)
    assert (d.region_count, d.radius, d.attribute_region_count, d.attribute_radius) == (3, 5.0, 3, 6.0)


def test_configured_preset_overrides_and_unknown():
    p = configured_preset("AI-T2I", isolation=1.0, isolation_metric="cosine")
    assert p.weights.isolation == 1.0 and p.weights.isolation_metric == "cosine"
    assert p.weights.aggregation == 1.25 and p.loss == "ai_t2i"
    assert PRESETS["AI-T2I"].weights.isolation == 2.0  # the registry itself is untouched
    with pytest.raises(ValueError, match="unknown method"):
        configured_preset("nope")


def test_unknown_isolation_metric_raises():
    maps = make_maps(torch.rand(1, 2, H, W))
    with pytest.raises(ValueError, match="isolation metric"):
        isolation_term(maps, LossWeights(isolation_metric="manhattan"))
    with pytest.raises(ValueError):
        LOSSES["ai_t2i"](maps, LossWeights(isolation_metric="manhattan"))


def test_radius_scales_with_map_side():
    w = LossWeights()
    assert w.scaled_radius(5.0, 16) == 5.0 and w.scaled_radius(5.0, 32) == 10.0
    # The same layout on a 32x32 map (coordinates doubled) gives the same normalised loss.
    small = deltas([[(2, 2, 1.0), (2, 12, 0.8), (12, 2, 0.6)]])
    big = torch.zeros(1, 1, 32, 32)
    big[0, 0, 4, 4], big[0, 0, 4, 24], big[0, 0, 24, 4] = 1.0, 0.8, 0.6
    a = aggregation_term(make_maps(small), w)
    b = aggregation_term(make_maps(big), w)
    torch.testing.assert_close(b, a * (2 * DIAG) / math.sqrt(31 ** 2 * 2), rtol=1e-5, atol=1e-6)
