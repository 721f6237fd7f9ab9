import math

import pytest
import torch

from ai_t2i_attention import LOSSES, PRESETS, SubjectMaps, TokenGroups, configured_preset, subject_maps
from ai_t2i_attention.baselines import (BaselineWeights, a_star_loss, conform_loss, contrastive_term,
                                        divide_and_bind_loss, jensen_shannon, retention_term, segregation_term,
                                        total_variation)
from ai_t2i_attention.regions import pixel_grid

H = W = 16
GRID = pixel_grid(H, W)
BASELINES = {"Divide & Bind": "divide_and_bind", "A-STAR": "a_star", "CONFORM": "conform"}


def blobs(centres, sigma=1.5):
    """Differentiable Gaussian blobs in [0, 1]: centres (..., n, 2) -> (..., n, H, W)."""
    d2 = ((GRID - centres[..., None, None, :]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma ** 2))


def maps_of(sub, attr=None, attribute_of=(), previous=None):
    b = sub.shape[0]
    if attr is None:
        attr = sub.new_zeros(b, 0, H, W)
    return SubjectMaps(sub, sub, attr, tuple(attribute_of), attribute_smoothed=attr, previous=previous)


def descend(param, loss_fn, lr, steps):
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss_fn().sum(), param)
        assert torch.isfinite(g).all()
        with torch.no_grad():
            param -= lr * g


# ---------------------------------------------------------------- registry

def test_presets_registered_with_their_losses():
    for name, loss in BASELINES.items():
        p = PRESETS[name]
        assert p.loss == loss and LOSSES[loss] is not None
        assert isinstance(p.weights, BaselineWeights)
        # the node's override path (isolation_metric widget) keeps the subclass and its fields
        q = configured_preset(name, isolation_metric="cosine")
        assert isinstance(q.weights, BaselineWeights) and q.weights.temperature == p.weights.temperature
    assert PRESETS["Divide & Bind"].refine
    assert PRESETS["Divide & Bind"].refinement.points == {0.0: 0.05, 0.2: 0.2, 0.4: 0.3}
    assert not PRESETS["A-STAR"].refine and PRESETS["A-STAR"].refinement is None
    assert PRESETS["CONFORM"].refinement.test is None  # a fixed count of updates


def test_subject_maps_gives_renormalised_attribute_maps():
    avg = torch.rand(2, 8, 8, 77)
    g = TokenGroups(subjects=((3,), (6,)), attributes=(((2,), 0), ((5,), 1)), text_columns=tuple(range(1, 8)))
    m = subject_maps(avg, g)
    assert m.attribute_smoothed.shape == (2, 2, 8, 8) and m.previous is None
    # the attribute map is made exactly like a subject map of the same word
    as_subject = subject_maps(avg, TokenGroups(subjects=((2,),), text_columns=g.text_columns)).smoothed
    torch.testing.assert_close(m.attribute_smoothed[:, :1], as_subject)


# ---------------------------------------------------------------- Divide & Bind

def test_total_variation_by_hand():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 1, 1] = 1.0
    # two horizontal and two vertical unit jumps, each over 12 neighbour pairs
    torch.testing.assert_close(total_variation(m), torch.tensor([[4 / 12]]))
    torch.testing.assert_close(total_variation(torch.full((1, 1, 4, 4), 0.7)), torch.tensor([[0.0]]))


def test_jensen_shannon_bounds():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    q = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    torch.testing.assert_close(jensen_shannon(p, p), torch.tensor([0.0]))
    torch.testing.assert_close(jensen_shannon(p, q), torch.tensor([math.log(2)]))
    r = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    torch.testing.assert_close(jensen_shannon(p, r), jensen_shannon(r, p))


def test_attendance_descent_raises_the_weakest_subjects_variation():
    torch.manual_seed(0)
    theta = (0.1 * torch.randn(2, 2, H, W)).requires_grad_(True)  # near-flat maps: low TV
    w = BaselineWeights()

    def loss():
        return divide_and_bind_loss(maps_of(torch.sigmoid(theta)), w)["total"]

    before = total_variation(torch.sigmoid(theta)).amin(dim=1).detach()
    descend(theta, loss, lr=50.0, steps=20)
    after = total_variation(torch.sigmoid(theta)).amin(dim=1).detach()
    assert (after > before + 0.05).all()


def test_binding_pulls_the_attribute_onto_its_subject():
    sub = blobs(torch.tensor([[[4.0, 4.0], [11.0, 11.0]]]))
    w = BaselineWeights(attendance=0.0)
    near = divide_and_bind_loss(maps_of(sub, blobs(torch.tensor([[[4.0, 5.0]]])), (0,)), w)["binding"]
    far = divide_and_bind_loss(maps_of(sub, blobs(torch.tensor([[[11.0, 11.0]]])), (0,)), w)["binding"]
    assert near < far
    centre = torch.tensor([[[11.0, 10.0]]], requires_grad=True)
    start = (centre.detach() - torch.tensor([4.0, 4.0])).norm()
    # attendance off: the total is the binding of subject 0, the only subject with an attribute
    descend(centre, lambda: divide_and_bind_loss(maps_of(sub, blobs(centre), (0,)), w)["total"], lr=20.0, steps=30)
    assert (centre.detach() - torch.tensor([4.0, 4.0])).norm() < start - 2


def test_divide_and_bind_refinement_indicator():
    m = maps_of(blobs(torch.tensor([[[4.0, 4.0], [11.0, 11.0]]])))
    out = divide_and_bind_loss(m, BaselineWeights())
    tv = total_variation(m.smoothed).amin(dim=1)
    torch.testing.assert_close(out["presence"], 1.0 - tv)
    # the sampler refines while presence > 1 - threshold, i.e. while the weakest TV < threshold
    assert bool(out["presence"] > 1.0 - (float(tv) + 0.01)) and not bool(out["presence"] > 1.0 - (float(tv) - 0.01))


# ---------------------------------------------------------------- A-STAR

def test_segregation_disjoint_below_overlapping():
    disjoint = blobs(torch.tensor([[[3.0, 3.0], [12.0, 12.0]]]))
    overlapping = blobs(torch.tensor([[[7.0, 7.0], [8.0, 8.0]]]))
    same = blobs(torch.tensor([[[7.0, 7.0], [7.0, 7.0]]]))
    assert segregation_term(disjoint) < 0.01 < segregation_term(overlapping) < segregation_term(same)
    torch.testing.assert_close(segregation_term(same), torch.tensor([0.5]))


def test_segregation_descent_moves_subjects_apart():
    centres = torch.tensor([[[7.0, 7.0], [8.5, 8.0]]], requires_grad=True)
    start = (centres[0, 0] - centres[0, 1]).norm().item()
    descend(centres, lambda: a_star_loss(maps_of(blobs(centres)), BaselineWeights())["total"], lr=20.0, steps=30)
    assert (centres[0, 0] - centres[0, 1]).norm().item() > start + 2


def test_retention_against_the_previous_maps():
    prev = blobs(torch.tensor([[[4.0, 4.0], [11.0, 11.0]]]))
    mask = (prev >= 0.5).float()
    torch.testing.assert_close(retention_term(mask, prev), torch.tensor([0.0]))  # exactly the binarised region
    moved = blobs(torch.tensor([[[11.0, 4.0], [4.0, 11.0]]]))
    assert retention_term(moved, prev) > 1.9  # both subjects off their previous regions: ~1 each
    assert retention_term(prev, None).item() == 0.0
    w = BaselineWeights()
    without = a_star_loss(maps_of(moved), w)
    assert "retention" not in without
    torch.testing.assert_close(without["total"], without["segregation"])
    with_prev = a_star_loss(maps_of(moved, previous=prev), w)
    torch.testing.assert_close(with_prev["total"], with_prev["segregation"] + with_prev["retention"])
    # descending retention pulls a drifted subject back onto its previous region
    centre = torch.tensor([[[7.0, 7.0]]], requires_grad=True)
    target = blobs(torch.tensor([[[4.0, 4.0]]]))
    descend(centre, lambda: retention_term(blobs(centre), target), lr=10.0, steps=40)
    assert (centre.detach() - torch.tensor([4.0, 4.0])).norm() < 1.5


# ---------------------------------------------------------------- CONFORM

def test_contrastive_value_by_hand():
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # 0 and 1 positives, 2 the negative
    t = 0.5
    one = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.0)))
    torch.testing.assert_close(contrastive_term(e, [0, 0, 1], t), torch.tensor([one]))
    no_pairs = contrastive_term(e.requires_grad_(True), [0, 1, 2], t)
    assert no_pairs.item() == 0.0 and no_pairs.requires_grad  # zero update, but still differentiable


def test_conform_lower_when_attribute_sits_on_its_subject():
    sub = blobs(torch.tensor([[[4.0, 4.0], [11.0, 11.0]]]))
    w = BaselineWeights()
    good = conform_loss(maps_of(sub, blobs(torch.tensor([[[4.0, 4.0]]])), (0,)), w)["total"]
    bad = conform_loss(maps_of(sub, blobs(torch.tensor([[[11.0, 11.0]]])), (0,)), w)["total"]
    assert good < bad
    # subjects overlapping each other cost more than subjects apart
    close = conform_loss(maps_of(blobs(torch.tensor([[[7.0, 7.0], [8.0, 8.0]]])),
                                 blobs(torch.tensor([[[7.0, 7.0]]])), (0,)), w)["total"]
    assert close > good


def test_conform_uses_previous_maps_as_positives():
    sub = blobs(torch.tensor([[[4.0, 4.0], [11.0, 11.0]]]))
    w = BaselineWeights()
    assert conform_loss(maps_of(sub), w)["total"].item() == 0.0  # no attribute, no previous: nothing to pull
    assert conform_loss(maps_of(sub, previous=sub), w)["total"].item() > 0.0


# ---------------------------------------------------------------- all three

@pytest.mark.parametrize("name", list(BASELINES.values()))
def test_shapes_and_batch_independence(name):
    w = PRESETS[{v: k for k, v in BASELINES.items()}[name]].weights
    torch.manual_seed(1)
    sub = torch.rand(3, 2, H, W)
    attr = torch.rand(3, 1, H, W)
    prev = torch.rand(3, 2, H, W)
    out = LOSSES[name](maps_of(sub, attr, (1,), prev), w)
    for v in out.values():
        assert v.shape == (3,) and torch.isfinite(v).all()
    single = LOSSES[name](maps_of(sub[1:2], attr[1:2], (1,), prev[1:2]), w)["total"]
    torch.testing.assert_close(out["total"][1:2], single)


def one_hot(*pixels):
    """(1, n, H, W): map i is 1 at pixels[i] and 0 elsewhere."""
    m = torch.zeros(1, len(pixels), H, W)
    for i, (y, x) in enumerate(pixels):
        m[0, i, y, x] = 1.0
    return m


# The TV of a one-hot map at an inner pixel: two unit jumps in each direction, each direction
# averaged over H * (W - 1) neighbour pairs.
ONE_HOT_TV = 4 / (H * (W - 1))
C = 1 / (H * W)  # the constant map's value
T = BaselineWeights().temperature
BLOB = blobs(torch.tensor([[[7.0, 8.0]]]))  # (1, 1, H, W)


def info_nce_all_alike(labels):
    """CONFORM's loss when every map is alike (equal cosine between all): each positive pair
    costs log(1 + its negatives), averaged over the ordered positive pairs."""
    costs = [math.log(1 + sum(m != a for m in labels)) for i, a in enumerate(labels)
             for j, b in enumerate(labels) if i != j and a == b]
    return sum(costs) / len(costs)


# case -> (subject maps (1, S, H, W), attribute maps (1, P, H, W), attribute_of, previous maps or None,
#          the total each loss must give there, derived from its definition).
# Labels of CONFORM's maps: subjects 0..S-1, then each attribute its subject's, then previous maps.
DEGENERATE = {
    # Nothing attended at all. D&B: no variation, both distributions empty -> 0. A-STAR: no
    # overlap; an empty previous map has an empty region, IoU 0 -> retention 1 per subject.
    # CONFORM: zero embeddings have cosine 0 with everything, so all logits are equal.
    "all zeros": (torch.zeros(1, 2, H, W), torch.zeros(1, 1, H, W), (1,), torch.zeros(1, 2, H, W),
                  {"divide_and_bind": 0.0, "a_star": 2.0, "conform": info_nce_all_alike([0, 1, 1, 0, 1])}),
    # Uniform attention. D&B: no variation, equal distributions -> 0. A-STAR: identical maps
    # overlap 0.5; the previous map's region is the whole map, IoU = C. CONFORM: all alike.
    "constant": (torch.full((1, 2, H, W), C), torch.full((1, 1, H, W), C), (1,), torch.full((1, 2, H, W), C),
                 {"divide_and_bind": -0.0, "a_star": 0.5 + 2 * (1 - C),
                  "conform": info_nce_all_alike([0, 1, 1, 0, 1])}),
    # Single-pixel peaks, subjects apart, the attribute on its subject's pixel, the previous maps the
    # same. D&B: JSD 0, -TV. A-STAR: disjoint, each map exactly its previous region -> 0. CONFORM:
    # cosine 1 within a group, 0 across: log(1 + negatives * e^(-1/T)) per positive pair.
    "one-hot peaks": (one_hot((4, 4), (11, 11)), one_hot((11, 11)), (1,), one_hot((4, 4), (11, 11)),
                      {"divide_and_bind": -ONE_HOT_TV, "a_star": 0.0,
                       "conform": (2 * math.log(1 + 3 * math.exp(-1 / T)) + 6 * math.log(1 + 2 * math.exp(-1 / T))) / 8}),
    # Both subjects on the same blob, the attribute too, no previous maps. D&B: JSD 0, -TV of the
    # blob. A-STAR: identical maps overlap exactly 0.5. CONFORM: all alike, one negative per pair.
    "equal for both subjects": (BLOB.expand(1, 2, H, W).clone(), BLOB.clone(), (1,), None,
                                {"divide_and_bind": -float(total_variation(BLOB)), "a_star": 0.5,
                                 "conform": math.log(2)}),
    # One subject: nothing to keep apart, no negatives for CONFORM (its logsumexp then holds only
    # the positive) -> 0; its attribute and previous map on it.
    "single subject": (one_hot((5, 9)), one_hot((5, 9)), (0,), one_hot((5, 9)),
                       {"divide_and_bind": -ONE_HOT_TV, "a_star": 0.0, "conform": 0.0}),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
@pytest.mark.parametrize("name", list(BASELINES.values()))
def test_degenerate_maps_give_finite_known_losses_and_gradients(name, case):
    """Maps a model really produces at the edges (nothing attended, uniform attention, one pixel,
    two subjects on one spot, one subject): every term and gradient is finite (a 0/0 anywhere
    would be NaN here) and the total is the value the loss's definition gives there."""
    sub, attr, attribute_of, prev, expected = DEGENERATE[case]
    w = PRESETS[{v: k for k, v in BASELINES.items()}[name]].weights
    sub, attr = sub.clone().requires_grad_(True), attr.clone().requires_grad_(True)
    out = LOSSES[name](maps_of(sub, attr, attribute_of, prev), w)
    for term, v in out.items():
        assert v.shape == (1,) and torch.isfinite(v).all(), (term, v)
    torch.testing.assert_close(out["total"], torch.tensor([expected[name]]), rtol=1e-5, atol=1e-6)
    for g in torch.autograd.grad(out["total"].sum(), (sub, attr), allow_unused=True):
        assert g is None or torch.isfinite(g).all()
