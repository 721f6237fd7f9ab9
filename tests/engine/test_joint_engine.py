"""Engine pieces for joint-attention (MM-DiT) models: the joint probabilities, pooling, the
DiT layer policy and token resolution over several text-encoder streams."""
import math

import pytest
import torch

from ai_t2i_attention import (SubjectError, Tokenization, TokenStream, joint_attention_probabilities, pool_maps,
                              resolve, resolve_streams)
from ai_t2i_attention import joint_maps
from ai_t2i_attention.layers import AUTO_WORK_BUDGET, Layer, LayerChoiceError, choose_layers, describe_layers


def _hand_joint(q, k, rows, cols):
    """Loops: per image, per head, softmax over every key, rows and columns kept, mean over heads."""
    b, h = q.shape[:2]
    out = torch.zeros(b, rows[1] - rows[0], cols[1] - cols[0], dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            p = torch.softmax(q[bi, hi].double() @ k[bi, hi].double().T / math.sqrt(q.shape[-1]), dim=-1)
            out[bi] += p[rows[0]:rows[1], cols[0]:cols[1]]
    return out / h


def test_joint_probabilities_are_the_joint_softmax_not_a_text_softmax(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 20, 8, generator=g), torch.randn(2, 3, 20, 8, generator=g)
    monkeypatch.setattr(joint_maps, "JOINT_QUERY_CHUNK", 4)  # the explicit path: several chunks, one partial
    assert torch.allclose(joint_maps._explicit_joint_probabilities(q, k, (6, 20), (0, 6)).double(),
                          _hand_joint(q, k, (6, 20), (0, 6)), rtol=1e-5, atol=1e-7)
    p = joint_attention_probabilities(q, k, (6, 20), (0, 6))
    assert p.shape == (2, 14, 6) and p.dtype == torch.float32
    torch.testing.assert_close(p.double(), _hand_joint(q, k, (6, 20), (0, 6)), rtol=1e-5, atol=1e-7)
    assert (p.sum(-1) < 0.99).all()  # the image keys hold the rest of each row
    text_only = _hand_joint(q[:, :, :, :], k[:, :, :6], (6, 20), (0, 6))
    assert (p.double() - text_only).abs().max() > 1e-2


def test_explicit_joint_probabilities_gradient_matches_unchunked(monkeypatch):
    """The explicit path, the fused path's reference (tests/engine/test_joint_maps.py)."""
    g = torch.Generator().manual_seed(1)
    q0, k0 = torch.randn(1, 2, 12, 4, generator=g), torch.randn(1, 2, 12, 4, generator=g)
    w = torch.randn(1, 8, 4, generator=g)
    grads = []
    for chunk in (3, 1000):
        monkeypatch.setattr(joint_maps, "JOINT_QUERY_CHUNK", chunk)
        q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
        (joint_maps._explicit_joint_probabilities(q, k, (4, 12), (0, 4)) * w).sum().backward()
        grads.append((q.grad, k.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0][:, :, :4].abs().max() == 0 and grads[0][0][:, :, 4:].abs().max() > 0  # text queries unused


def test_joint_probabilities_honour_a_mask():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, 10, 4, generator=g), torch.randn(1, 2, 10, 4, generator=g)
    keep = torch.ones(1, 1, 10, 10, dtype=torch.bool)
    keep[..., 3] = False  # the last text token is padding the model masks out
    p = joint_attention_probabilities(q, k, (4, 10), (0, 4), keep)
    assert p[..., 3].abs().max() == 0
    unmasked = joint_attention_probabilities(q, k, (4, 10), (0, 4))
    assert (p[..., :3] > unmasked[..., :3]).all()


def _hand_text(q, k, rows, cols, bias=None):
    """Loops: per image, per head, softmax over the text keys alone, mean over heads."""
    b, h = q.shape[:2]
    out = torch.zeros(b, rows[1] - rows[0], cols[1] - cols[0], dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            s = q[bi, hi, rows[0]:rows[1]].double() @ k[bi, hi, cols[0]:cols[1]].double().T / math.sqrt(q.shape[-1])
            out[bi] += torch.softmax(s if bias is None else s + bias, dim=-1)
    return out / h


def test_text_rule_is_a_softmax_over_the_text_keys_alone(monkeypatch):
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 3, 20, 8, generator=g), torch.randn(2, 3, 20, 8, generator=g)
    monkeypatch.setattr(joint_maps, "JOINT_QUERY_CHUNK", 4)  # several chunks, one partial
    p = joint_maps.joint_map_probabilities("text", q, k, (6, 20), (0, 6))
    assert p.shape == (2, 14, 6) and p.dtype == torch.float32
    torch.testing.assert_close(p.double(), _hand_text(q, k, (6, 20), (0, 6)), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 14))  # every row is a distribution over the text
    assert (p.double() - _hand_joint(q, k, (6, 20), (0, 6))).abs().max() > 1e-2
    torch.testing.assert_close(joint_maps.joint_map_probabilities("all", q, k, (6, 20), (0, 6)),
                               joint_attention_probabilities(q, k, (6, 20), (0, 6)))
    with pytest.raises(ValueError, match="unknown joint map keys 'image'"):
        joint_maps.joint_map_probabilities("image", q, k, (6, 20), (0, 6))


def test_text_rule_honours_a_mask_and_its_chunked_gradient_is_exact(monkeypatch):
    g = torch.Generator().manual_seed(4)
    q0, k0 = torch.randn(1, 2, 12, 4, generator=g), torch.randn(1, 2, 12, 4, generator=g)
    keep = torch.ones(1, 1, 12, 12, dtype=torch.bool)
    keep[..., 3] = False  # padding the model masks out
    w = torch.randn(1, 8, 4, generator=g)
    out, grads = [], []
    for chunk in (3, 1000):
        monkeypatch.setattr(joint_maps, "JOINT_QUERY_CHUNK", chunk)
        q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
        p = joint_maps.text_attention_probabilities(q, k, (4, 12), (0, 4), keep)
        (p * w).sum().backward()
        out.append(p.detach())
        grads.append((q.grad, k.grad))
    assert out[0][..., 3].abs().max() == 0  # the masked key: the other three hold each row
    torch.testing.assert_close(out[0][..., :3].double(), _hand_text(q0, k0, (4, 12), (0, 3)), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][1][:, :, 4:].abs().max() == 0 and grads[0][1][:, :, :3].abs().max() > 0  # image keys unused


def test_joint_map_rules_table():
    rules = joint_maps.JOINT_MAP_RULES
    assert joint_maps.DEFAULT_JOINT_MAP == "sharpened joint softmax"  # chosen on the Flux-shaped toy
    assert rules["joint softmax"] == joint_maps.JointMapRule("all", sharpen=False)
    assert rules["text softmax"] == joint_maps.JointMapRule("text", sharpen=False)
    assert rules["sharpened joint softmax"] == joint_maps.JointMapRule("all", sharpen=True)


def test_pool_maps_means_windows_and_rounds_up():
    avg = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 5, 6, 1).repeat(1, 1, 1, 2)
    pooled = pool_maps(avg, 2)
    assert pooled.shape == (1, 3, 3, 2)
    assert pooled[0, 0, 0, 0] == avg[0, :2, :2, 0].mean()
    assert pooled[0, 2, 2, 1] == avg[0, 4:, 4:, 1].mean()  # the edge window averages what it covers
    assert pool_maps(avg, 1) is avg


# A Flux-like DiT: 4 double blocks then 4 single blocks, all on the latent/2 patch grid.
DIT = tuple([Layer(("double", i, 0), 2, pool=True) for i in range(4)]
            + [Layer(("single", i, 0), 2, pool=True) for i in range(4)])


@pytest.mark.parametrize("latent, factor", [(128, 8), (64, 4), (96, 6), (32, 2), (16, 2)])
def test_dit_auto_level_pools_to_about_16x16(latent, factor):
    chosen = choose_layers(DIT, (latent, latent), "auto", "joint")
    assert {l.factor for l in chosen} == {factor}
    assert [l.key for l in chosen] == [l.key for l in DIT[:4]]


def test_dit_layer_sets_and_levels():
    assert describe_layers(choose_layers(DIT, (64, 64), "1/8", "joint+single")) == "double 0, 1, 2, 3 + single 0, 1, 2, 3 (8 layers)"
    assert {l.factor for l in choose_layers(DIT, (64, 64), "1/2", "joint")} == {2}  # the grid itself
    with pytest.raises(LayerChoiceError, match=r"latent/2 grid, so level 1/1 cannot be made by pooling it; levels it has: auto, 1/2, 1/4, 1/8"):
        choose_layers(DIT, (64, 64), "1/1", "joint")
    with pytest.raises(LayerChoiceError, match=r"joint-attention \(MM-DiT\) model has no down\+up blocks; choose layers 'auto' or 'joint' or 'joint\+single' or 'joint early' or 'joint middle' or 'joint late'"):
        choose_layers(DIT, (64, 64), "auto", "down+up")
    with pytest.raises(LayerChoiceError, match="under 4x4"):
        choose_layers(DIT, (12, 12), "1/4", "joint")


@pytest.mark.parametrize("blocks, bands", [
    (19, ([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17, 18])),  # Flux.1
    (24, (list(range(0, 8)), list(range(8, 16)), list(range(16, 24)))),  # SD3.5 Medium
    (4, ([0], [1], [2, 3])),  # the embedded Flux-shaped model
])
def test_joint_bands_are_thirds_of_the_joint_blocks(blocks, bands):
    dit = [Layer(("double", i, 0), 2, pool=True) for i in range(blocks)] + [Layer(("single", 0, 0), 2, pool=True)]
    for name, expected in zip(("joint early", "joint middle", "joint late"), bands):
        chosen = choose_layers(dit, (64, 64), "auto", name)
        assert [l.key[1] for l in chosen] == expected and {l.key[0] for l in chosen} == {"double"}
        assert {l.factor for l in chosen} == {4}  # pooled like every joint set


def test_a_band_of_too_few_blocks_names_the_fix():
    two = [Layer(("double", i, 0), 2, pool=True) for i in range(2)]
    with pytest.raises(LayerChoiceError, match="has 2 joint blocks, too few for a third 'joint early'; choose layers 'joint'"):
        choose_layers(two, (64, 64), "auto", "joint early")
    unet = [Layer(("input", 1, 0), 1)]
    with pytest.raises(LayerChoiceError, match="no cross-attention in the joint late blocks"):
        choose_layers(unet, (64, 64), "auto", "joint late")


def test_dit_auto_set_reads_the_joint_blocks_within_the_budget():
    assert len(choose_layers(DIT, (64, 64), "auto", "auto")) == 4  # no estimate: every joint block
    share = lambda layers: 0.2 * (1 + int(layers[-1].key[1]))  # noqa: E731  block i ends at 0.2 (i + 1)
    assert describe_layers(choose_layers(DIT, (64, 64), "auto", "auto", share)) == "double 0, 1, 2 (3 layers)"
    assert len(choose_layers(DIT, (64, 64), "auto", "auto", lambda layers: AUTO_WORK_BUDGET)) == 4
    assert describe_layers(choose_layers(DIT, (64, 64), "auto", "auto", lambda layers: 0.9)) == "double 0 (1 layer)"


# -- several text-encoder streams (SD3: CLIP then T5) ------------------------------------------

S, E, P = "<s>", "</s>", "<pad>"
CLIP = Tokenization(((S, "a", "cat", "and", "a", "dog", E) + (E,) * 3,), frozenset({S, E}))
T5 = Tokenization((("a", "cat", "and", "a", "dog", E) + (P,) * 4,), frozenset({E, P}), start_token=False)


def _word(w):
    return [w]


def test_streams_map_a_word_in_every_stream_with_offsets():
    groups = resolve_streams("a cat and a dog", [TokenStream(CLIP, _word, 0), TokenStream(T5, _word, 10)],
                             ["cat", "dog"], [("a#2", "dog")])
    assert groups.subjects == ((2, 11), (5, 14))
    assert groups.attributes == (((4, 13), 1),)
    # presence axis: CLIP's columns 1..8 (no start token, no last column), T5's every column
    assert groups.text_columns == tuple(range(1, 9)) + tuple(range(10, 20))


def test_t5_alone_has_no_start_token_to_drop():
    groups = resolve("a cat and a dog", T5, _word, ["a"])
    assert groups.subjects == ((0,),) and groups.text_columns == tuple(range(10))
    assert CLIP.reference_columns() == tuple(range(1, 9))
    with pytest.raises(SubjectError, match="first token, so 'preceding' finds no attribute"):
        resolve("a cat and a dog", T5, _word, ["a"], "preceding")


def test_streams_errors_name_the_fix():
    with pytest.raises(SubjectError, match="'horse' is not in the prompt. Words in the prompt: a, cat, and, a, dog"):
        resolve_streams("a cat and a dog", [TokenStream(CLIP, _word, 0), TokenStream(T5, _word, 10)], ["horse"])
    with pytest.raises(SubjectError, match="load a CLIP or T5 text encoder"):
        resolve_streams("a cat", [], ["cat"])
