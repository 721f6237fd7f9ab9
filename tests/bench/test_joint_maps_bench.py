"""benchmarks/joint_maps.py runs at a tiny shape and prints its ratios (no timing asserted)."""
import pathlib
import re
import sys

import pytest

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

from benchmarks import joint_maps


def test_benchmark_prints_each_candidate_with_its_ratio(capsys):
    joint_maps.main(["--image", "24", "--text", "7", "--kept", "2", "--heads", "2", "--head-dim", "8", "--runs", "2"])
    out = capsys.readouterr().out
    assert "B 1, 2 heads of 8, 24 image + 7 text tokens, 2 columns kept" in out
    ratios = {name: float(x) for name, x in re.findall(r"^  (attention|map \(new\)|map \(old\)|map \(text softmax\))\s+[\d.]+ ms\s+([\d.]+)x attention",
                                                        out, flags=re.M)}
    assert set(ratios) == {"attention", "map (new)", "map (old)", "map (text softmax)"} and ratios["attention"] == 1.0
    assert all(r > 0 for r in ratios.values())
    error = float(re.search(r"faster than old\s+max rel\. error vs old ([\d.e+-]+)", out).group(1))
    assert error < 1e-4  # float32 on the CPU: the new map is the old one's to rounding


def test_benchmark_refuses_mismatched_shapes(capsys):
    with pytest.raises(SystemExit):
        joint_maps.main(["--heads", "2", "24", "--head-dim", "64"])
    assert "give one head size per head count" in capsys.readouterr().err
