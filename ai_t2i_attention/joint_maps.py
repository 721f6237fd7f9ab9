"""Joint-attention (MM-DiT) maps without the image-to-everything score matrix.

A joint attention (SD3/SD3.5, Flux) runs one softmax over the whole [text, image] sequence,
so the image-to-text probabilities the guidance reads need each image query's normaliser
over ALL L keys, while only the text columns are kept:

    p[b, h, n, t] = exp(s[b, h, n, t] - lse[b, h, n]),   s = q k^T / sqrt(d),
    lse[b, h, n] = log sum_l exp(s[b, h, n, l])

for image queries n and kept text keys t. `joint_attention_probabilities` computes only the
(N x T) kept block; the normaliser comes from a fused attention kernel that returns its
log-sum-exp, so no (N x L) matrix is made or kept for autograd. The gradient is written out
(`_JointProbabilities`): with the upstream gradient g of the head-averaged map and
gp = (g / heads) * p, c = sum_t gp,

    ds[n, l] = gp[n, l] (kept l only) - c[n] P[n, l],     P = softmax(s) over all keys
    dq = (gp k_T - c * (P k)) / sqrt(d)
    dk = (gp^T q  on the kept rows - P^T (c q)) / sqrt(d)

P k is the output of the forward's fused call with the keys as its values (kept, (B, heads,
N, d)); P^T (c q) is a second fused call, keys attending to image queries with values c q,
whose softmax normaliser is undone by its own log-sum-exp (see `_transposed_product`).
Two fused calls in all, 4 N L d multiply-adds, against about 7 L^2 d for the attention's own
forward and backward.

Why this design (measured at Flux's 1024 px token count, 4096 image + 256 text tokens, 2
heads of 64, float32, one CPU thread; forward+backward as a multiple of the attention's own
forward+backward; benchmarks/joint_maps.py prints the current numbers):
- every score materialised in float32, chunked and checkpointed (`_explicit_joint_probabilities`,
  the previous path, kept as the tests' reference): 2.3-2.5x;
- this gradient with the scores materialised chunk by chunk through matmuls: 0.86x with 128
  query rows a chunk, 1.1x with 256, 1.6x with 1024 (small chunks stay in cache); with the
  forward fused and only the backward chunked: 0.70-1.14x;
- both calls fused, as here: 0.57x keeping 2 columns, 0.66x keeping all 256 text columns. On
  the CPU the kernel is aten._scaled_dot_product_flash_attention_for_cpu (it takes an additive
  mask, so masks stay fused); on CUDA the flash or memory-efficient SDPA kernels, masks there
  going to the portable chunked kernel (`_attention_lse`). In P^T (c q) the -lse[n] rides in
  extra coordinates: as a materialised (L, N) bias the same call took 0.63-0.83 s against 0.46 s;
- flex_attention(return_lse=True) back-propagates through the lse by itself, but it has no
  backward on the CPU (it raises), and in eager mode it materialises the scores; the flash and
  memory-efficient kernels' lse carries no gradient, hence the written-out backward.
Kernels run in float32 (inputs are upcast: the CPU's bfloat16 attention was 6x slower than
its float32 one here) unless `JOINT_NATIVE_DTYPE` lets a CUDA run keep half-precision inputs
as they are; see there. Nothing more is needed from the host: the attention's own fused call
would give the lse but not P k, which the forward's call makes at the same cost.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
import torch.utils.checkpoint

# Query rows per chunk where scores are materialised: the explicit reference path below and
# the portable fallback kernel (devices with no fused kernel; CUDA with a mask). A DiT's joint
# sequence is thousands of keys long, so one block's full (B, heads, N, L) scores would take
# gigabytes.
JOINT_QUERY_CHUNK = 1024

# On CUDA with float16/bfloat16 inputs: run the fused kernels in that dtype (tensor cores) rather
# than upcast to float32. The products q.k are exact either way and accumulate in float32, but
# a half-precision kernel rounds its softmax weights and outputs (P k, P^T c q) to the input's
# precision, so the gradient then matches float32 only to that precision (about 1e-3 relative
# for bfloat16). Off until a CUDA run of benchmarks/joint_maps.py (its "native dtype" row, with
# its error) shows the speed is worth it; the CPU always computes in float32.
JOINT_NATIVE_DTYPE = False


def _explicit_chunk(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Head-averaged softmax over all of k's keys of q's queries, keeping text columns
    start:stop. q: (B, heads, n, d), k: (B, heads, L, d), float32; mask: None, or keep (bool)
    / additive (float) scores for these n rows. Returns (B, n, stop - start)."""
    scores = torch.einsum("bhnd,bhld->bhnl", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return scores.softmax(dim=-1)[..., start:stop].mean(dim=1)


def _by_query_chunks(chunk_fn, q: torch.Tensor, k: torch.Tensor, rows: Optional[torch.Tensor], *args) -> torch.Tensor:
    """chunk_fn(q_chunk, k, rows_chunk, *args) -> (B, n_chunk, C) over chunks of
    JOINT_QUERY_CHUNK queries of q (B, heads, n, d), concatenated to (B, n, C). rows: None, a
    mask or bias with one row per query of q (..., n, L), sliced with each chunk, or one row
    for all (..., 1, L). With gradients on, each chunk is checkpointed: only q and k are kept
    for the backward, which recomputes that chunk's scores."""
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    chunks = []
    for first in range(0, q.shape[2], JOINT_QUERY_CHUNK):
        qc = q[:, :, first:first + JOINT_QUERY_CHUNK]
        r = rows if rows is None or rows.shape[-2] == 1 else rows[..., first:first + qc.shape[2], :]
        if grad:
            chunks.append(torch.utils.checkpoint.checkpoint(chunk_fn, qc, k, r, *args, use_reentrant=False))
        else:
            chunks.append(chunk_fn(qc, k, r, *args))
    return torch.cat(chunks, dim=1)


def _explicit_joint_probabilities(q: torch.Tensor, k: torch.Tensor, queries: tuple[int, int],
                                  columns: tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`joint_attention_probabilities` with every score materialised in float32: the previous
    path, kept as the reference the fused path is tested against. Same arguments and result.
    Chunked and checkpointed (_by_query_chunks)."""
    if mask is not None and mask.shape[-2] > 1:  # per-query rows: the image queries'
        mask = mask[..., queries[0]:queries[1], :]
    return _by_query_chunks(_explicit_chunk, q[:, :, queries[0]:queries[1]].float(), k.float(), mask, *columns)


# -- the fused kernels ---------------------------------------------------------------------------

def _kernel_for(device: torch.device, masked: bool) -> str:
    """Which attention-with-lse kernel serves `device`: 'cpu' (the CPU flash kernel, masks
    included), 'cuda' (flash / memory-efficient, no mask), else 'chunked' (portable)."""
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda" and not masked:
        return "cuda"
    return "chunked"


def _attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor], scale: float,
                   kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias) v and its log-sum-exp, without autograd.

    q: (B, heads, n, e), k and v: (B, heads, m, e), one dtype; bias: None or additive float32
    broadcastable to (B, heads, n, m) ('cpu' and 'chunked' only). Returns out (B, heads, n, e)
    in q's dtype and lse (B, heads, n) float32. A row whose every key is masked gives out 0
    (and an lse that must not be read)."""
    if kernel == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias, scale=scale)
        return out, lse.float()
    if kernel == "cuda":
        n = q.shape[2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        try:
            if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]
            else:
                out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=scale)[:2]
            return out, lse[..., :n].float()  # the efficient kernel pads lse's query axis
        except (RuntimeError, NotImplementedError) as error:
            # a PyTorch build or GPU without these kernels: the portable path gives the same values, slower
            _warn_once(f"joint-attention maps: the fused CUDA attention kernel failed ({error}); using the "
                       "chunked kernel, exact but slower; a PyTorch build with flash or memory-efficient attention "
                       "for this GPU brings the fused one back.")
    outs, lses = [], []
    for first in range(0, q.shape[2], JOINT_QUERY_CHUNK):
        s = torch.einsum("bhne,bhme->bhnm", q[:, :, first:first + JOINT_QUERY_CHUNK].float(), k.float()) * scale
        if bias is not None:
            s = s + (bias[..., first:first + JOINT_QUERY_CHUNK, :] if bias.shape[-2] > 1 else bias)
        lse = torch.logsumexp(s, dim=-1)
        w = torch.exp(s - lse[..., None]).nan_to_num_(0.0)  # all-masked rows: 0, as the fused kernels
        outs.append((w @ v.float()).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


_WARNED: set = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _pad_heads(x: torch.Tensor, kernel: str) -> torch.Tensor:
    """(..., e) zero-padded to a multiple of 8 on CUDA, whose fused kernels need aligned head
    sizes; zeros add nothing to a dot product."""
    extra = -x.shape[-1] % 8 if kernel == "cuda" else 0
    return torch.nn.functional.pad(x, (0, extra)) if extra else x


def _transposed_product(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, x: torch.Tensor,
                        bias_t: Optional[torch.Tensor], scale: float, kernel: str) -> torch.Tensor:
    """P^T x with P = exp(q k^T * scale + bias - lse) (B, heads, N, L), through one fused call.

    The keys attend to the queries with values x: the kernel's scores are
    k.q * scale + bias^T - lse[n], its softmax over n divides by Z[l] = sum_n P[n, l], and its
    lse2 = log Z gives that back: P^T x = out * exp(lse2). The -lse[n] term rides in two
    extra coordinates (keys' side 1, 1; queries' side -hi, -lo with hi + lo = lse / scale):
    the kernels take no per-key bias without a materialised mask, and two coordinates keep
    lse exact to float32 where the kernel's dtype is half precision.
    q: (B, heads, N, d), k: (B, heads, L, d), x: (B, heads, N, d) in the kernel's dtype;
    lse (B, heads, N) float32; bias_t None or (…, L, N) additive float32.
    Returns (B, heads, L, d) float32."""
    shifted = lse / scale
    hi = shifted.to(q.dtype)
    lo = (shifted - hi.float()).to(q.dtype)
    d = q.shape[-1]
    keys_side = torch.cat([k, k.new_ones(*k.shape[:-1], 2)], dim=-1)
    queries_side = torch.cat([q, -hi[..., None], -lo[..., None]], dim=-1)
    values = torch.nn.functional.pad(x, (0, 2))
    out, lse2 = _attention_lse(_pad_heads(keys_side, kernel), _pad_heads(queries_side, kernel),
                               _pad_heads(values, kernel), bias_t, scale, kernel)
    # a key every query masks: the kernel gives 0 (the CPU's) or NaN; its column of P is 0
    return (out[..., :d].float() * lse2.exp()[..., None]).nan_to_num_(0.0, posinf=0.0, neginf=0.0)


class _JointProbabilities(torch.autograd.Function):
    """Per-head kept probabilities exp(s - lse) of image queries over kept keys, head-averaged,
    with the gradient w.r.t. the queries and keys written out (module docstring)."""

    @staticmethod
    def forward(ctx, q_image, k, start, stop, bias, kernel, native):
        """q_image: (B, heads, N, d); k: (B, heads, L, d); bias: None or additive float32
        (B or 1, heads or 1, N or 1, L). Returns (B, N, stop - start) float32."""
        dtype = q_image.dtype if native else torch.float32
        qc, kc = q_image.to(dtype), k.to(dtype)
        d = q_image.shape[-1]
        scale = 1 / math.sqrt(d)
        padded_k = _pad_heads(kc, kernel)
        product, lse = _attention_lse(_pad_heads(qc, kernel), padded_k, padded_k, bias, scale, kernel)
        product = product[..., :d]  # P k
        kept = torch.einsum("bhnd,bhtd->bhnt", q_image.float(), k[:, :, start:stop].float()) * scale
        if bias is not None:
            kept = kept + bias[..., start:stop]
        p = torch.exp(kept - lse[..., None])  # (B, heads, N, T)
        ctx.save_for_backward(q_image, k, lse, p, product, bias)
        ctx.columns, ctx.kernel, ctx.native = (start, stop), kernel, native
        return p.mean(dim=1)

    @staticmethod
    def backward(ctx, grad):
        q_image, k, lse, p, product, bias = ctx.saved_tensors
        start, stop = ctx.columns
        heads, d = q_image.shape[1], q_image.shape[-1]
        scale = 1 / math.sqrt(d)
        dtype = q_image.dtype if ctx.native else torch.float32
        qf, k_kept = q_image.float(), k[:, :, start:stop].float()
        gp = grad[:, None].float() / heads * p  # dLoss/ds on the kept columns, (B, heads, N, T)
        c = gp.sum(dim=-1)  # (B, heads, N): dLoss/dlse = -c
        dq = (gp @ k_kept - c[..., None] * product.float()) * scale
        bias_t = None if bias is None else bias.transpose(-1, -2)
        dk = _transposed_product(q_image.to(dtype), k.to(dtype), lse, (c[..., None] * qf).to(dtype), bias_t, scale,
                                 ctx.kernel).mul_(-scale)
        dk[:, :, start:stop] += (gp.transpose(-1, -2) @ qf) * scale
        return dq.to(q_image.dtype), dk.to(k.dtype), None, None, None, None, None


_EXPLICIT_PATH = False  # set by explicit_joint_maps()


@contextmanager
def explicit_joint_maps():
    """Inside this context joint_attention_probabilities takes the explicit path (every score
    materialised in float32): for measuring what the fused path saves in a whole guided run
    (benchmarks/cost.py). Not thread-safe; nothing in the pack enters it."""
    global _EXPLICIT_PATH
    before, _EXPLICIT_PATH = _EXPLICIT_PATH, True
    try:
        yield
    finally:
        _EXPLICIT_PATH = before


def _additive_mask(mask: torch.Tensor, rows: tuple[int, int], length: int) -> torch.Tensor:
    """A keep (bool) or additive (float) mask broadcastable to (B, heads, L, L), as additive
    float32 scores for the query rows `rows`: (B or 1, heads or 1, rows or 1, L = length)."""
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    mask = mask.expand(*mask.shape[:-1], length)  # a mask broadcast over the keys: the kept columns slice it
    if mask.shape[-2] > 1:
        mask = mask[..., rows[0]:rows[1], :]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask.float()


def joint_attention_probabilities(q: torch.Tensor, k: torch.Tensor, queries: tuple[int, int],
                                  columns: tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The image-to-text block of a joint (MM-DiT) attention's probabilities.

    q, k: (B, heads, L, d): the queries and keys of the whole joint sequence (text and image
    tokens, after any positional rotation), as the attention itself receives them.
    queries = (first, stop): the rows kept (the image positions); columns = (first, stop):
    the keys kept (the text tokens). The softmax runs over ALL L keys, so the values are the
    joint attention's own probabilities, not a cross-attention softmax over the text alone.
    mask: optional keep (bool) or additive (float) mask broadcastable to (B, heads, L, L).
    Returns (B, queries, columns) in float32, averaged over heads.

    Only the (queries x columns) block is made; each query's normaliser over all keys comes
    from a fused kernel (module docstring), and the gradient w.r.t. q and k is exact. For
    autograd it keeps q and k (as given), the normaliser (B, heads, queries), the kept block
    per head and P k (B, heads, queries, d).
    """
    if _EXPLICIT_PATH:
        return _explicit_joint_probabilities(q, k, queries, columns, mask)
    if mask is not None and mask.device.type == "cpu" and q.device.type != "cpu":
        mask = mask.to(q.device)
    bias = None if mask is None else _additive_mask(mask, queries, k.shape[2])
    kernel = _kernel_for(q.device, bias is not None)
    native = JOINT_NATIVE_DTYPE and kernel == "cuda" and q.dtype in (torch.float16, torch.bfloat16)
    q_image = q[:, :, queries[0]:queries[1]]
    return _JointProbabilities.apply(q_image, k, columns[0], columns[1], bias, kernel, native)


def _text_chunk(q: torch.Tensor, k_text: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Head-averaged softmax of q's queries over k_text's keys alone. q: (B, heads, n, d),
    k_text: (B, heads, T, d), float32; bias: None or additive float32 broadcastable to
    (B, heads, n, T). Returns (B, n, T)."""
    scores = torch.einsum("bhnd,bhtd->bhnt", q, k_text) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1).mean(dim=1)


def text_attention_probabilities(q: torch.Tensor, k: torch.Tensor, queries: tuple[int, int],
                                 columns: tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The image-to-text probabilities of a softmax over the text keys ALONE, per head, then
    head-averaged: what a cross-attention with the block's own projections would attend (the
    rule of Attend-and-Excite's ports to SD3). Each row sums to 1 over the text columns.

    Same arguments and result as `joint_attention_probabilities`: q, k (B, heads, L, d);
    queries, columns = (first, stop); mask broadcastable to (B, heads, L, L). Returns
    (B, queries, columns) float32. The (queries x columns) scores are made chunk by chunk and
    recomputed in the backward (_by_query_chunks), as on the explicit joint path.
    """
    bias = None
    if mask is not None:
        bias = _additive_mask(mask.to(q.device), queries, k.shape[2])[..., columns[0]:columns[1]]
    return _by_query_chunks(_text_chunk, q[:, :, queries[0]:queries[1]].float(),
                            k[:, :, columns[0]:columns[1]].float(), bias)


# -- how a joint block's probabilities become the loss's maps -------------------------------------

@dataclass(frozen=True)
class JointMapRule:
    """How a joint-attention (MM-DiT) block's image-to-text attention is read as maps.

    keys:    "all": the joint softmax over every key of the [text, image] sequence, the
             attention's own probabilities; "text": a softmax over the text keys alone.
    sharpen: each subject's map (the one aggregation and isolation read) is blurred (3x3,
             sigma 1), cubed and normalised to sum 1 over the image, as FOCUS (SD3.5 and
             Flux) shapes its maps before its loss; the presence map is left as it is.
    """

    keys: str
    sharpen: bool = False


# The rules the joint_map setting names. "joint softmax" is what the pack read from when it
# first guided SD3 and Flux; the others are the two published alternatives on these models.
JOINT_MAP_RULES = {
    "joint softmax": JointMapRule("all"),
    "text softmax": JointMapRule("text"),
    "sharpened joint softmax": JointMapRule("all", sharpen=True),
}
# Chosen on the embedded Flux-shaped model (attempt 6) by a rule fixed before its runs
# (results/flux_choices_v4): FOCUS's sharpened maps kept every subject more often than the plain
# joint softmax ("present" +0.159 [+0.057, +0.261] on seed-1 noise) at about the same cost; the
# text-only softmax did worse. On attempt 3 the same comparison did not clear 0, so it stayed.
DEFAULT_JOINT_MAP = "sharpened joint softmax"

# The step that strength 1 takes on joint-attention models, as a multiple of the reference's
# (UNet) step size. Chosen on the embedded Flux-shaped model by a rule fixed before its runs
# (results/flux_choices_v3): half the reference's step kept every subject more often than the
# whole step ("present" +0.170 [+0.057, +0.295] on seed-1 noise) with no more extra objects
# than vanilla's + 0.10; quarter and double steps did worse. On attempt 6 (results/flux_choices_v4)
# neither half nor double of this step beat it. A flow-matching latent is moved in
# velocity units, not the reference's, so no step carries over from the UNet unmeasured.
JOINT_STEP_SCALE = 0.5


def joint_map_probabilities(keys: str, q: torch.Tensor, k: torch.Tensor, queries: tuple[int, int],
                            columns: tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, queries, columns) image-to-text probabilities under JointMapRule.keys ("all" or
    "text"); arguments as `joint_attention_probabilities`."""
    if keys == "all":
        return joint_attention_probabilities(q, k, queries, columns, mask)
    if keys == "text":
        return text_attention_probabilities(q, k, queries, columns, mask)
    raise ValueError(f"unknown joint map keys {keys!r}: use 'all' or 'text'")
