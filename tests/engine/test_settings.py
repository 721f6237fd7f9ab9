"""GuidanceSettings from the node's widget values (GuidanceSettings.from_widgets), and RunRecord's log."""

import pytest

from ai_t2i_attention import (PRESETS, GuidanceSchedule, GuidanceSettings, RunRecord, SettingsError, StepReport,
                              configured_preset)
from ai_t2i_attention.joint_maps import JointMapRule

WIDGETS = dict(method="AI-T2I", strength=1.0, start_percent=0.0, end_percent=0.5)


def settings(**kw) -> GuidanceSettings:
    return GuidanceSettings.from_widgets(**{**WIDGETS, **kw})


def refining_steps(s: GuidanceSettings, n: int = 50) -> dict:
    """step -> (threshold, test, max_iters) of every step of n the settings refine."""
    targets = {i: s.preset.refinement_at(i, n) for i in range(n)}
    return {i: (t.threshold, t.test, t.max_iters) for i, t in targets.items() if t is not None}


def test_widgets_make_the_preset_and_schedule():
    s = settings(method="AI-T2I isolation only", strength=0.5, start_percent=0.1, end_percent=0.7, scale_factor=12.0,
                 isolation_metric="cosine", level="1/2", layers="down")
    assert s.preset == configured_preset("AI-T2I isolation only", isolation_metric="cosine")
    assert s.schedule == GuidanceSchedule(start=0.1, end=0.7, scale_factor=12.0)
    assert (s.strength, s.level, s.layers) == (0.5, "1/2", "down")
    assert (s.keep_maps, s.keep_maps_after, s.stop_early, s.fused_attention) == (True, False, True, True)


def test_joint_map_names_a_rule_and_an_unknown_one_names_the_choices():
    assert settings().joint_map == "sharpened joint softmax" and settings().joint_map_rule.sharpen
    assert settings(joint_map="joint softmax").joint_map_rule == JointMapRule("all", sharpen=False)
    s = settings(joint_map="sharpened joint softmax")
    assert (s.joint_map_rule.keys, s.joint_map_rule.sharpen) == ("all", True)
    assert settings(joint_map="text softmax").joint_map_rule.keys == "text"
    with pytest.raises(SettingsError, match="unknown joint_map 'cross'; choose one of joint softmax, text softmax, "
                                            "sharpened joint softmax"):
        settings(joint_map="cross")


def test_refinement_preset_keeps_the_methods_own_choice():
    assert refining_steps(settings()) == {}  # AI-T2I: off, as its reference code
    assert refining_steps(settings(method="Attend-and-Excite")) == {0: (0.05, "presence", 20), 10: (0.5, "presence", 20),
                                                                    20: (0.8, "presence", 20)}
    assert refining_steps(settings(method="Divide & Bind")) == {0: (0.05, "presence", 20), 10: (0.2, "presence", 20),
                                                                20: (0.3, "presence", 20)}
    assert refining_steps(settings(method="CONFORM")) == {i: (None, None, 20) for i in (0, 10, 20)}
    assert refining_steps(settings(method="A-STAR")) == {}


def test_refinement_on_and_off_overrule_the_preset():
    on = settings(refinement="on")
    assert on.preset.refine and refining_steps(on) == refining_steps(settings(method="Attend-and-Excite"))
    assert refining_steps(settings(method="Attend-and-Excite", refinement="off")) == {}
    assert refining_steps(settings(method="A-STAR", refinement="off")) == {}
    assert PRESETS["Attend-and-Excite"].refine  # the table itself is untouched


def test_refinement_on_for_a_method_without_one_names_the_fix():
    with pytest.raises(SettingsError, match="A-STAR has no iterative refinement.*'preset' or 'off'"):
        settings(method="A-STAR", refinement="on")
    assert issubclass(SettingsError, ValueError)


def test_unknown_widget_values_raise_with_the_choices():
    with pytest.raises(SettingsError, match="unknown refinement 'sometimes'; choose preset, on or off"):
        settings(refinement="sometimes")
    with pytest.raises(ValueError, match="unknown method 'AI-T3I'; choose one of: AI-T2I"):
        settings(method="AI-T3I")
    with pytest.raises(ValueError, match="swap them"):
        settings(start_percent=0.6, end_percent=0.4)


def test_run_record_log_names_the_run_and_every_step():
    record = RunRecord(subjects=["cat", "dog"], map_size=(16, 16), layers="down+up (4 layers)", pass_work=0.42,
                       reports=[StepReport(step=0, step_size=20.0, losses={"total": 0.5}),
                                StepReport(step=1, step_size=19.5, iterations=3, losses={"total": 0.25})])
    assert record.log_text().splitlines() == [
        "AI-T2I run: subjects=cat, dog maps=(16, 16) from down+up (4 layers), guidance pass ~42% of the network",
        "step   0 alpha=20.00 total=0.5000",
        "step   1 alpha=19.50 total=0.2500 iters=3",
    ]
    assert RunRecord(subjects=["cat"]).log_text() == "AI-T2I run: subjects=cat maps=None"
