"""The pack's structure may change; what it computes may not. Every run of equivalence.py
(each method, both sampler drivers, a layout, maps after, batch 2, the one-node KSampler,
SD1.5/SDXL-shaped UNets, SD3/SD3.5/Flux-shaped DiTs) gives the fixture's output latent and
run record, bit for bit, on the machine kind the fixture was recorded on.

Bit-for-bit equality of float results holds for one torch build and one CPU kernel set;
elsewhere (another torch, AVX-512 against AVX2) the reductions may round differently, and
the comparison falls back to a tight tolerance, saying so."""
import pytest
import torch

from equivalence import FIXTURE, RUNS, environment, run_all

TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # only where the fixture's environment is not this one


@pytest.fixture(scope="module")
def recorded():
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def results(pack):
    return run_all(pack)


def _same(a, b, exact: bool, where: str):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if exact:
            assert torch.equal(a, b), f"{where}: differs (max |diff| {float((a.float() - b.float()).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a, b, **TOLERANCE, msg=where)
    elif isinstance(a, float) and not exact:
        assert a == pytest.approx(b, rel=TOLERANCE["rtol"], abs=TOLERANCE["atol"]), where
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, exact, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], exact, f"{where}.{k}")
    elif isinstance(a, str) and not exact:
        assert a.split()[:3] == b.split()[:3], where  # the log's numbers are compared as the report's floats
    else:
        assert a == b, where


def test_fixture_covers_every_run(recorded):
    assert set(recorded["runs"]) == set(RUNS)


@pytest.mark.parametrize("name", list(RUNS))
def test_run_unchanged(recorded, results, name):
    exact = recorded["environment"] == environment()
    if not exact:
        print(f"fixture recorded on {recorded['environment']}, running on {environment()}: compared within {TOLERANCE}")
    want, got = recorded["runs"][name], results[name]
    assert want.keys() == got.keys(), f"{name}: the run record has other steps or entries"
    for key in want:
        _same(want[key], got[key], exact, f"{name}:{key}")
