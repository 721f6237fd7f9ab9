"""Every preset's declared contract holds: its refinement's test term is one its loss
returns, and it reads layout regions exactly when it says so."""

import pytest
import torch

from ai_t2i_attention import LOSSES, PRESETS, SubjectMaps

H = W = 16


def _maps(regions=None, previous=True):
    g = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 2, H, W, generator=g)
    smoothed = torch.rand(2, 2, H, W, generator=g)
    attribute = torch.rand(2, 1, H, W, generator=g)
    prev = torch.rand(2, 2, H, W, generator=g) if previous else None
    return SubjectMaps(raw, smoothed, attribute, (0,), regions=regions, attribute_smoothed=attribute, previous=prev)


def _regions():
    r = torch.zeros(1, 2, H, W)
    r[:, 0, :, :8] = 1.0
    r[:, 1, :, 8:] = 1.0
    return r


@pytest.mark.parametrize("name", list(PRESETS))
def test_refinement_test_term_is_returned_by_the_loss(name):
    p = PRESETS[name]
    if p.refinement is None:
        assert not p.refine, f"{name} refines by default but declares no refinement"
        return
    for previous in (False, True):  # first guided step, and later ones
        terms = LOSSES[p.loss](_maps(previous=previous), p.weights)
        if p.refinement.test is None:
            assert all(t is None for t in p.refinement.points.values()), f"{name}: a fixed count reads no threshold"
        else:
            assert p.refinement.test in terms, f"{name} refines on {p.refinement.test!r}, its loss returns {sorted(terms)}"
            assert all(0.0 < t <= 1.0 for t in p.refinement.points.values()), name


@pytest.mark.parametrize("name", list(PRESETS))
def test_reads_regions_is_what_the_loss_does(name):
    p = PRESETS[name]
    plain = LOSSES[p.loss](_maps(), p.weights)["total"]
    laid_out = LOSSES[p.loss](_maps(regions=_regions()), p.weights)["total"]
    changed = not torch.allclose(plain, laid_out)
    assert changed == p.reads_regions, f"{name} declares reads_regions={p.reads_regions} but regions " \
                                       f"{'change' if changed else 'do not change'} its loss"
