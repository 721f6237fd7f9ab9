import pytest
import torch

from ai_t2i_attention import StepReport, gradient_step, guided_update
from ai_t2i_attention.guidance import RefinementTarget

SHAPE = (2, 4, 2, 2)  # (B, C, H, W): N = 16 values per image


def quadratic(target):
    """loss_b = mean over (C, H, W) of (x - target)^2; dL/dx = 2 (x - target) / 16."""
    def compute_terms(x):
        assert x.requires_grad
        loss = ((x - target) ** 2).mean(dim=(1, 2, 3))
        return {"total": loss, "quad": loss}
    return compute_terms


def _latent_and_target():
    g = torch.Generator().manual_seed(0)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def test_gradient_step_moves_exactly_down_the_gradient():
    x, target = _latent_and_target()
    report = StepReport(step=3, step_size=4.0)
    out, terms = gradient_step(x, quadratic(target), 4.0, report)
    # x - 4 * 2 (x - t) / 16 = x - (x - t) / 2: halfway to the target
    torch.testing.assert_close(out, x - 0.5 * (x - target))
    torch.testing.assert_close(out, (x + target) / 2)
    torch.testing.assert_close(terms["total"], ((x - target) ** 2).mean(dim=(1, 2, 3)))
    assert not terms["total"].requires_grad
    assert report.skipped == []
    assert not out.requires_grad and out.dtype == torch.float32
    # the input latent is not modified
    x2, _ = _latent_and_target()
    torch.testing.assert_close(x, x2)
    # a full step (step_size 8) lands on the target
    out8, _ = gradient_step(x, quadratic(target), 8.0, StepReport(0, 8.0))
    torch.testing.assert_close(out8, target)


def test_non_finite_image_is_left_unchanged_and_reported():
    x, target = _latent_and_target()

    def compute_terms(z):
        loss = ((z - target) ** 2).mean(dim=(1, 2, 3))
        loss = torch.cat([loss[:1], loss[1:] * float("nan")])  # image 1 only goes NaN
        return {"total": loss}

    report = StepReport(step=0, step_size=4.0)
    out, terms = gradient_step(x, compute_terms, 4.0, report)
    torch.testing.assert_close(out[0], (x[0] + target[0]) / 2)
    assert torch.equal(out[1], x[1])
    assert torch.isfinite(out).all()
    assert len(report.skipped) == 1 and "image 1" in report.skipped[0]
    assert "SKIPPED" in report.line() and "image 1" in report.line()
    assert torch.isnan(terms["total"][1]) and torch.isfinite(terms["total"][0])


def test_non_finite_gradient_with_finite_loss_is_skipped():
    x, target = _latent_and_target()
    x = x.clone()
    x[0] = target[0]  # sqrt at 0: finite loss, NaN gradient for image 0

    def compute_terms(z):
        return {"total": ((z - target) ** 2).sum(dim=(1, 2, 3)).sqrt()}

    report = StepReport(step=0, step_size=1.0)
    out, terms = gradient_step(x, compute_terms, 1.0, report)
    assert torch.isfinite(terms["total"]).all()
    assert torch.equal(out[0], x[0])
    d = x[1] - target[1]
    torch.testing.assert_close(out[1], x[1] - d / d.norm())
    assert len(report.skipped) == 1 and "image 0" in report.skipped[0]


def test_gradient_step_under_inference_mode():
    x, target = _latent_and_target()
    with torch.inference_mode():
        latent = x.clone()
        assert latent.is_inference()
        out, terms = gradient_step(latent, quadratic(target), 4.0, StepReport(0, 4.0))
        out2, report = guided_update(latent, quadratic(target), step=0, step_size=4.0)
    torch.testing.assert_close(out, (x + target) / 2)
    torch.testing.assert_close(out2, (x + target) / 2)
    assert report.iterations == 1


def test_gradient_step_under_no_grad_and_half_latent():
    x, target = _latent_and_target()
    seen = []

    def compute_terms(z):
        seen.append(z.dtype)
        return {"total": ((z.float() - target) ** 2).mean(dim=(1, 2, 3))}

    with torch.no_grad():
        out, _ = gradient_step(x.half(), compute_terms, 4.0, StepReport(0, 4.0))
    assert seen == [torch.float16]
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), (x.half().float() + target) / 2, atol=2e-3, rtol=2e-3)


def test_loss_without_latent_dependence_raises():
    x, _ = _latent_and_target()
    const = torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not depend on the latent"):
        gradient_step(x, lambda z: {"total": const * 2}, 1.0, StepReport(0, 1.0))


def presence_toy(calls):
    """presence_b = 1 - mean(x_b); dL/dx = -1/4 per value for a (B, 1, 2, 2) latent."""
    def compute_terms(x):
        calls.append(x.detach().clone())
        p = 1.0 - x.mean(dim=(1, 2, 3))
        return {"presence": p, "total": p}
    return compute_terms


def test_guided_update_without_threshold_is_one_step():
    calls = []
    x = torch.zeros(1, 1, 2, 2)
    out, report = guided_update(x, presence_toy(calls), step=7, step_size=1.0)
    torch.testing.assert_close(out, torch.full_like(x, 0.25))
    assert len(calls) == 1 and report.iterations == 1
    assert report.step == 7 and report.step_size == 1.0
    assert report.losses == {"presence": 1.0, "total": 1.0}
    assert report.final_total == 1.0


def test_guided_update_refines_as_the_reference_loops():
    # Each update adds 0.25; presence = 1 - x must fall to <= 1 - 0.6 = 0.4. The reference loop:
    # L(0)=1 -> 0.25, L=.75 -> .5, L=.5 -> .75, L=.25 <= .4 -> 1.0 (the update is made even then),
    # one more pass at 1.0, then the scheduled update -> 1.25.
    calls = []
    x = torch.zeros(1, 1, 2, 2)
    out, report = guided_update(x, presence_toy(calls), step=0, step_size=1.0,
                                refinement=RefinementTarget(0.6, max_iters=20))
    assert report.iterations == 5  # 4 refinement updates + the scheduled one
    # the step's own pass at 0 serves as the loop's first pass: one pass fewer than the reference's 6
    assert [float(c.mean()) for c in calls] == [0.0, 0.25, 0.5, 0.75, 1.0]
    torch.testing.assert_close(out, torch.full_like(x, 1.25))
    assert report.losses["presence"] == 1.0  # before the first update
    assert report.final_total == 0.0  # the loss at the scheduled update's pass
    assert "iters=5" in report.line()


def test_one_refinement_update_that_reaches_the_target_makes_three_in_all():
    # The reference's count: L(0)=1 > 0.6 -> update to 0.5; L(0.5)=0.5 <= 0.6: that pass's
    # update is still made (-> 1.0); one more pass; the scheduled update (-> 1.5).
    calls = []
    out, report = guided_update(torch.zeros(1, 1, 2, 2), presence_toy(calls), step=0, step_size=2.0,
                                refinement=RefinementTarget(0.4))
    assert report.iterations == 3
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 1.5))


def test_guided_update_met_target_makes_no_refinement():
    calls = []
    out, report = guided_update(torch.full((1, 1, 2, 2), 0.9), presence_toy(calls), step=0, step_size=1.0,
                                refinement=RefinementTarget(0.6))
    assert report.iterations == 1 and len(calls) == 1
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 1.15))


def test_guided_update_respects_max_iters():
    calls = []
    x = torch.zeros(1, 1, 2, 2)
    out, report = guided_update(x, presence_toy(calls), step=0, step_size=1.0,
                                refinement=RefinementTarget(0.95, max_iters=2))
    assert len(calls) == 3 and report.iterations == 3  # 2 refinements + the scheduled step
    torch.testing.assert_close(out, torch.full_like(x, 0.75))


def test_guided_update_fixed_count_refinement():
    # test None: no term decides, exactly max_iters refinement updates whatever the loss
    calls = []
    out, report = guided_update(torch.full((1, 1, 2, 2), 5.0), presence_toy(calls), step=0, step_size=1.0,
                                refinement=RefinementTarget(test=None, max_iters=3))
    assert report.iterations == 4 and len(calls) == 4
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 6.0))


def test_guided_update_refines_only_images_that_need_it():
    calls = []
    x = torch.zeros(2, 1, 2, 2)
    x[1] = 2.0  # presence already -1: never needs refinement
    out, report = guided_update(x, presence_toy(calls), step=0, step_size=1.0, refinement=RefinementTarget(0.6))
    torch.testing.assert_close(out[0], torch.full((1, 2, 2), 1.25))
    torch.testing.assert_close(out[1], torch.full((1, 2, 2), 2.25))  # only the scheduled step
    assert report.iterations == 5


def test_refinement_on_a_term_the_loss_lacks_fails_loudly():
    def terms(x):
        return {"total": (x ** 2).mean(dim=(1, 2, 3))}

    with pytest.raises(ValueError, match="refinement tests the loss term 'presence'.*contract"):
        guided_update(torch.ones(1, 1, 2, 2), terms, step=0, step_size=2.0, refinement=RefinementTarget(0.8))


def test_check_interrupt_propagates():
    class Cancelled(Exception):
        pass

    calls, checks = [], []

    def check():
        checks.append(1)
        if len(checks) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        guided_update(torch.zeros(1, 1, 2, 2), presence_toy(calls), step=0, step_size=1.0,
                      refinement=RefinementTarget(0.95), check_interrupt=check)
    assert len(calls) == 1  # stopped before the second forward pass

    def always():
        raise Cancelled()

    with pytest.raises(Cancelled):
        guided_update(torch.zeros(1, 1, 2, 2), presence_toy(calls), step=0, step_size=1.0, check_interrupt=always)
    assert len(calls) == 1
