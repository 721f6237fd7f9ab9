"""Bad input and Cancel: a clear message, nothing left patched, the next run works."""
import pytest
import torch

import comfy.model_management
from ai_t2i_pack.nodes.host import drivers
from runner import encode, guided_sampler, patch, plain, run


def test_cancel_during_guided_step_stops_and_leaves_model_clean(pack, sd15_small):
    model, clip = sd15_small
    before = dict(model.model_options.get("transformer_options", {}))
    patched = patch(pack, model)
    pos, neg = encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip)
    sampler = guided_sampler(pack, end_percent=1.0)
    calls, records = [], []

    def press_cancel(info):  # the user presses Cancel while step 0 runs
        calls.append(info["i"])
        comfy.model_management.interrupt_current_processing(True)

    original = drivers._InPlaceUpdates.check_callback

    def callback(self, info):
        original(self, info)
        records.append(self.run.record)  # a cancelled run never reaches the sampler's run log
        press_cancel(info)

    drivers._InPlaceUpdates.check_callback = callback
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(patched, sampler, pos, neg, size=16, steps=6)
    finally:
        drivers._InPlaceUpdates.check_callback = original
        comfy.model_management.interrupt_current_processing(False)
    assert calls == [0]  # stopped within the next step's guided update
    assert [r.step for r in records[0].reports] == [0]
    # The input model was never patched; the patched clone holds the only hooks.
    assert model.model_options.get("transformer_options", {}) == before
    out = run(patched, guided_sampler(pack), pos, neg, size=16, steps=2)
    assert torch.isfinite(out).all()


def test_second_patch_node_is_refused(pack, sd15_small):
    model, _ = sd15_small
    with pytest.raises(ValueError, match="already passed through an 'AI-T2I Attention Patch' node: remove the second"):
        patch(pack, patch(pack, model))


@pytest.mark.parametrize("subjects,message", [
    ("cat, horse", "'horse' is not in the prompt. Words in the prompt: a, cat, and, a, dog"),
    ("cat, cat", "listed twice"),
    (", ".join(f"w{i}" for i in range(9)), "at most 8"),
    ("", "no subject given"),
])
def test_subject_errors(pack, sd15_small, subjects, message):
    _, clip = sd15_small
    with pytest.raises(ValueError, match=message):
        encode(pack, clip, "a cat and a dog", subjects)


def test_empty_prompt_names_the_problem(pack, sd15_small):
    _, clip = sd15_small
    with pytest.raises(ValueError, match=r"\(empty prompt\)"):
        encode(pack, clip, "", "cat")


def test_step_range_outside_schedule(pack):
    with pytest.raises(ValueError, match="must lie within 0.0..1.0"):
        guided_sampler(pack, end_percent=1.5)
    with pytest.raises(ValueError, match="after its end"):
        guided_sampler(pack, start_percent=0.6, end_percent=0.2)


def test_latent_without_map_at_level(pack, sd15_small):
    model, clip = sd15_small
    pos, neg = encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip)
    with pytest.raises(Exception, match="gives no usable attention map at level 1/8"):
        run(patch(pack, model), guided_sampler(pack, level="1/8", layers="down+mid+up"), pos, neg, size=16, steps=2)
