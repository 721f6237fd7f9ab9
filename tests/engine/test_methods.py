"""The methods table (methods.py) is written out whole and filled by nothing else; each preset
answers which refinement falls on a step; every term has its weight. (That no engine module
imports another in a circle is test_import_graph.py's.)"""
import json
import pathlib
import subprocess
import sys
from dataclasses import replace

import pytest

from ai_t2i_attention import (ATTEND_AND_EXCITE_REFINEMENT, LOSSES, PRESETS, LayoutWeights, LossWeights, Preset,
                              Refinement)
from ai_t2i_attention import baselines, losses, methods
from ai_t2i_attention.losses import TERMS

ENGINE = pathlib.Path(__file__).resolve().parents[2] / "ai_t2i_attention"

# The method Combo's order (nodes/options.py lists PRESETS as they stand).
PRESET_ORDER = ["AI-T2I", "AI-T2I aggregation only", "AI-T2I isolation only", "Attend-and-Excite", "Divide & Bind",
                "A-STAR", "CONFORM"]
LOSS_FUNCTIONS = {"ai_t2i": losses.ai_t2i_loss, "attend_and_excite": losses.attend_and_excite_loss,
                  "divide_and_bind": baselines.divide_and_bind_loss, "a_star": baselines.a_star_loss,
                  "conform": baselines.conform_loss}


# ---------------------------------------------------------------- the table

def test_the_table_lists_every_loss_and_preset_in_order():
    assert LOSSES == LOSS_FUNCTIONS and list(LOSSES) == list(LOSS_FUNCTIONS)
    assert list(PRESETS) == PRESET_ORDER
    assert LOSSES is methods.LOSSES and PRESETS is methods.PRESETS
    assert not hasattr(losses, "LOSSES") and not hasattr(losses, "PRESETS")  # one table, in methods.py


def test_importing_methods_alone_gives_the_whole_table():
    """methods.py with the package's __init__ never run (it imports every module): nothing but
    methods.py and what it imports itself can have filled the table."""
    probe = (
        "import json, sys, types\n"
        f"pkg = types.ModuleType('ai_t2i_attention'); pkg.__path__ = [{str(ENGINE)!r}]\n"
        "sys.modules['ai_t2i_attention'] = pkg\n"
        "from ai_t2i_attention import methods\n"
        "print(json.dumps([list(methods.LOSSES), list(methods.PRESETS)]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [list(LOSS_FUNCTIONS), PRESET_ORDER]


def test_running_the_loss_modules_again_leaves_the_table_as_it_is():
    """Every line of losses.py and baselines.py run once more (in a fresh namespace, as an
    import would run them) neither adds to the table nor swaps its entries: they register nothing."""
    before_losses, before_presets = dict(LOSSES), dict(PRESETS)
    for module in (losses, baselines):
        path = pathlib.Path(module.__file__)
        exec(compile(path.read_text(), str(path), "exec"), {"__name__": "probe", "__package__": module.__package__})
    assert list(LOSSES) == list(before_losses) and all(LOSSES[k] is before_losses[k] for k in LOSSES)
    assert list(PRESETS) == PRESET_ORDER and all(PRESETS[k] is before_presets[k] for k in PRESETS)


def test_configured_preset_keeps_the_preset_and_leaves_the_table():
    p = methods.configured_preset("Divide & Bind", isolation_metric="cosine")
    assert p.weights.isolation_metric == "cosine" and p.refinement == PRESETS["Divide & Bind"].refinement
    assert PRESETS["Divide & Bind"].weights.isolation_metric == "euclidean"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of: AI-T2I, "):
        methods.configured_preset("nope")


# ---------------------------------------------------------------- which step refines

def thresholds(preset: Preset, n: int) -> dict:
    """step -> threshold of every step of n on which the preset refines."""
    targets = {i: preset.refinement_at(i, n) for i in range(n)}
    return {i: t.threshold for i, t in targets.items() if t is not None}


def test_refinement_at_attend_and_excite_points():
    ae = PRESETS["Attend-and-Excite"]
    assert thresholds(ae, 50) == {0: 0.05, 10: 0.5, 20: 0.8}
    assert thresholds(ae, 20) == {0: 0.05, 4: 0.5, 8: 0.8}
    target = ae.refinement_at(10, 50)
    assert (target.test, target.max_iters) == ("presence", 20)


def test_refinement_at_rounds_each_point_to_the_nearest_step():
    """A point at position pos falls on step round(pos * n); Python's round sends halves to
    the even step (0.1 of 5 steps is 0.5 -> step 0, of 15 steps 1.5 -> step 2)."""
    p = Preset("ai_t2i", LossWeights(), Refinement({0.1: 0.3}), refine=True)
    assert thresholds(p, 5) == {0: 0.3}
    assert thresholds(p, 15) == {2: 0.3}
    assert thresholds(p, 7) == {1: 0.3}  # 0.7
    assert thresholds(p, 1) == {0: 0.3}


def test_refinement_at_is_none_without_refinement_or_with_refine_off():
    ai = PRESETS["AI-T2I"]
    assert ai.refinement is ATTEND_AND_EXCITE_REFINEMENT and not ai.refine
    assert thresholds(ai, 50) == {}  # declared, but off by default
    assert thresholds(replace(ai, refine=True), 50) == {0: 0.05, 10: 0.5, 20: 0.8}
    assert PRESETS["A-STAR"].refinement is None
    assert thresholds(replace(PRESETS["A-STAR"], refine=True), 50) == {}


def test_fixed_count_refinement_carries_no_test_and_its_own_count():
    conform = PRESETS["CONFORM"]
    targets = [conform.refinement_at(i, 50) for i in (0, 10, 20)]
    assert all((t.threshold, t.test, t.max_iters) == (None, None, 20) for t in targets)
    fixed = Preset("conform", LossWeights(), Refinement({0.0: None}, test=None, max_iters=7), refine=True)
    t = fixed.refinement_at(0, 10)
    assert (t.threshold, t.test, t.max_iters) == (None, None, 7)


def test_a_refinement_makes_at_least_one_update():
    with pytest.raises(ValueError, match="max_iters is 0"):
        Refinement({0.0: 0.5}, max_iters=0)


# ---------------------------------------------------------------- term weights

def test_every_term_has_its_weight():
    w = LossWeights(isolation=1.1, aggregation=1.2, presence=1.3, attribute=1.4, layout=LayoutWeights(1.5, 1.6))
    weights = {term: w.weight_of(term) for term in TERMS}
    assert weights == {"isolation": 1.1, "aggregation": 1.2, "presence": 1.3, "attribute": 1.4, "layout_inner": 1.5,
                       "layout_outer": 1.6}
    with pytest.raises(KeyError, match="'contrast' has no weight"):
        w.weight_of("contrast")
