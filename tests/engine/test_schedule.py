import math

import numpy as np
import pytest

from ai_t2i_attention import GuidanceSchedule


def test_default_guides_first_half_of_50_steps():
    s = GuidanceSchedule()
    assert s.guided_steps(50) == list(range(25))
    assert [i for i in range(50) if s.is_guided(i, 50)] == list(range(25))


def test_fractions_scale_to_other_step_counts():
    s = GuidanceSchedule()
    assert s.guided_steps(20) == list(range(10))
    assert s.guided_steps(1) == [0]
    part = GuidanceSchedule(start=0.2, end=0.6)
    assert part.guided_steps(20) == list(range(4, 12))
    assert part.guided_steps(50) == list(range(10, 30))
    assert GuidanceSchedule(start=0.0, end=1.0).guided_steps(20) == list(range(20))
    assert GuidanceSchedule(start=0.3, end=0.3).guided_steps(20) == []
    for n in (20, 50):
        assert [i for i in range(n) if part.is_guided(i, n)] == part.guided_steps(n)
    assert not s.is_guided(0, 0)


@pytest.mark.parametrize("n", [1, 2, 20, 50])
def test_step_size_matches_reference_formula(n):
    s = GuidanceSchedule()
    ref = 20.0 * np.sqrt(np.linspace(1.0, 0.5, n))
    got = [s.step_size(i, n) for i in range(n)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    if n > 1:
        assert math.isclose(got[0], 20.0) and math.isclose(got[-1], 20.0 * math.sqrt(0.5))


def test_step_size_custom_factor_and_range():
    s = GuidanceSchedule(scale_factor=10.0, scale_range=(0.8, 0.2))
    ref = 10.0 * np.sqrt(np.linspace(0.8, 0.2, 30))
    np.testing.assert_allclose([s.step_size(i, 30) for i in range(30)], ref, rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(start=0.6, end=0.4), "swap"),
    (dict(start=-0.1, end=0.5), "0.0..1.0"),
    (dict(start=0.0, end=1.5), "0.0..1.0"),
    (dict(scale_factor=-1.0), "scale_factor"),
])
def test_invalid_schedules_raise_with_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidanceSchedule(**kwargs)
