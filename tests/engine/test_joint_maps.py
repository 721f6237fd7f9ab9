"""The joint-attention map's fused kernel and written-out gradient against the explicit path
(every score materialised in float32, autograd through the softmax)."""

import pytest
import torch

from ai_t2i_attention import joint_attention_probabilities, joint_maps

# A joint sequence of odd sizes, the image rows neither first nor last: 7 text tokens (SD3/Flux
# put the text first), 30 image tokens, 8 trailing keys-only tokens (Flux Kontext's reference
# image); head size 12 (not a multiple of 8, which CUDA's kernels pad to).
B, HEADS, L, D = 2, 3, 45, 12
ROWS, COLUMNS = (7, 37), (1, 6)


def _mask(kind: str, g: torch.Generator):
    if kind == "none":
        return None
    if kind == "keep":  # per image, shared by the heads; key 3 is padding every query skips
        keep = torch.rand(B, 1, L, L, generator=g) > 0.3
        keep[..., 3] = False
        keep[..., ROWS[0]:ROWS[1], 20] = True  # every row keeps a key
        return keep
    if kind == "additive":
        return torch.randn(B, HEADS, L, L, generator=g)
    if kind == "additive 2-d":  # (L, L): one mask for the batch and heads
        return torch.randn(L, L, generator=g)
    raise ValueError(kind)


def _forward_backward(fn, q0, k0, mask, upstream):
    q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
    probs = fn(q, k, ROWS, COLUMNS, mask)
    (probs * upstream).sum().backward()
    return probs, q.grad, k.grad


def _assert_close(new: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype):
    """Within 1e-3 of the reference relative to its size; for bfloat16 inputs the gradients are
    bfloat16 tensors, so each element may also differ by the rounding of the last place."""
    new, ref = new.double(), ref.double()
    assert (new - ref).norm() <= 1e-3 * ref.norm()
    last_place = 2.0 ** -8 if dtype == torch.bfloat16 else 0.0
    torch.testing.assert_close(new, ref, rtol=1e-3 + last_place, atol=1e-3 * ref.abs().max().item())


@pytest.mark.parametrize("kernel", ["fused", "chunked"])
@pytest.mark.parametrize("mask_kind", ["none", "keep", "additive", "additive 2-d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_gradients_match_the_explicit_path(monkeypatch, kernel, mask_kind, dtype):
    if kernel == "chunked":  # the portable kernel (no fused one on the device), chunks of 4 rows, one partial
        monkeypatch.setattr(joint_maps, "_kernel_for", lambda device, masked: "chunked")
        monkeypatch.setattr(joint_maps, "JOINT_QUERY_CHUNK", 4)
    g = torch.Generator().manual_seed(3)
    q0 = (2 * torch.randn(B, HEADS, L, D, generator=g)).to(dtype)  # spread scores: peaked rows
    k0 = torch.randn(B, HEADS, L, D, generator=g).to(dtype)
    mask = _mask(mask_kind, g)
    upstream = torch.randn(B, ROWS[1] - ROWS[0], COLUMNS[1] - COLUMNS[0], generator=g)

    new = _forward_backward(joint_attention_probabilities, q0, k0, mask, upstream)
    ref = _forward_backward(joint_maps._explicit_joint_probabilities, q0, k0, mask, upstream)
    assert new[0].dtype == torch.float32 and new[0].shape == (B, 30, 5)
    assert new[1].dtype == dtype and new[2].dtype == dtype
    for n, r in zip(new, ref):
        _assert_close(n, r, dtype)
    # the normaliser's gradient reaches keys outside the kept columns, and rows outside the image none
    assert new[2][:, :, ROWS[0]:].abs().amax() > 0
    assert new[1][:, :, :ROWS[0]].abs().amax() == 0 and new[1][:, :, ROWS[1]:].abs().amax() == 0
    if mask_kind == "keep":
        assert new[0][..., 3 - COLUMNS[0]].abs().amax() == 0 and new[2][:, :, 3].abs().amax() == 0


def test_without_gradients_the_values_are_the_same():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(B, HEADS, L, D, generator=g), torch.randn(B, HEADS, L, D, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(joint_attention_probabilities(q, k, ROWS, COLUMNS),
                                   joint_maps._explicit_joint_probabilities(q, k, ROWS, COLUMNS), rtol=1e-5, atol=1e-7)


def test_autograd_keeps_no_image_by_sequence_matrix():
    """Saved for the backward: q, k, the normaliser, the kept block and P k; nothing as large
    as the (heads, N, L) scores."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, HEADS, L, 4, generator=g, requires_grad=True)
    k = torch.randn(1, HEADS, L, 4, generator=g, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probs = joint_attention_probabilities(q, k, ROWS, COLUMNS)
    scores = HEADS * (ROWS[1] - ROWS[0]) * L
    assert saved and max(saved) < scores  # q and k: HEADS * L * 4
    probs.sum().backward()
    assert q.grad is not None and k.grad is not None


def test_transposed_product_keeps_a_large_normaliser_exact_in_half_precision():
    """P^T x through the kernel in bfloat16 (CUDA's native-dtype path): lse / sqrt(d) rides in
    two bfloat16 coordinates, so even a normaliser of about 60 (scores of peaked rows) shifts
    the exponent by far less than bfloat16's last place at that size (0.25 to 2)."""
    g = torch.Generator().manual_seed(6)
    q = (4 * torch.randn(1, 2, 40, 16, generator=g)).bfloat16()
    k = (4 * torch.randn(1, 2, 50, 16, generator=g)).bfloat16()
    x = torch.randn(1, 2, 40, 16, generator=g).bfloat16()
    scale = 1 / 4
    scores = q.float() @ k.float().transpose(-1, -2) * scale  # the bfloat16 inputs, exactly
    lse = scores.logsumexp(-1)
    assert lse.amax() > 40
    expected = torch.exp(scores - lse[..., None]).transpose(-1, -2) @ x.float()
    half = joint_maps._transposed_product(q, k, lse, x, None, scale, "cpu")
    assert (half - expected).norm() <= 1e-2 * expected.norm()  # what is left: the kernel's own rounding


def test_heads_as_a_transposed_view_of_the_projection():
    """SD3's attention hands (B, L, heads * d), which the host views as (B, heads, L, d): not
    contiguous; the gradient reaches the projection through the view."""
    g = torch.Generator().manual_seed(7)
    projections = [torch.randn(B, L, HEADS * D, generator=g) for _ in range(2)]
    upstream = torch.randn(B, ROWS[1] - ROWS[0], COLUMNS[1] - COLUMNS[0], generator=g)
    results = []
    for fn in (joint_attention_probabilities, joint_maps._explicit_joint_probabilities):
        q, k = (p.clone().requires_grad_() for p in projections)
        heads_first = [x.reshape(B, L, HEADS, D).transpose(1, 2) for x in (q, k)]
        probs = fn(*heads_first, ROWS, COLUMNS)
        (probs * upstream).sum().backward()
        results.append((probs, q.grad, k.grad))
    for n, r in zip(*results):
        _assert_close(n, r, torch.float32)


def test_explicit_joint_maps_switches_the_path_and_restores_it(monkeypatch):
    calls = []
    monkeypatch.setattr(joint_maps, "_explicit_joint_probabilities", lambda *a: calls.append(a) or torch.zeros(1))
    q = k = torch.randn(1, 1, 6, 4)
    with joint_maps.explicit_joint_maps():
        joint_attention_probabilities(q, k, (2, 6), (0, 2))
    assert len(calls) == 1
    assert joint_attention_probabilities(q, k, (2, 6), (0, 2)).shape == (1, 4, 2) and len(calls) == 1
