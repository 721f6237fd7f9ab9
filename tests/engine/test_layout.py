import re
from dataclasses import replace

import pytest
import torch

from ai_t2i_attention import LOSSES, LayoutWeights, LossWeights, SubjectMaps
from ai_t2i_attention.layout_parse import (Box, LayoutError, SubjectLayout, assign_masks, box_coverage, check_mask,
                                           mask_to_size, parse_boxes)
from ai_t2i_attention.layout_terms import (fraction_inside, layout_inner_term, layout_outer_term, outside_regions,
                                           region_anchor, topk_mean)
from ai_t2i_attention.losses import aggregation_term
from ai_t2i_attention.regions import pixel_grid

H = W = 16
SUBJECTS = ("cat", "dog")


def blob(cy, cx, sigma=1.5, h=H, w=W):
    g = pixel_grid(h, w)
    return torch.exp(-((g - torch.stack([torch.as_tensor(cy), torch.as_tensor(cx)])) ** 2).sum(-1) / (2 * sigma ** 2))


def maps_of(smoothed, regions=None):
    b = smoothed.shape[0]
    return SubjectMaps(smoothed, smoothed, smoothed.new_zeros(b, 0, *smoothed.shape[2:]), (), regions)


# -- parsing --------------------------------------------------------------------------

def test_parse_fraction_boxes_by_subject_name():
    boxes = parse_boxes("Dog: 0.55 0.2 0.95 0.8;\n cat : 0.05, 0.2, 0.45, 0.8", SUBJECTS)
    assert boxes == {1: Box(0.55, 0.2, 0.95, 0.8), 0: Box(0.05, 0.2, 0.45, 0.8)}


def test_parse_pixel_boxes_needs_and_uses_image_size():
    assert parse_boxes("cat: 16 32 64 128 px", SUBJECTS, (128, 256)) == {0: Box(0.125, 0.125, 0.5, 0.5)}
    with pytest.raises(LayoutError, match="set width and height"):
        parse_boxes("cat: 16 32 64 128 px", SUBJECTS)
    with pytest.raises(LayoutError, match="outside the 128x128 image"):
        parse_boxes("cat: 16 32 164 128 px", SUBJECTS, (128, 128))


def test_subject_word_with_colon_and_occurrence_marks():
    assert parse_boxes("embedding:my_cat: 0 0 0.5 0.5", ("embedding:my_cat", "cat#2")) == {0: Box(0, 0, 0.5, 0.5)}
    assert parse_boxes("cat#2: 0.5 0 1 1", ("cat", "cat#2")) == {1: Box(0.5, 0, 1, 1)}


@pytest.mark.parametrize("text, message", [
    ("cat 0.1 0.2 0.3 0.4", "names no subject"),
    ("cat: 0.1 0.2 0.3", "four numbers"),
    ("cat: 0.1 0.2 0.3 0.4 0.5", "four numbers"),
    ("cat: a b c d", "four numbers"),
    ("cat: 0.5 0.2 0.3 0.4", r"x0 >= x1"),
    ("cat: 0.1 0.6 0.3 0.4", r"y0 >= y1"),
    ("cat: 0.1 0.2 1.3 0.4", "outside 0..1"),
    ("cat: -0.1 0.2 0.3 0.4", "outside 0..1"),
    ("horse: 0.1 0.2 0.3 0.4", "use one of: cat, dog"),
    ("cat: 0 0 0.5 1; cat: 0.5 0 1 1", "two boxes"),
])
def test_malformed_boxes_name_the_problem(text, message):
    with pytest.raises(LayoutError, match=message):
        parse_boxes(text, SUBJECTS)


def test_masks_are_checked():
    assert check_mask(torch.ones(8, 8), "mask_1").shape == (1, 8, 8)
    with pytest.raises(LayoutError, match="mask_1 is empty"):
        check_mask(torch.zeros(1, 8, 8), "mask_1")
    with pytest.raises(LayoutError, match="empty .*in image 1"):
        check_mask(torch.stack([torch.ones(8, 8), torch.zeros(8, 8)]), "mask_2")
    with pytest.raises(LayoutError, match="shape"):
        check_mask(torch.ones(1, 1, 8, 8), "mask_1")


# -- mask assignment ----------------------------------------------------------------------

THREE = ("cat", "dog", "bird")


def square(value=1.0, side=8):
    return torch.full((1, side, side), value)


def test_masks_go_to_the_subjects_in_slot_order_by_default():
    got = assign_masks(THREE, {1: square(), 2: None, 3: torch.ones(8, 8, dtype=torch.float16)})
    assert len(got) == 3 and got[1] is None
    assert got[0].shape == got[2].shape == (1, 8, 8) and got[2].dtype == torch.float32  # checked like any mask
    second = assign_masks(SUBJECTS, {1: None, 2: square()})
    assert second[0] is None and torch.equal(second[1], square())
    assert assign_masks(SUBJECTS, {}) == assign_masks(SUBJECTS, {1: None}, "dog") == (None, None)


def test_named_slots_choose_the_subject():
    dog, cat = square(1.0), square(0.5)
    got = assign_masks(SUBJECTS, {2: cat, 1: dog}, " Dog ,cat")  # case and spaces as typed
    assert torch.equal(got[0], cat) and torch.equal(got[1], dog)
    only_second = assign_masks(SUBJECTS, {1: None, 2: dog}, "cat, dog")
    assert only_second[0] is None and torch.equal(only_second[1], dog)
    # masks at the image size pass, given as (width, height)
    assert assign_masks(SUBJECTS, {1: torch.ones(1, 64, 128)}, "", (128, 64))[0].shape == (1, 64, 128)


@pytest.mark.parametrize("slots, names, size, message", [
    ({1: square(), 2: square()}, "dog", None,
     "mask_subjects names 1 subjects but mask_2 is connected: name one subject per mask slot, in the order mask_1, "
     "mask_2, ..."),
    ({3: square(), 1: square()}, "cat, dog", None,  # the highest connected slot is named, whatever the dict order
     "mask_subjects names 2 subjects but mask_3 is connected: name one subject per mask slot, in the order mask_1, "
     "mask_2, ..."),
    ({1: square()}, "horse", None,
     "mask_subjects (for mask_1) names subject 'horse', which is not a subject of the prompt; use one of: cat, dog"),
    ({3: square()}, "", None,
     "mask_3 is connected but the prompt has only 2 subjects: disconnect it or name its subject in mask_subjects"),
    ({2: square(0.0)}, "", None,
     "mask_2 (for 'dog') is empty (all zero): paint the subject's region white, or disconnect the mask"),
    ({1: torch.ones(1, 1, 8, 8)}, "", None,
     "mask_1 (for 'cat') has shape (1, 1, 8, 8); a mask is (height, width) or (batch, height, width): connect a "
     "MASK output"),
    ({1: torch.ones(1, 64, 128)}, "", (128, 128),
     "mask_1 is 128x64 px but width x height is 128x128: make the mask at the image's size"),
    ({1: square(), 2: square()}, "cat, Cat", None, "two masks are for 'cat': give one mask per subject"),
])
def test_mask_assignment_errors_name_the_fix(slots, names, size, message):
    with pytest.raises(LayoutError, match=f"^{re.escape(message)}$"):
        assign_masks(SUBJECTS, slots, names, size)


def test_mask_slots_are_numbered_from_one():
    with pytest.raises(ValueError, match="numbered from 1") as e:
        assign_masks(SUBJECTS, {0: square()})
    assert not isinstance(e.value, LayoutError)  # a caller's mistake, not the user's


def test_layout_checks_masks_against_the_image():
    layout = SubjectLayout(SUBJECTS, (None, None), (torch.ones(1, 64, 128), None))
    layout.check_image((8, 16), 1)
    with pytest.raises(LayoutError, match="make the mask at the image's size"):
        layout.check_image((16, 16), 1)
    two = SubjectLayout(SUBJECTS, (None, None), (torch.ones(2, 16, 16), None))
    with pytest.raises(LayoutError, match="2 masks for a batch of 3"):
        two.check_image((16, 16), 3)
    with pytest.raises(LayoutError, match="both a box and a mask"):
        SubjectLayout(SUBJECTS, (Box(0, 0, 1, 1), None), (torch.ones(1, 4, 4), None))
    with pytest.raises(LayoutError, match="no region"):
        SubjectLayout(SUBJECTS, (None, None), (None, None))


# -- regions ----------------------------------------------------------------------------

def test_box_coverage_is_exact_area():
    cov = box_coverage(Box(0.1, 0.25, 0.5, 0.75), (4, 4))
    assert torch.allclose(cov.sum(), torch.tensor(0.4 * 0.5 * 16))
    assert torch.allclose(cov[1:3, 0], torch.tensor([0.6, 0.6]))  # x 0.1..0.25 covers 60 % of column 0
    assert torch.allclose(cov[1:3, 1], torch.ones(2)) and cov[0].sum() == 0 and cov[:, 2:].sum() == 0


def test_mask_area_interpolation_and_region_stack():
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1  # right half
    small = mask_to_size(mask, (16, 16))
    assert small[0, :, 8:].min() == 1 and small[0, :, :8].max() == 0
    odd = mask_to_size(torch.ones(1, 7, 7), (3, 3))
    assert torch.allclose(odd, torch.ones(1, 3, 3))
    layout = SubjectLayout(SUBJECTS, (Box(0, 0, 0.5, 1), None), (None, mask))
    regions = layout.region_masks((16, 16), batch=2)
    assert regions.shape == (2, 2, 16, 16)
    assert torch.equal(regions[0, 0] + regions[0, 1], torch.ones(16, 16))
    assert layout.constrained == [0, 1]


def test_region_anchor_and_outside():
    regions = box_coverage(Box(0.5, 0, 1, 0.5), (16, 16))[None, None]
    assert torch.allclose(region_anchor(regions)[0, 0], torch.tensor([3.5, 11.5]))
    two = torch.stack([regions[0, 0], torch.zeros(16, 16)])[None]
    out = outside_regions(two)
    assert torch.equal(out[0, 0], 1 - regions[0, 0])
    assert torch.equal(out[0, 1], regions[0, 0])  # no own region: keep out of the others'


def test_topk_mean():
    values = torch.arange(10.0)[None]
    weights = torch.ones(1, 10)
    assert float(topk_mean(values, weights, 0.2)) == pytest.approx(8.5)
    half = torch.tensor([[1.0] * 5 + [0.0] * 5])
    assert float(topk_mean(values, half, 0.4)) == pytest.approx(3.5)  # k = 2 of the 5 weighted: 4, 3
    assert float(topk_mean(values, torch.zeros(1, 10), 0.2)) == 0.0


# -- loss terms ---------------------------------------------------------------------------

LEFT, RIGHT = Box(0.0, 0.0, 0.5, 1.0), Box(0.5, 0.0, 1.0, 1.0)


def regions_lr():
    return SubjectLayout(SUBJECTS, (LEFT, RIGHT), (None, None)).region_masks((H, W))


def test_terms_are_low_when_subjects_sit_in_their_boxes():
    regions = regions_lr()
    good = maps_of(torch.stack([blob(8, 3, 2.5), blob(8, 12, 2.5)])[None], regions)
    swapped = maps_of(torch.stack([blob(8, 12, 2.5), blob(8, 3, 2.5)])[None], regions)
    w = LossWeights()
    # A compact blob cannot fill 20 % of a half-image box: inner stays above 0 when in place.
    assert float(layout_inner_term(good, w)) < 0.3 and float(layout_inner_term(swapped, w)) > 0.9
    assert float(layout_outer_term(good, w)) < 0.1 and float(layout_outer_term(swapped, w)) > 0.7


def test_layout_weights_live_in_one_place_and_scale_the_terms():
    w = LossWeights()
    assert w.layout == LayoutWeights(inner=1.0, outer=1.0, topk=0.2)
    assert (w.weight_of("layout_inner"), w.weight_of("layout_outer")) == (1.0, 1.0)  # the loss total reads these
    strong = replace(w, layout=w.layout.scaled(2.5))  # what the sampler does with the node's weight
    assert (strong.weight_of("layout_inner"), strong.weight_of("layout_outer"), strong.layout.topk) == (2.5, 2.5, 0.2)
    maps = maps_of(torch.stack([blob(8, 12), blob(8, 3)])[None], regions_lr())
    base, more = LOSSES["ai_t2i"](maps, w), LOSSES["ai_t2i"](maps, strong)
    assert torch.allclose(more["total"] - base["total"], 1.5 * (base["layout_inner"] + base["layout_outer"]))


def test_terms_are_zero_without_regions_and_the_loss_adds_them_only_with_regions():
    m = torch.stack([blob(8, 3), blob(8, 12)])[None]
    plain = LOSSES["ai_t2i"](maps_of(m), LossWeights())
    laid = LOSSES["ai_t2i"](maps_of(m.flip(-1), regions_lr()), LossWeights())
    assert "layout_inner" not in plain and "layout_outer" not in plain
    assert float(layout_inner_term(maps_of(m), LossWeights())) == 0.0
    assert {"layout_inner", "layout_outer"} <= set(laid)
    total = sum(LossWeights().weight_of(k) * laid[k] for k in laid if k != "total")
    assert torch.allclose(laid["total"], total)


def test_gradient_moves_activation_into_the_box():
    """Gradient descent on the layout terms moves a blob from the wrong half into its box."""
    regions = regions_lr()
    centres = torch.tensor([[8.0, 12.0], [8.0, 3.0]], requires_grad=True)  # both in the wrong half
    opt = torch.optim.SGD([centres], lr=10.0)
    w = LossWeights()

    def current():
        m = torch.stack([blob(*c, sigma=2.0) for c in centres])[None]
        return maps_of(m, regions)

    start = fraction_inside(current().smoothed, regions).detach()
    for _ in range(60):
        opt.zero_grad()
        maps = current()
        (layout_inner_term(maps, w) + layout_outer_term(maps, w)).sum().backward()
        opt.step()
    end = fraction_inside(current().smoothed, regions).detach()
    assert (start < 0.3).all() and (end > 0.7).all()
    assert centres[0, 1] < 8 and centres[1, 1] > 8


def test_unconstrained_subject_is_kept_out_of_the_others_region():
    regions = SubjectLayout(SUBJECTS, (LEFT, None), (None, None)).region_masks((H, W))
    intruding = maps_of(torch.stack([blob(8, 3, 2.5), blob(8, 4, 2.5)])[None], regions)
    apart = maps_of(torch.stack([blob(8, 3, 2.5), blob(8, 12, 2.5)])[None], regions)
    assert float(layout_outer_term(intruding, LossWeights())) > float(layout_outer_term(apart, LossWeights())) + 0.25


def test_aggregation_anchors_on_the_region():
    """With a region, aggregation measures the distance to the region's centre, not the peak."""
    m = torch.stack([blob(8, 12), blob(8, 3)])[None]
    w = LossWeights()
    free = aggregation_term(maps_of(m), w)
    anchored = aggregation_term(maps_of(m, regions_lr()), w)
    anchored_right = aggregation_term(maps_of(m, regions_lr().flip(1)), w)
    assert float(anchored) > float(free) + 0.5
    assert float(anchored_right) < float(anchored)


def test_batch_regions_per_image():
    regions = torch.cat([regions_lr(), regions_lr().flip(1)])  # image 1 swaps the boxes
    m = torch.stack([blob(8, 3, 2.5), blob(8, 12, 2.5)])[None].expand(2, -1, -1, -1)
    inner = layout_inner_term(maps_of(m, regions), LossWeights())
    assert inner[0] < 0.3 and inner[1] > 0.9
