"""One guided step: move the noisy latent down the gradient of the attention loss.

The host supplies `compute_terms(latent) -> dict[str, (B,)]`, which runs the guidance
forward pass on a latent that requires grad and returns the loss terms. Everything
here is plain torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

Terms = dict[str, torch.Tensor]


@dataclass
class StepReport:
    """What happened at one guided step (floats are batch means)."""

    step: int
    step_size: float
    iterations: int = 0
    losses: dict[str, float] = field(default_factory=dict)  # before the first update
    final_total: Optional[float] = None  # loss at the latent the scheduled update started from
    skipped: list[str] = field(default_factory=list)  # why an image's update was dropped

    def line(self) -> str:
        terms = " ".join(f"{k}={v:.4f}" for k, v in self.losses.items())
        extra = f" iters={self.iterations}" if self.iterations > 1 else ""
        skip = f" SKIPPED: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"step {self.step:3d} alpha={self.step_size:.2f} {terms}{extra}{skip}"


def _finite_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) bool: every value of the image is finite."""
    return torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)


def gradient_step(latent: torch.Tensor, compute_terms: Callable[[torch.Tensor], Terms], step_size: float,
                  report: StepReport) -> tuple[torch.Tensor, Terms]:
    """z <- z - step_size * dL/dz for (B, C, H, W) latents, image by image guarded.

    An image whose loss or gradient is not finite keeps its latent unchanged and the
    reason goes into the report: a NaN never reaches the image.
    """
    # Samplers run under no_grad, and hosts may run under inference_mode: both are
    # lifted for this step only. The latent is cloned out of inference mode first.
    with torch.inference_mode(False), torch.enable_grad():
        x = latent.detach().clone().float().requires_grad_(True)
        terms = compute_terms(x if latent.dtype == torch.float32 else x.to(latent.dtype))
        total = terms["total"]
        ok = _finite_rows(total[:, None])
        grad = torch.autograd.grad(torch.where(ok, total, torch.zeros_like(total)).sum(), x, allow_unused=True)[0]
    if grad is None:
        raise RuntimeError("the attention loss does not depend on the latent: no cross-attention layer was captured with gradients")
    ok = ok & _finite_rows(grad)
    for b in torch.nonzero(~ok).flatten().tolist():
        reason = f"image {b}: non-finite loss or gradient"
        if reason not in report.skipped:
            report.skipped.append(reason)
    grad = torch.where(ok[:, None, None, None], grad, torch.zeros_like(grad))
    updated = (x.detach() - step_size * grad).to(latent.dtype)
    return updated, {k: v.detach() for k, v in terms.items()}


@dataclass(frozen=True)
class RefinementTarget:
    """What one refinement point asks of guided_update.

    test: the loss term that decides, image by image: refine while terms[test] > 1 -
        threshold (Attend-and-Excite's rule on its presence term); None: no term decides,
        every image makes exactly max_iters refinement updates (a fixed count).
    """

    threshold: Optional[float] = None
    test: Optional[str] = "presence"
    max_iters: int = 20

    def needs(self, terms: Terms) -> torch.Tensor:
        """(B,) bool: which images still need refining, judged on `terms`."""
        total = terms["total"]
        if self.test is None:
            return torch.ones_like(total, dtype=torch.bool)
        if self.test not in terms:
            raise ValueError(f"refinement tests the loss term {self.test!r}, but the loss returns only "
                             f"{', '.join(sorted(terms))}: the method's refinement contract does not hold")
        return terms[self.test] > 1.0 - self.threshold


def guided_update(latent: torch.Tensor, compute_terms: Callable[[torch.Tensor], Terms], step: int,
                  step_size: float, refinement: Optional[RefinementTarget] = None,
                  check_interrupt: Callable[[], None] = lambda: None) -> tuple[torch.Tensor, StepReport]:
    """The update of one guided step, with optional iterative refinement, as the
    Attend-and-Excite reference loops (per image; B images refine independently):

        L = loss(z)                                   the step's own pass
        if L > 1 - threshold:                         (refinement points only)
            repeat: L = loss(z); z -= a dL/dz; n += 1
            until L <= 1 - threshold (the L before that update) or n == max_iters
            L = loss(z)                               one more pass at the final latent
        z -= a dL/dz                                  the step's scheduled update

    The loop's first pass is at the same latent as the step's own pass, so that pass is
    reused (same values, one forward+backward less). check_interrupt runs before every
    forward pass, so a Cancel stops within one of them. report.iterations counts updates.
    """
    report = StepReport(step=step, step_size=step_size)
    check_interrupt()
    pending = gradient_step(latent, compute_terms, step_size, report)
    report.losses = _means(pending[1])
    if refinement is not None:
        x, active, n = latent, refinement.needs(pending[1]), 0
        while bool(active.any()) and n < refinement.max_iters:
            x_new, terms = pending
            x = torch.where(active[:, None, None, None], x_new, x)
            n += 1
            active = active & refinement.needs(terms)  # an image stops once the L before its update met the target
            if bool(active.any()) and n < refinement.max_iters:
                check_interrupt()
                pending = gradient_step(x, compute_terms, step_size, report)
        if n:
            report.iterations = n
            check_interrupt()
            pending = gradient_step(x, compute_terms, step_size, report)
    x, terms = pending
    report.final_total = float(terms["total"].float().mean())
    report.iterations += 1
    return x, report


def _means(terms: Terms) -> dict[str, float]:
    return {k: float(v.float().mean()) for k, v in terms.items()}
