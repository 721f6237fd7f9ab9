"""benchmarks/cost.py samples the joint-attention (DiT) models at a tiny size: their rows, the
explicit-map row, and no down/up rows for them (no timing asserted)."""
import math
import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

from benchmarks import cost


def test_cost_has_rows_for_the_joint_attention_models(capsys, monkeypatch):
    from importlib import import_module
    from comfy_host import import_pack
    joint_maps = import_module(import_pack().__name__ + ".ai_t2i_attention.joint_maps")
    calls = {"fused": 0, "explicit": 0}

    def counting(path, fn):
        def wrapped(*args, **kwargs):
            calls[path] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(joint_maps._JointProbabilities, "apply", counting("fused", joint_maps._JointProbabilities.apply))
    monkeypatch.setattr(joint_maps, "_explicit_joint_probabilities",
                        counting("explicit", joint_maps._explicit_joint_probabilities))
    rows = cost.main(["--models", "flux:64,sd35m:64", "--steps", "2",
                      "--methods", "plain,ai_t2i,ai_t2i_down_up,ai_t2i_explicit_map"])
    by_model = {}
    for label, method, seconds, cpu, mib, time_ratio, cpu_ratio, memory_ratio in rows:
        by_model.setdefault(label, {})[method] = (seconds, time_ratio)
    assert set(by_model) == {"flux 64px reduced", "sd35m 64px reduced"}
    for methods in by_model.values():
        assert list(methods) == ["plain", "ai_t2i", "ai_t2i_explicit_map"]  # down+up does not apply to a DiT
        assert methods["plain"][1] == 1.0
        assert all(s > 0 and math.isfinite(r) for s, r in methods.values())
    assert "| flux 64px reduced | ai_t2i_explicit_map |" in capsys.readouterr().out
    assert calls["fused"] > 0 and calls["explicit"] > 0  # each AI-T2I row read the maps by its own path
