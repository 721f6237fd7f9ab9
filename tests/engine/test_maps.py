import math

import pytest
import torch

from ai_t2i_attention import (AttentionRecorder, SubjectMaps, TokenGroups, attention_probabilities,
                              gaussian_smooth, subject_maps)
from ai_t2i_attention.maps import gaussian_kernel, sharpened


def _hand_probs(q, k, heads):
    """Loop over batch and heads: softmax(q_h k_h^T / sqrt(d)), then the mean over heads."""
    b, n, hd = q.shape
    d = hd // heads
    out = torch.zeros(b, n, k.shape[1], dtype=torch.float64)
    for bi in range(b):
        for h in range(heads):
            qh = q[bi, :, h * d:(h + 1) * d].double()
            kh = k[bi, :, h * d:(h + 1) * d].double()
            out[bi] += torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)
    return out / heads


def test_attention_probabilities_matches_hand_softmax_mean_over_heads():
    g = torch.Generator().manual_seed(0)
    heads, d = 4, 8
    q = torch.randn(2, 12, heads * d, generator=g)
    k = torch.randn(2, 7, heads * d, generator=g)
    p = attention_probabilities(q, k, heads)
    assert p.shape == (2, 12, 7) and p.dtype == torch.float32
    torch.testing.assert_close(p.double(), _hand_probs(q, k, heads), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 12))
    # Head grouping matters: regrouping the channels as (d heads) would give a different answer.
    wrong = _hand_probs(q.reshape(2, 12, d, heads).transpose(2, 3).reshape(2, 12, -1),
                        k.reshape(2, 7, d, heads).transpose(2, 3).reshape(2, 7, -1), heads)
    assert (p.double() - wrong).abs().max() > 1e-3


def test_attention_probabilities_half_inputs_give_float32():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 16, generator=g)
    k = torch.randn(1, 5, 16, generator=g)
    p = attention_probabilities(q.half(), k.half(), 2)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.double(), _hand_probs(q.half().float(), k.half().float(), 2), rtol=1e-4, atol=1e-5)


def _qk(seed, b=2, n=6, t=5, hd=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, hd, generator=g), torch.randn(b, t, hd, generator=g)


def test_recorder_records_only_wanted_keys_and_completes():
    rec = AttentionRecorder(wanted=frozenset({"down.1", "up.0"}))
    assert not rec.wants("mid.0")
    assert rec.wants("down.1") and rec.wants("up.0")
    assert not rec.complete
    q, k = _qk(0)
    rec.record("down.1", q, k, heads=2, map_size=(2, 3))
    assert not rec.wants("down.1"), "a layer already recorded must not be recorded twice"
    assert rec.wants("up.0")
    assert not rec.complete
    q2, k2 = _qk(1)
    rec.record("up.0", q2, k2, heads=2, map_size=(2, 3))
    assert rec.complete
    assert rec.seen == ["down.1", "up.0"]
    avg = rec.average()
    assert avg.shape == (2, 2, 3, 5)  # (B, H, W, T)
    expected = (attention_probabilities(q, k, 2) + attention_probabilities(q2, k2, 2)) / 2
    # (B, N, T) with N = H*W row-major -> (B, H, W, T)
    torch.testing.assert_close(avg, expected.reshape(2, 2, 3, 5))
    torch.testing.assert_close(avg[:, 1, 2], expected[:, 5])


def test_recorder_rejects_mismatched_map_sizes():
    rec = AttentionRecorder(wanted=frozenset({"a", "b"}))
    q, k = _qk(0, n=6)
    rec.record("a", q, k, heads=2, map_size=(2, 3))
    q2, k2 = _qk(1, n=6)
    with pytest.raises(ValueError, match="one level"):
        rec.record("b", q2, k2, heads=2, map_size=(3, 2))
    assert not rec.complete


def test_recorder_average_without_layers_raises():
    with pytest.raises(RuntimeError):
        AttentionRecorder(wanted=frozenset({"a"})).average()


def test_gaussian_kernel_is_the_references_sigma_half():
    # The reference's "sigma 0.5" kernel: exp(-(x / (2 * 0.5))^2) per axis = a Gaussian of
    # sigma 0.5 * sqrt(2); centre weight 0.332 (a textbook sigma 0.5 would give 0.619).
    k = gaussian_kernel(3, 0.5)
    e = math.exp(-1.0)
    g = torch.tensor([e, 1.0, e])
    torch.testing.assert_close(k, torch.outer(g, g) / torch.outer(g, g).sum())
    assert abs(float(k[1, 1]) - 0.3320) < 1e-4
    assert abs(float(k.sum()) - 1.0) < 1e-6


def test_gaussian_smooth_shape_mass_and_constants():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 16, 16, generator=g)
    out = gaussian_smooth(maps)
    assert out.shape == maps.shape
    # Mass is kept up to the border effects of reflect padding.
    rel = (out.sum(dim=(2, 3)) - maps.sum(dim=(2, 3))).abs() / maps.sum(dim=(2, 3))
    assert rel.max() < 0.05
    # An interior delta spreads into exactly the kernel, mass exactly kept.
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1.0
    sm = gaussian_smooth(delta)
    torch.testing.assert_close(sm[0, 0, 3:6, 3:6], gaussian_kernel(3, 0.5))
    assert abs(float(sm.sum()) - 1.0) < 1e-6
    assert float(sm[0, 0, 4, 4]) < 1.0  # the peak is lowered by smoothing
    # A constant map is unchanged (reflect padding: no dark border).
    const = torch.full((1, 2, 5, 7), 0.3)
    torch.testing.assert_close(gaussian_smooth(const), const)


def _avg(seed=0, b=2, h=4, w=4, t=10):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, h, w, t, generator=g) * 0.05, dim=-1)


# Context of 10 tokens: 0 start, 1..6 text, 7 end, 8..9 pad.
TEXT = (1, 2, 3, 4, 5, 6)


def test_subject_maps_raw_is_mean_over_subject_columns():
    avg = _avg()
    groups = TokenGroups(subjects=((2,), (4, 5)), text_columns=TEXT)
    sm = subject_maps(avg, groups)
    assert isinstance(sm, SubjectMaps)
    assert sm.raw.shape == (2, 2, 4, 4) and sm.smoothed.shape == (2, 2, 4, 4)
    torch.testing.assert_close(sm.raw[:, 0], avg[..., 2])
    torch.testing.assert_close(sm.raw[:, 1], (avg[..., 4] + avg[..., 5]) / 2)
    assert sm.attribute.shape == (2, 0, 4, 4) and sm.attribute_of == ()


def test_subject_maps_smoothed_is_softmax_over_text_columns_only():
    avg = _avg()
    groups = TokenGroups(subjects=((2,), (4, 5)), text_columns=TEXT)
    sm = subject_maps(avg, groups)
    renorm = torch.softmax(avg[..., 1:7] * 100.0, dim=-1)  # text columns 1..6 -> 0..5
    expected = torch.stack([renorm[..., 1], renorm[..., 3] + renorm[..., 4]], dim=1)
    torch.testing.assert_close(sm.smoothed, gaussian_smooth(expected))
    # Start, end and pad columns do not take part: changing them leaves the smoothed maps alone...
    other = avg.clone()
    other[..., 0] = 0.9
    other[..., 7:] = 0.5
    sm2 = subject_maps(other, groups)
    torch.testing.assert_close(sm2.smoothed, sm.smoothed)
    # ...while changing a text column that is not a subject does change them.
    other = avg.clone()
    other[..., 3] += 0.05
    assert (subject_maps(other, groups).smoothed - sm.smoothed).abs().max() > 1e-3
    # Softmaxing over all columns would be a different (wrong) answer.
    all_cols = torch.softmax(avg * 100.0, dim=-1)
    wrong = gaussian_smooth(torch.stack([all_cols[..., 2], all_cols[..., 4] + all_cols[..., 5]], dim=1))
    assert (wrong - sm.smoothed).abs().max() > 1e-3


def test_subject_maps_temperature_and_gradients():
    avg = _avg().requires_grad_(True)
    groups = TokenGroups(subjects=((2,), (4, 5)), text_columns=TEXT)
    sm = subject_maps(avg, groups, temperature=10.0)
    renorm = torch.softmax(avg.detach()[..., 1:7] * 10.0, dim=-1)
    torch.testing.assert_close(sm.smoothed[:, 0], gaussian_smooth(renorm[..., 1][:, None])[:, 0])
    (sm.raw.sum() + sm.smoothed.sum()).backward()
    assert torch.isfinite(avg.grad).all()
    assert avg.grad[..., 2].abs().sum() > 0 and avg.grad[..., 4].abs().sum() > 0
    # start column never reaches any subject map
    assert float(avg.grad[..., 0].abs().sum()) == 0.0


def test_subject_maps_attributes():
    avg = _avg()
    groups = TokenGroups(subjects=((2,), (5,)), attributes=(((1,), 0), ((3, 4), 1)), text_columns=TEXT)
    sm = subject_maps(avg, groups)
    assert sm.attribute.shape == (2, 2, 4, 4)
    torch.testing.assert_close(sm.attribute[:, 0], avg[..., 1])
    torch.testing.assert_close(sm.attribute[:, 1], (avg[..., 3] + avg[..., 4]) / 2)
    assert sm.attribute_of == (0, 1)


def test_subject_maps_default_text_columns_are_the_references():
    # Without text columns: the reference's columns 1..T-2 (start token and last column dropped).
    avg = _avg()
    sm = subject_maps(avg, TokenGroups(subjects=((2,),)))
    renorm = torch.softmax(avg[..., 1:-1] * 100.0, dim=-1)
    torch.testing.assert_close(sm.smoothed[:, 0], gaussian_smooth(renorm[..., 1][:, None])[:, 0])


def test_sharpened_is_focus_blur_cube_and_normalise():
    """A textbook Gaussian of sigma 1 (1-D weights e^-1/2 : 1 : e^-1/2), cubed, summing to 1."""
    maps = torch.zeros(1, 2, 7, 7)
    maps[0, 0, 3, 3] = 1.0  # one peak
    maps[0, 1] = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    out = sharpened(maps)
    assert out.shape == maps.shape and (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(1, 2))
    w = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    blur = (w[:, None] * w[None, :]) / w.sum() ** 2
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = blur ** 3
    torch.testing.assert_close(out[0, 0], expected / expected.sum())
    # the cube sharpens: the peak's share grows against the blur alone
    assert out[0, 0, 3, 3] > blur[1, 1] / blur.sum()


def test_subject_maps_sharpen_changes_raw_only():
    g = torch.Generator().manual_seed(5)
    avg = torch.rand(1, 8, 8, 6, generator=g)
    groups = TokenGroups(subjects=((2,), (4,)), attributes=())
    plain, sharp = subject_maps(avg, groups), subject_maps(avg, groups, sharpen=True)
    torch.testing.assert_close(sharp.raw, sharpened(plain.raw))
    torch.testing.assert_close(sharp.smoothed, plain.smoothed)  # the presence map is left as it is


def test_subject_maps_bad_columns_raise():
    avg = _avg()
    with pytest.raises(ValueError, match="do not fit"):
        subject_maps(avg, TokenGroups(subjects=((2,), (10,)), text_columns=TEXT))
    with pytest.raises(ValueError, match="do not fit"):
        subject_maps(avg, TokenGroups(subjects=((2,), ()), text_columns=TEXT))
    with pytest.raises(ValueError, match="not text columns"):
        subject_maps(avg, TokenGroups(subjects=((2,), (8,)), text_columns=TEXT))
    with pytest.raises(ValueError, match="do not fit"):
        subject_maps(avg, TokenGroups(subjects=((2,),), attributes=(((12,), 0),), text_columns=TEXT))
