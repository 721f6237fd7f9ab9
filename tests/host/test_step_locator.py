"""The step of a model call, told from its sigma (nodes/host/step_locator.py), on plain sigma
schedules: no model needed."""
import pytest
import torch

from ai_t2i_pack.nodes.host.errors import GuidanceError
from ai_t2i_pack.nodes.host.step_locator import StepLocator

SIGMAS = torch.tensor([14.614641, 6.2, 2.5, 0.9, 0.0])  # steps 0..3 run from sigmas[0..3]


def _call(sigma: float, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    """sigma (B,) as a k-diffusion sampler passes it: the step's sigma times ones, in the latent's dtype."""
    return torch.tensor(sigma, dtype=torch.float32).to(dtype) * torch.ones(batch, dtype=dtype)


def test_a_call_is_the_step_its_sigma_stands_at():
    locator = StepLocator(SIGMAS)
    assert [locator.step_at(_call(float(s))) for s in SIGMAS[:-1]] == [0, 1, 2, 3]
    assert locator.reached == 3


def test_a_second_call_at_the_same_step_is_none():
    """A further call at the latest step's sigma is not that step's own (None), a step already
    passed is not found again, and the next step's sigma is that step."""
    locator = StepLocator(SIGMAS)
    assert locator.step_at(_call(float(SIGMAS[1]))) == 1
    assert locator.step_at(_call(float(SIGMAS[1]))) is None
    assert locator.step_at(_call(float(SIGMAS[0]))) is None  # a step already passed is not found again
    assert locator.step_at(_call(float(SIGMAS[2]))) == 2


def test_a_repeated_sigma_is_each_of_its_positions_in_turn():
    s = 3.0
    locator = StepLocator(torch.tensor([s, s, 0.5 * s, 0.0]))
    assert [locator.step_at(_call(v)) for v in (s, s, 0.5 * s)] == [0, 1, 2]
    assert locator.step_at(_call(s)) is None


def test_sigma_is_compared_in_the_latents_dtype():
    """A half-precision latent's sampler passes the sigma rounded to float16 (14.614641 ->
    14.6171875): it is still that step."""
    locator = StepLocator(SIGMAS)
    half = _call(float(SIGMAS[0]), dtype=torch.float16)
    assert float(half[0]) != float(SIGMAS[0])
    assert locator.step_at(half) == 0


def test_a_sigma_of_no_step_is_refused_naming_the_fix():
    locator = StepLocator(SIGMAS)
    with pytest.raises(GuidanceError, match=r"at sigma 7\.5, which is none of its steps' sigmas \(e\.g\. euler with "
                                            r"s_churn\).*use it without churn, or another sampler"):
        locator.step_at(_call(7.5))
