"""One guided step: move the noisy latent down the gradient of the attention loss.

The host supplies `compute_terms(latent) -> dict[str, (B,)]`, which runs the guidance
forward pass on a latent that requires grad and returns the loss terms. Everything
here is plain torch.

No value leaves the device during a step, except the test that decides whether a refinement
goes on: reading a value on the host waits for every kernel queued before it, so a GPU would
idle while the host catches up. The step's report keeps its values as tensors, read on the
host when the report is read or, for a whole run at once, by settle_reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch.profiler import record_function

Terms = dict[str, torch.Tensor]


Value = Union[float, torch.Tensor]  # a float, or a () tensor not yet read on the host


class StepReport:
    """What happened at one guided step (losses are batch means).

    step, step_size, iterations: the step, its alpha, and its updates (refinement included).
    losses:      {term: float} before the first update
    final_total: the loss at the latent the scheduled update started from
    skipped:     why an image's update was dropped, one line per image, in the order found

    While the run goes on, the losses are () float32 tensors and the images' finite flags
    (B,) bool tensors, on the latent's device (keep_losses, keep_final_total, keep_finite):
    they become floats and lines when one of the three is read, or for every report of a run
    in one transfer by settle_reports. A report may also be made with floats (a log's lines).
    """

    def __init__(self, step: int, step_size: float, iterations: int = 0, losses: Optional[dict[str, Value]] = None,
                 final_total: Optional[Value] = None, skipped: Optional[list[str]] = None):
        self.step = step
        self.step_size = step_size
        self.iterations = iterations
        self._losses: dict[str, Value] = dict(losses or {})
        self._final_total: Optional[Value] = final_total
        self._skipped: list[str] = list(skipped or [])
        self._finite: list[torch.Tensor] = []  # (B,) bool per pass, not yet read: False = that image skipped

    def __repr__(self) -> str:
        return (f"StepReport(step={self.step}, step_size={self.step_size}, iterations={self.iterations}, "
                f"losses={self.losses}, final_total={self.final_total}, skipped={self.skipped})")

    @property
    def losses(self) -> dict[str, float]:
        settle_reports([self])
        return self._losses

    @property
    def final_total(self) -> Optional[float]:
        settle_reports([self])
        return self._final_total

    @property
    def skipped(self) -> list[str]:
        settle_reports([self])
        return self._skipped

    def keep_losses(self, terms: Terms) -> None:
        """The step's loss terms {term: (B,)} before its first update, kept as () batch means."""
        self._losses = {k: v.detach().float().mean() for k, v in terms.items()}

    def keep_final_total(self, terms: Terms) -> None:
        """The total of the pass the scheduled update started from, kept as a () batch mean."""
        self._final_total = terms["total"].detach().float().mean()

    def keep_finite(self, finite: torch.Tensor) -> None:
        """(B,) bool of one pass: False where an image's loss or gradient was not finite."""
        self._finite.append(finite.detach())

    def _unread(self) -> list[torch.Tensor]:
        """The values not yet read on the host, in the order _read takes them back."""
        return ([v for v in self._losses.values() if isinstance(v, torch.Tensor)]
                + ([self._final_total] if isinstance(self._final_total, torch.Tensor) else []) + self._finite)

    def _read(self, values: list[list[float]]) -> None:
        """Take back _unread()'s values, read on the host (one flat list each)."""
        values = iter(values)
        self._losses = {k: (next(values)[0] if isinstance(v, torch.Tensor) else v) for k, v in self._losses.items()}
        if isinstance(self._final_total, torch.Tensor):
            self._final_total = next(values)[0]
        for finite in self._finite:
            for b, ok in enumerate(next(values)):
                reason = f"image {b}: non-finite loss or gradient"
                if not ok and reason not in self._skipped:
                    self._skipped.append(reason)
        self._finite = []

    def line(self) -> str:
        terms = " ".join(f"{k}={v:.4f}" for k, v in self.losses.items())
        extra = f" iters={self.iterations}" if self.iterations > 1 else ""
        skip = f" SKIPPED: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"step {self.step:3d} alpha={self.step_size:.2f} {terms}{extra}{skip}"


def settle_reports(reports: Sequence[StepReport]) -> None:
    """Read every value the reports keep as tensors on the host, in one transfer per device
    (a run's values all lie on one): one wait for the device, where reading them one by one
    would wait once per value. Values and order are those float() and nonzero() would give."""
    pending = [(r, r._unread()) for r in reports]
    tensors = [t for _, ts in pending for t in ts]
    if not tensors:
        return
    flat: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        flat.setdefault(t.device, []).append(t.reshape(-1).to(torch.float32))  # () float32 means, bool flags: exact
    host = {device: iter(torch.cat(ts).tolist()) for device, ts in flat.items()}
    for report, ts in pending:
        report._read([[next(host[t.device]) for _ in range(t.numel())] for t in ts])


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
        with record_function("ai_t2i.backward"):
            grad = torch.autograd.grad(torch.where(ok, total, torch.zeros_like(total)).sum(), x, allow_unused=True)[0]
    if grad is None:
        raise RuntimeError("the attention loss does not depend on the latent: no cross-attention layer was captured with gradients")
    with record_function("ai_t2i.update"):
        ok = ok & _finite_rows(grad)
        report.keep_finite(ok)
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
    reused (same values, one forward+backward less). After each refinement update the next
    pass is at the updated latent whether the loop goes on (its next update's pass) or ends
    (the final pass), so every update is followed by exactly one pass: n refinement updates
    take n + 1 passes in all, and the test that decides reads the device once per update.
    check_interrupt runs before every forward pass, so a Cancel stops within one of them.
    report.iterations counts updates (so it equals the step's passes).
    """
    report = StepReport(step=step, step_size=step_size)
    check_interrupt()
    pending = gradient_step(latent, compute_terms, step_size, report)
    with record_function("ai_t2i.record"):
        report.keep_losses(pending[1])
    if refinement is not None:
        with record_function("ai_t2i.refinement"):
            x, active, n = latent, refinement.needs(pending[1]), 0
            while n < refinement.max_iters and _any(active):
                x_new, terms = pending
                x = torch.where(active[:, None, None, None], x_new, x)
                n += 1
                active = active & refinement.needs(terms)  # an image stops once the L before its update met the target
                check_interrupt()
                pending = gradient_step(x, compute_terms, step_size, report)  # the next update's, or the final, pass
            report.iterations = n
    x, terms = pending
    with record_function("ai_t2i.record"):
        report.keep_final_total(terms)
    report.iterations += 1
    return x, report


def _any(active: torch.Tensor) -> bool:
    """Whether any image of (B,) bool still refines: the one read of the device a refinement needs."""
    with record_function("ai_t2i.refinement_test"):
        return bool(active.any())
