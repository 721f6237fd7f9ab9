"""A guided step reads nothing back from the device but the test a refinement needs: its report
keeps the losses and the images' finite flags as tensors, read on the host when the report is
read (or for a whole run at once by settle_reports), with the values and order an immediate
read gives."""
import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ai_t2i_attention import StepReport, gradient_step, guided_update
from ai_t2i_attention import guidance
from ai_t2i_attention.guidance import RefinementTarget, settle_reports

# Tensor methods that hand a value (or a copy) to the host: on a GPU each waits for the device.
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "nonzero", "numpy"}


class HostReads(TorchFunctionMode):
    """Counts the reads of a tensor's value on the host, and those made by a refinement test."""

    def __init__(self):
        super().__init__()
        self.reads, self.in_tests, self.testing = [], 0, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.reads.append(name)
            self.in_tests += self.testing
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads(monkeypatch):
    mode = HostReads()
    any_ = guidance._any

    def marked(active):  # the refinement test: the one read a step may make
        mode.testing = True
        try:
            return any_(active)
        finally:
            mode.testing = False
    monkeypatch.setattr(guidance, "_any", marked)
    return mode


def presence_toy(x):
    """presence_b = 1 - mean(x_b), with a second term; dL/dx = -1/4 per value of a (B, 1, 2, 2) latent."""
    p = 1.0 - x.mean(dim=(1, 2, 3))
    return {"presence": p, "spread": x.std(dim=(1, 2, 3)), "total": p}


def test_a_step_without_refinement_reads_nothing(host_reads):
    x = torch.zeros(2, 1, 2, 2)
    with host_reads:
        out, report = guided_update(x, presence_toy, step=4, step_size=1.0)
    assert host_reads.reads == []
    assert report.losses == {"presence": 1.0, "spread": 0.0, "total": 1.0}  # read here, after the step
    assert report.final_total == 1.0 and report.skipped == []


def test_a_refining_step_reads_only_its_tests(host_reads):
    # presence 1 - x must fall to <= 0.4 with 0.25 an update: 4 refinement updates, each after one test
    # (and the test after the last), where the loop used to test twice per update.
    x = torch.zeros(1, 1, 2, 2)
    with host_reads:
        out, report = guided_update(x, presence_toy, step=0, step_size=1.0, refinement=RefinementTarget(0.6))
    assert report.iterations == 5
    assert host_reads.reads == ["__bool__"] * 5 and host_reads.in_tests == 5
    torch.testing.assert_close(out, torch.full_like(x, 1.25))


def test_max_iters_ends_the_loop_without_a_further_test(host_reads):
    with host_reads:
        _, report = guided_update(torch.zeros(1, 1, 2, 2), presence_toy, step=0, step_size=1.0,
                                  refinement=RefinementTarget(0.95, max_iters=2))
    assert report.iterations == 3 and host_reads.in_tests == len(host_reads.reads) == 2


def test_report_values_equal_an_immediate_read_and_skips_keep_their_order():
    """Each pass's finite flags are read in pass order: image 1 goes non-finite in the first
    pass, image 0 in the second (a fixed count of one refinement update: two passes), and the
    report names them so, not sorted."""
    calls = []

    def terms(z):
        calls.append(None)
        presence = 1.0 - z.mean(dim=(1, 2, 3)) + z.std(dim=(1, 2, 3)) * 0.1
        bad = torch.tensor([len(calls) == 2, len(calls) == 1])
        return {"presence": presence, "total": torch.where(bad, torch.full_like(presence, float("nan")), presence)}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g)
    _, report = guided_update(x, terms, step=0, step_size=1.0, refinement=RefinementTarget(test=None, max_iters=1))
    assert len(calls) == 2
    first = terms(x.clone().requires_grad_())  # the first pass's terms again (a third call: all finite)
    assert report.losses["presence"] == float(first["presence"].detach().float().mean())
    assert math.isnan(report.losses["total"])
    assert report.skipped == ["image 1: non-finite loss or gradient", "image 0: non-finite loss or gradient"]


def test_settle_reports_reads_every_report_at_once():
    reports = [StepReport(step=i, step_size=1.0) for i in range(3)]
    for i, r in enumerate(reports):
        gradient_step(torch.full((2, 1, 2, 2), float(i)), presence_toy, 1.0, r)
        r.keep_losses({"total": torch.tensor([i, i + 1.0])})
        r.keep_final_total({"total": torch.tensor([2.0 * i, 0.0])})
    mode = HostReads()
    with mode:
        settle_reports(reports)
    assert mode.reads == ["tolist"]  # one transfer for the three reports
    assert [r.losses for r in reports] == [{"total": 0.5}, {"total": 1.5}, {"total": 2.5}]
    assert [r.final_total for r in reports] == [0.0, 1.0, 2.0]
    assert all(r.skipped == [] for r in reports)
    assert "total=1.5000" in reports[1].line()


def test_a_report_made_of_floats_reads_as_given():
    report = StepReport(step=1, step_size=19.5, iterations=3, losses={"total": 0.25}, final_total=0.5,
                        skipped=["image 0: non-finite loss or gradient"])
    assert report.losses == {"total": 0.25} and report.final_total == 0.5
    assert report.line() == "step   1 alpha=19.50 total=0.2500 iters=3 SKIPPED: image 0: non-finite loss or gradient"
