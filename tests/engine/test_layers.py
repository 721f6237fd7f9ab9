"""The layer policy on plain layer lists: levels, layer sets and the 'auto' cost rule."""

import pytest

from ai_t2i_attention.layers import (AUTO_WORK_BUDGET, Layer, LayerChoiceError, choose_layers, describe_layers,
                                     layers_of_set)

# An SD1.5-like UNet: input 1, 2 (1/1), 4, 5 (1/2), 7, 8 (1/4); middle (1/8); output 3-5 (1/4), 6-8 (1/2), 9-11 (1/1).
SD15 = tuple([Layer(("input", i, 0), f) for i, f in ((1, 1), (2, 1), (4, 2), (5, 2), (7, 4), (8, 4))]
             + [Layer(("middle", 0, 0), 8)]
             + [Layer(("output", i, 0), f) for i, f in ((3, 4), (4, 4), (5, 4), (6, 2), (7, 2), (8, 2), (9, 1),
                                                          (10, 1), (11, 1))])


def test_auto_level_is_the_one_nearest_16x16():
    assert describe_layers(choose_layers(SD15, (64, 64), "auto", "down+up")) == "input 7, 8 + output 3, 4, 5 (5 layers)"
    assert describe_layers(choose_layers(SD15, (32, 32), "auto", "down+up")) == "input 4, 5 + output 6, 7, 8 (5 layers)"
    assert describe_layers(choose_layers(SD15, (64, 64), "1/8", "down+mid+up")) == "middle 0 (1 layer)"


def test_auto_set_follows_the_work_budget_and_controlnet():
    over = lambda layers: AUTO_WORK_BUDGET + 0.01  # noqa: E731
    assert describe_layers(choose_layers(SD15, (64, 64), "auto", "auto", over)) == "input 7, 8 (2 layers)"
    assert len(choose_layers(SD15, (64, 64), "auto", "auto", lambda layers: AUTO_WORK_BUDGET)) == 5
    assert len(choose_layers(SD15, (64, 64), "auto", "auto", over, control=True)) == 5  # ControlNet: down+up
    assert len(choose_layers(SD15, (64, 64), "auto", "auto")) == 5  # no cost estimate: the reference's set
    up_only = tuple(l for l in SD15 if l.key[0] != "input")
    assert len(choose_layers(up_only, (64, 64), "auto", "auto", over)) == 3  # no down layers there: keep what exists


@pytest.mark.parametrize("level, layer_set, hw, message", [
    ("1/3", "down+up", (64, 64), "unknown level '1/3'"),
    ("auto", "downs", (64, 64), r"unknown layer set 'downs'; choose one of auto, down\+up"),
    ("1/8", "down+up", (64, 64), "no down\\+up cross-attention at level 1/8; levels it has: 1/1, 1/2, 1/4"),
    ("1/4", "down+up", (12, 12), "gives no usable attention map at level 1/4 \\(3x3, under 4x4\\)"),
])
def test_bad_choices_name_the_fix(level, layer_set, hw, message):
    with pytest.raises(LayerChoiceError, match=message):
        choose_layers(SD15, hw, level, layer_set)


def test_odd_latents_round_up_and_empty_sets_raise():
    assert len(layers_of_set(SD15, (125, 75), "1/4", "down")) == 2  # 32x19 maps
    with pytest.raises(LayerChoiceError, match="no cross-attention in the down blocks"):
        layers_of_set(tuple(l for l in SD15 if l.key[0] == "middle"), (64, 64), "auto", "down")
