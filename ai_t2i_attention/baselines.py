"""Baseline guidance losses from neighbouring work, in the same sampler as AI-T2I.

Each has the one signature every loss has, loss(maps, weights) -> {term: (B,),
"total": (B,)}, and methods.py lists it in LOSSES with its preset in PRESETS, so the
guided sampler runs them unchanged for side-by-side comparisons.

    Divide & Bind  (Li et al., BMVC 2023)   attendance (total variation) + binding (JSD)
    A-STAR         (Agarwal et al., ICCV 2023) segregation (soft overlap) + retention
    CONFORM        (Meral et al., CVPR 2024) contrastive (InfoNCE) loss over the maps

Maps (see maps.SubjectMaps): `smoothed` (B, S, H, W) are the token-renormalised,
Gaussian-smoothed subject maps that Attend-and-Excite, Divide & Bind and CONFORM use
(for A-STAR this pack assumes the same);
`attribute_smoothed` (B, P, H, W) the same for attribute words; `previous` (B, S, H, W)
the subject maps of the previous guided step when the host provides them (None on the
first guided step and in stateless callers).

What the pack cannot express exactly is listed in each preset's docstring (methods.py).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from .losses import presence_term
from .maps import SubjectMaps
from .regions import EPS
from .weights import BaselineWeights


def _attribute_maps(maps: SubjectMaps) -> torch.Tensor:
    """(B, P, H, W) token-renormalised attribute maps; raw ones if the caller gave none."""
    return maps.attribute_smoothed if maps.attribute_smoothed is not None else maps.attribute


def _distribution(m: torch.Tensor) -> torch.Tensor:
    """(..., H, W) non-negative maps -> (..., H*W) distributions over pixels."""
    flat = m.flatten(-2).clamp_min(0.0)
    return flat / flat.sum(dim=-1, keepdim=True).clamp_min(EPS)


# ---------------------------------------------------------------- Divide & Bind

def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of (..., H, W) maps -> (...,): mean |horizontal
    difference| + mean |vertical difference| (finite differences of neighbours)."""
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().flatten(-2).mean(-1)
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().flatten(-2).mean(-1)
    return dx + dy


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD of (..., N) distributions -> (...,), natural log, in [0, ln 2]."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return (a * (torch.log(a.clamp_min(EPS)) - torch.log(b.clamp_min(EPS)))).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def binding_per_subject(maps: SubjectMaps) -> torch.Tensor:
    """(B, S): sum over each subject's attributes of JSD(subject map, attribute map),
    both as distributions over pixels; 0 for subjects without attributes."""
    sub = maps.smoothed
    per_subject = [sub.new_zeros(sub.shape[0]) for _ in range(sub.shape[1])]
    attr = _attribute_maps(maps)
    for p, s in enumerate(maps.attribute_of):
        per_subject[s] = per_subject[s] + jensen_shannon(_distribution(sub[:, s]), _distribution(attr[:, p]))
    return torch.stack(per_subject, dim=1)


def divide_and_bind_loss(maps: SubjectMaps, w: BaselineWeights) -> dict[str, torch.Tensor]:
    """Divide & Bind: L = max_s ( binding * JSD_s - attendance * TV(A_s) ).

    Attendance: the total variation of each subject's smoothed map is maximised, which
    rewards high activation spread over one or several regions (the paper's remedy for
    missing objects); the worst subject (smallest TV) dominates through the max.
    Binding: each attribute's map is pulled onto its subject's map (Jensen-Shannon
    divergence of the two normalised maps).

    Terms (B,): attendance = min_s TV (the weakest subject's TV, to read, not minimised
    directly), binding = sum of the JSDs, presence = 1 - min_s TV: the refinement
    indicator (the sampler refines while presence > 1 - threshold, i.e. while the
    weakest TV is under the threshold, as Divide & Bind's refinement does).
    """
    w = BaselineWeights.of(w)
    tv = total_variation(maps.smoothed)  # (B, S)
    bind = binding_per_subject(maps)
    per_subject = w.binding * bind - w.attendance * tv
    weakest = tv.amin(dim=1)
    return {"attendance": weakest, "binding": bind.sum(dim=1), "presence": 1.0 - weakest,
            "total": per_subject.amax(dim=1)}


# ---------------------------------------------------------------- A-STAR

def segregation_term(m: torch.Tensor) -> torch.Tensor:
    """Sum over subject pairs of the soft overlap sum(min(A_i, A_j)) / sum(A_i + A_j).

    m: (B, S, H, W) non-negative maps -> (B,). 0 for disjoint maps, 0.5 for identical ones.
    """
    b, s = m.shape[:2]
    flat = m.flatten(2)
    total = flat.sum(dim=(1, 2)) * 0.0  # zero for one subject, but still a function of the maps
    for i, j in itertools.combinations(range(s), 2):
        inter = torch.minimum(flat[:, i], flat[:, j]).sum(-1)
        total = total + inter / (flat[:, i] + flat[:, j]).sum(-1).clamp_min(EPS)
    return total


def retention_term(m: torch.Tensor, previous: torch.Tensor | None, threshold: float = 0.5) -> torch.Tensor:
    """Sum over subjects of 1 - softIoU(A_s, binarise(previous A_s)).

    m, previous: (B, S, H, W); previous is binarised at `threshold` times its own peak
    (no gradient through it). softIoU(A, M) = sum(A M) / sum(A + M - A M). Without a
    previous map (first guided step, stateless caller) the term is 0.
    """
    if previous is None:
        return m.new_zeros(m.shape[0])
    prev = previous.detach().to(m)
    peak = prev.flatten(2).amax(-1)[..., None, None]
    mask = (prev >= threshold * peak).to(m) * (peak > 0).to(m)
    inter = (m * mask).flatten(2).sum(-1)
    union = (m + mask - m * mask).flatten(2).sum(-1).clamp_min(EPS)
    return (1.0 - inter / union).sum(dim=1)


def a_star_loss(maps: SubjectMaps, w: BaselineWeights) -> dict[str, torch.Tensor]:
    """A-STAR: segregation * L_seg + retention * L_ret on the smoothed subject maps.

    L_seg lowers the overlap of every pair of subjects' maps; L_ret keeps each subject's
    map on the region its map held at the previous guided step (binarised), so a subject
    once attended is not dropped later. Retention needs the previous step's maps: with
    maps.previous None (first guided step, or a host that keeps no state) it is 0 and the
    loss is segregation alone.
    """
    w = BaselineWeights.of(w)
    seg = segregation_term(maps.smoothed)
    ret = retention_term(maps.smoothed, maps.previous, w.retention_threshold)
    out = {"segregation": seg}
    total = w.segregation * seg
    if maps.previous is not None:
        out["retention"] = ret
        total = total + w.retention * ret
    out["total"] = total
    return out


# ---------------------------------------------------------------- CONFORM

def contrastive_term(embeddings: torch.Tensor, labels: list[int], temperature: float) -> torch.Tensor:
    """InfoNCE (NT-Xent) over maps: embeddings (B, N, D), labels (N,) group of each map.

    For every ordered positive pair (a, p) (same label, a != p):
        l_ap = -log( e^{cos(a,p)/t} / (e^{cos(a,p)/t} + sum_{n: label_n != label_a} e^{cos(a,n)/t}) )
    averaged over the positive pairs -> (B,). No positive pair: 0.
    """
    b, n, _ = embeddings.shape
    lab = torch.tensor(labels, device=embeddings.device)
    same = lab[:, None] == lab[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    pos = same & ~eye
    if not bool(pos.any()):
        return embeddings.sum(dim=(1, 2)) * 0.0  # zero, but still a function of the maps
    z = F.normalize(embeddings, dim=-1, eps=EPS)
    logits = torch.einsum("bnd,bmd->bnm", z, z) / temperature  # (B, N, N)
    neg_logits = logits.masked_fill(same[None], float("-inf"))  # negatives only
    a_idx, p_idx = torch.nonzero(pos, as_tuple=True)
    pos_logit = logits[:, a_idx, p_idx]  # (B, pairs)
    denom = torch.logsumexp(torch.cat([pos_logit[..., None], neg_logits[:, a_idx, :]], dim=-1), dim=-1)
    return (denom - pos_logit).mean(dim=1)


def conform_loss(maps: SubjectMaps, w: BaselineWeights) -> dict[str, torch.Tensor]:
    """CONFORM: contrast * InfoNCE over the smoothed maps of subjects and attributes.

    Groups: each subject with its attribute words (positives attract), other subjects'
    groups are negatives (repel). The subject maps of the previous guided step, when
    given (maps.previous), join their subject's group as extra positives, as CONFORM
    adds the maps of the step before. A prompt with neither attributes nor previous maps
    has no positive pair: the loss is then 0 (no update).

    Also reported, not minimised: presence (Attend-and-Excite's term), so the run log
    shows whether every subject is attended.
    """
    w = BaselineWeights.of(w)
    sub = maps.smoothed
    b, s = sub.shape[:2]
    parts = [sub.flatten(2)]
    labels = list(range(s))
    attr = _attribute_maps(maps)
    if attr.shape[1]:
        parts.append(attr.flatten(2))
        labels += list(maps.attribute_of)
    if maps.previous is not None:
        parts.append(maps.previous.detach().to(sub).flatten(2))
        labels += list(range(s))
    loss = contrastive_term(torch.cat(parts, dim=1), labels, w.temperature)
    return {"contrast": loss, "presence": presence_term(maps, w), "total": w.contrast * loss}
