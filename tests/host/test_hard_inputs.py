"""Hard inputs, faults and composition: the whole catalogue, on the real host.

Every case ends in a message that names the problem and the fix (or works), leaves the
input model's model_options as they were, puts no NaN in any output, and the next
ordinary run works. Where each case is tested:

 1. subject word absent from the prompt ........ test_errors.py::test_subject_errors (problem wording),
                                                  here: test_subject_prompt_errors_name_the_fix[absent],
                                                  executor: tests/workflow/test_executor.py::test_bad_subject_...
 2. the same word twice: listed twice ........... test_errors.py::test_subject_errors, here [twice];
    a word that occurs twice in the prompt ...... here: test_word_twice_in_prompt_guides_both_occurrences
 3. more than 8 subjects ........................ test_errors.py::test_subject_errors, here [nine]
 4. prompt over 77 tokens (must work) ........... test_unet_hooks.py::test_prompt_over_77_tokens,
                                                  here: test_subjects_in_second_and_third_chunk_resolve_and_guide
 5. empty prompt ................................ test_errors.py::test_empty_prompt_names_the_problem, here [empty]
 6. step range outside the schedule ............. test_errors.py::test_step_range_outside_schedule (values),
                                                  here: test_guided_range_holding_no_step_warns_and_runs_base,
                                                  executor: test_executor_keeps_serving[end_percent_above_1]
 7. latent with no map at the chosen level ...... test_errors.py::test_latent_without_map_at_level,
                                                  here: test_odd_and_small_latents (odd sizes work, too small
                                                  names the fix, next run works)
 8. unsupported model family .................... here: test_unsupported_model_families_name_supported_ones
 9. fp16 overflow in the gradient ............... here: test_fp16_gradient_overflow_skips_only_that_image
                                                  (also strength 100 x scale_factor 200 on fp16: finite;
                                                  engine side: tests/engine/test_guidance.py)
10. Cancel in the middle of a guided step ....... test_errors.py::test_cancel_during_guided_step_... (between
                                                  steps), here: test_cancel_inside_the_guidance_pass
11. two AI-T2I patches on one model ............. test_errors.py::test_second_patch_node_is_refused,
                                                  here (models left clean): test_sampling_time_errors_leave_...
12. another pack's attn2 patch on our layers:
    attn2 replace before (composes) ............. test_unet_hooks.py::test_existing_attn2_patch_still_runs
    attn2 replace after (composes: the guidance   test_unet_hooks.py::test_ipadapter_style_patch_composes_...
    pass wraps it on its own options copy)
    set_model_attn2_patch before and after ...... here: test_attn2_patch_composes_before_and_after
13. the same seed twice, bit for bit ............ here: test_same_seed_twice_is_bit_identical
14. batch 1 vs batch 4, first image ............. here: test_first_image_same_in_batch_of_1_and_4
                                                  (batch 2: test_guided_run.py::test_batch_guided_in_one_pass_...)
15. subjects as token indices ('5, 7') .......... here: test_subject_prompt_errors_name_the_fix[token_indices],
                                                  executor: test_executor_keeps_serving[token_indices]
16. subject node missing (plain CLIPTextEncode) . test_guided_run.py::test_unpatched_model_and_plain_prompt_errors,
                                                  here (models left clean): test_sampling_time_errors_leave_...,
                                                  executor: test_executor_keeps_serving[plain_prompt]
17. strength 0 == base sampler, bit for bit ..... test_sampling.py::test_zero_strength_reproduces_base_sampler,
                                                  executor: test_executor_strength_zero_equals_ksampler
18. a sampler it cannot drive (dpm_adaptive) .... test_sampling.py::test_adaptive_sampler_refused,
                                                  executor: test_executor_keeps_serving[dpm_adaptive]
19. malformed box / mask of the wrong size ...... test_subject_layout.py::test_malformed_box_is_a_clear_error,
                                                  ::test_wrong_masks_are_clear_errors (the layout feature's own)
20. a sampler keeping a private latent copy ..... test_drivers.py::test_sampler_with_private_latent_copy_is_refused
21. model not passed through the patch node ..... test_guided_run.py::test_unpatched_model_and_plain_prompt_errors,
                                                  here (models left clean): test_sampling_time_errors_leave_...
"""
import logging
import re

import pytest
import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.supported_models
from ai_t2i_pack.nodes.host import families
from runner import encode, guided_sampler, options_snapshot as _snapshot, patch, plain, run

PROMPT, SUBJECTS = "a cat and a dog", "cat, dog"
TINY = {"tiny": "ai_t2i_tiny_shapes.safetensors"}


def _next_run_works(pack, model, clip, size=8):
    """An ordinary guided run after a failure: finite, guided, nothing skipped."""
    sampler = guided_sampler(pack)
    out = run(patch(pack, model), sampler, encode(pack, clip, PROMPT, SUBJECTS), plain(clip), size=size, steps=2)
    assert torch.isfinite(out).all()
    assert sampler.runs.latest().reports and not sampler.runs.latest().reports[0].skipped


def _run_hw(model, sampler, pos, neg, hw, steps=2, seed=1, batch=1):
    """runner.run for a (batch, 4, h, w) latent."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    latent = torch.zeros(batch, 4, *hw)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, noise, 5.0, sampler, sigmas, pos, neg, latent, seed=seed,
                                          disable_pbar=True)


# -- subject prompt ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,subjects,problem,fix", [
    (PROMPT, "cat, horse", "'horse' is not in the prompt", "Type the subject exactly as it is written"),
    (PROMPT, "cat, cat", "listed twice", "write 'cat#2' for its second occurrence"),
    (" and ".join(f"w{i}" for i in range(9)), ", ".join(f"w{i}" for i in range(9)), "9 subjects given; at most 8",
     "keep the main ones"),
    ("", "cat", r"\(empty prompt\)", "Write a prompt that names the subject"),
    (PROMPT, "5, 7", "'5' looks like a token index", "type the subject words themselves"),
], ids=["absent", "twice", "nine", "empty", "token_indices"])
def test_subject_prompt_errors_name_the_fix(pack, sd15_small, text, subjects, problem, fix):
    model, clip = sd15_small
    before = _snapshot(model.model_options)
    with pytest.raises(ValueError) as err:
        encode(pack, clip, text, subjects)
    assert re.search(problem, str(err.value)) and re.search(fix, str(err.value)), str(err.value)
    assert _snapshot(model.model_options) == before
    _next_run_works(pack, model, clip)


def test_number_that_is_a_word_of_the_prompt_is_a_subject(pack, sd15_small):
    """'5' is only taken for a token index when the prompt has no such word."""
    _, clip = sd15_small
    spec = encode(pack, clip, "5 apples and a dog", "5, dog")[0][1]["ai_t2i_subjects"]
    assert spec.groups.subjects == ((1,), (5,))


def test_word_twice_in_prompt_guides_both_occurrences(pack, sd15_small):
    model, clip = sd15_small
    pos = encode(pack, clip, "a cat chasing a cat", "cat, cat#2")
    groups = pos[0][1]["ai_t2i_subjects"].groups
    assert groups.subjects == ((2,), (5,))
    sampler = guided_sampler(pack)
    out = run(patch(pack, model), sampler, pos, plain(clip), size=16, steps=2)
    maps = sampler.runs.latest().maps[0]
    assert torch.isfinite(out).all() and maps.shape[1] == 2
    assert not torch.equal(maps[:, 0], maps[:, 1])  # two columns, two different maps


def test_subjects_in_second_and_third_chunk_resolve_and_guide(pack, sd15_small):
    """A 3-chunk prompt (over 154 tokens): each subject's column holds that word's token in
    the chunk it was written in, and guidance runs on the 231-column context."""
    model, clip = sd15_small
    filler = ", ".join(["a very detailed oil painting"] * 14)  # about 84 tokens
    text = f"a cat, {filler}, a dog, {filler}, a bird"
    pos = encode(pack, clip, text, "cat, dog, bird")
    chunks = clip.tokenize(text)["l"]
    assert len(chunks) == 3 and pos[0][0].shape[1] == 231
    cols = pos[0][1]["ai_t2i_subjects"].groups.subjects
    for (col,), word, chunk in zip(cols, ("cat", "dog", "bird"), (0, 1, 2)):
        word_id = clip.tokenize(word)["l"][0][1][0]
        assert col // 77 == chunk and chunks[chunk][col % 77][0] == word_id
    sampler = guided_sampler(pack)
    out = run(patch(pack, model), sampler, pos, plain(clip), size=16, steps=2)
    record = sampler.runs.latest()
    assert torch.isfinite(out).all() and not record.reports[0].skipped
    assert record.maps[0].shape[:2] == (1, 3) and torch.isfinite(record.maps[0]).all()


# -- schedule and resolution ------------------------------------------------------------------

def test_guided_range_holding_no_step_warns_and_runs_base(pack, sd15_small, caplog):
    """0.9..0.95 of 4 steps holds no step: a warning with the fix, and exactly the base sampler."""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    base = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=16, steps=4, seed=3)
    with caplog.at_level(logging.WARNING, logger="ai_t2i"):
        out = run(patch(pack, model), guided_sampler(pack, start_percent=0.9, end_percent=0.95), pos, neg,
                  size=16, steps=4, seed=3)
    assert "holds none of the 4 sampling steps" in caplog.text and "use more steps" in caplog.text
    assert torch.equal(out, base)


def test_odd_and_small_latents(pack, sd15_small):
    """Odd latents (1000x600 px and the like) have maps (each down-sampling rounds up);
    a latent too small for the chosen level names the fix, and leaves the model clean."""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    patched = patch(pack, model)
    for hw, level, maps in (((25, 25), "auto", (13, 13)), ((15, 21), "1/2", (8, 11))):
        sampler = guided_sampler(pack, level=level)
        out = _run_hw(patched, sampler, pos, neg, hw)
        assert torch.isfinite(out).all() and sampler.runs.latest().map_size == maps
        assert not sampler.runs.latest().reports[0].skipped
    before = _snapshot(model.model_options), _snapshot(patched.model_options)
    with pytest.raises(Exception, match=r"a 10x12 latent gives no usable attention map at level 1/4 \(3x3, under "
                                        r"4x4\); use a larger image or a finer level"):
        _run_hw(patched, guided_sampler(pack, level="1/4"), pos, neg, (10, 12))
    assert (_snapshot(model.model_options), _snapshot(patched.model_options)) == before
    _next_run_works(pack, model, clip)


def test_sampling_time_errors_leave_the_models_clean(pack, sd15_small):
    """Errors raised once sampling starts (model not patched, plain prompt, a second patch
    node): each names the fix, neither the input model nor the patched one is changed, and
    the next run works."""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    patched = patch(pack, model)
    cases = ((model, pos, r"not patched for AI-T2I: pass it through 'AI-T2I Attention Patch'"),
             (patched, neg, r"carries no AI-T2I subjects: encode the positive prompt with 'AI-T2I Subject Prompt'"))
    for m, positive, message in cases:
        before = _snapshot(model.model_options), _snapshot(m.model_options)
        with pytest.raises(Exception, match=message):
            run(m, guided_sampler(pack), positive, neg, size=16, steps=2)
        assert (_snapshot(model.model_options), _snapshot(m.model_options)) == before
    before = _snapshot(patched.model_options)
    with pytest.raises(ValueError, match="remove the second one"):
        patch(pack, patched)
    assert _snapshot(patched.model_options) == before
    _next_run_works(pack, model, clip)


# -- models -----------------------------------------------------------------------------------

def test_unsupported_model_families_name_supported_ones(pack, sd15_small):
    from tools import random_models as builders
    _, clip = sd15_small
    # Flux.2: the host's Flux class with another text encoder and modulation, which the pack does not map.
    flux2_config = dict(image_model="flux2", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=64,
                        hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8] * 4,
                        theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, global_modulation=True,
                        mlp_silu_act=True, ops_bias=False, dtype=torch.float32)
    cases = []
    if hasattr(comfy.supported_models, "Flux2"):  # ComfyUI 0.3.64 has no Flux.2 class
        flux2 = builders._patcher(comfy.supported_models.Flux2, flux2_config, 0)  # a real (tiny) Flux.2 transformer
        cases.append((flux2, "this model is a Flux2", "Use an SD1.x/SD2.x/SDXL, SD3/SD3.5 or Flux.1 checkpoint"))
    no_cross = dict(comfy.supported_models.SD15.unet_config)
    no_cross.update(model_channels=32, in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
                    transformer_depth=[0, 0], transformer_depth_output=[0, 0, 0, 0], transformer_depth_middle=0,
                    num_heads=8, num_head_channels=-1, use_spatial_transformer=True, legacy=False, image_size=32,
                    dtype=torch.float32)
    unet = builders._patcher(comfy.supported_models.SD15, no_cross, 0)  # a UNet without cross-attention
    cases.append((unet, "this UNet has no cross-attention layers",
                  "Use an SD1.x/SD2.x/SDXL, SD3/SD3.5 or Flux.1 checkpoint"))
    for model, problem, fix in cases:
        before = _snapshot(model.model_options)
        with pytest.raises(ValueError) as err:
            patch(pack, model)
        assert problem in str(err.value) and "SD1.x, SD2.x, SDXL" in str(err.value)
        assert fix in str(err.value)
        assert _snapshot(model.model_options) == before
        with pytest.raises(ValueError, match="SD1.x, SD2.x, SDXL"):  # the one-node KSampler patches itself
            families.install_hooks(model)
    _next_run_works(pack, sd15_small[0], clip)


class _OverflowImage1(torch.autograd.Function):
    """Identity forward; in the backward, image 1's fp16 gradient is multiplied past fp16's
    range (65504) -- an injected stand-in for an fp16 gradient overflow (see the test)."""

    @staticmethod
    def forward(ctx, n):
        return n.view_as(n)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[1] = grad[1] * 65504.0 * 65504.0  # fp16 arithmetic: overflows to inf
        return grad


def test_fp16_gradient_overflow_skips_only_that_image(pack, sd15_small, caplog):
    """fp16 UNet, batch of 2, image 1's gradient overflows to inf in fp16 on a read layer.

    Why injected: strength and scale_factor only scale the step, not the gradient (the
    largest, 100 x 200, stays finite below), and on these random-weight UNets rescaling
    weights around a normalisation layer (LayerNorm gain down, query projection up to
    fp16's limit; tried) leaves |gradient| x |activation| near 1e-3, far from 65504. The
    overflow is therefore made by an attn2_patch (the host's own patch slot, as another pack
    would use it) whose backward overflows in fp16 arithmetic for image 1 only. Image 1
    keeps the base sampler's latent bit for bit, image 0 is guided, all finite."""
    from tools import random_models as builders
    _, clip = sd15_small
    half = builders.sd15_model(width=64, dtype=torch.float16)
    calls = []

    def overflow_in_backward(n, context, value, extra_options):
        if n.requires_grad and extra_options["block"] == ("input", 1):
            assert n.dtype == torch.float16
            calls.append(n.shape[0])
            n = _OverflowImage1.apply(n)
        return n, context, value

    injected = half.clone()
    injected.set_model_attn2_patch(overflow_in_backward)
    before = _snapshot(injected.model_options)
    patched = patch(pack, injected)
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    base = run(patched, guided_sampler(pack, strength=0.0), pos, neg, size=8, steps=2, batch=2)
    sampler = guided_sampler(pack)
    with caplog.at_level(logging.WARNING, logger="ai_t2i"):
        out = run(patched, sampler, pos, neg, size=8, steps=2, batch=2)
    report = sampler.runs.latest().reports[0]
    assert calls == [2]  # one guidance pass, batch of 2, the patch ran in it
    assert report.skipped == ["image 1: non-finite loss or gradient"]
    assert "SKIPPED: image 1" in sampler.runs.latest().log_text()
    assert "update was skipped" in caplog.text and "fp32/bf16" in caplog.text
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], base[1]) and not torch.equal(out[0], base[0])
    assert _snapshot(injected.model_options) == before
    _next_run_works(pack, half, clip)
    largest = guided_sampler(pack, strength=100.0, scale_factor=200.0)
    out = run(patch(pack, half), largest, pos, neg, size=8, steps=2)
    assert torch.isfinite(out).all() and not largest.runs.latest().reports[0].skipped


# -- Cancel and composition -------------------------------------------------------------------

def test_cancel_inside_the_guidance_pass(pack, sd15_small):
    """Cancel pressed while a guidance forward runs (refinement on: more passes would follow):
    the run stops before the next guidance pass; the input model stays clean."""
    model, clip = sd15_small
    passes = []

    def press_cancel(n, context, value, extra_options):
        if n.requires_grad and extra_options["block"] == ("input", 1):
            passes.append(1)
            comfy.model_management.interrupt_current_processing(True)
        return n, context, value

    m = model.clone()
    m.set_model_attn2_patch(press_cancel)
    before = _snapshot(m.model_options)
    sampler = guided_sampler(pack, method="Attend-and-Excite", refinement="on", end_percent=1.0)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(patch(pack, m), sampler, encode(pack, clip, PROMPT, SUBJECTS), plain(clip), size=16, steps=4)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert passes == [1]
    assert _snapshot(m.model_options) == before
    _next_run_works(pack, model, clip)


def test_attn2_patch_composes_before_and_after(pack, sd15_small):
    """An IPAdapter-style set_model_attn2_patch (it edits the attention's inputs) registered
    before or after 'AI-T2I Attention Patch': both orders compose, identically, and the
    other pack's change shows in the maps the loss reads."""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    seen = []

    def other_pack(n, context, value, extra_options):
        seen.append(n.requires_grad)
        return n, context * 3.0, value

    def guided(m):
        sampler = guided_sampler(pack)
        out = run(m, sampler, pos, neg, size=16, steps=2, seed=4)
        assert torch.isfinite(out).all() and not sampler.runs.latest().reports[0].skipped
        return out, sampler.runs.latest().maps[0]

    alone = guided(patch(pack, model))
    first = model.clone()
    first.set_model_attn2_patch(other_pack)
    options_before = _snapshot(first.model_options)
    before = guided(patch(pack, first))
    assert _snapshot(first.model_options) == options_before
    assert True in seen and False in seen  # ran in the guidance pass and in the sampler's passes
    after_model = patch(pack, model).clone()
    after_model.set_model_attn2_patch(other_pack)
    after = guided(after_model)
    assert not torch.allclose(alone[1], before[1], atol=1e-6)  # the other patch reaches the maps
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


# -- determinism and batches ------------------------------------------------------------------

@pytest.mark.parametrize("base", ["euler_ancestral", "heun"])
def test_same_seed_twice_is_bit_identical(pack, sd15_small, base):
    """In place (euler_ancestral, with noise) and step by step (heun); the same sampler
    object is reused, as the host reuses a cached node output."""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    patched, sampler = patch(pack, model), guided_sampler(pack, base)
    first = run(patched, sampler, pos, neg, size=8, steps=3, seed=21, batch=2)
    first_maps = sampler.runs.latest().maps[0]
    second = run(patched, sampler, pos, neg, size=8, steps=3, seed=21, batch=2)
    fresh = run(patch(pack, model), guided_sampler(pack, base), pos, neg, size=8, steps=3, seed=21, batch=2)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second) and torch.equal(first, fresh)
    assert torch.equal(first_maps, sampler.runs.latest().maps[0])


def test_first_image_same_in_batch_of_1_and_4(pack, sd15_small):
    """comfy.sample.prepare_noise draws the whole batch from one generator in order, so
    image 0's noise is the same for any batch size, and the loss is per image. What differs
    is float rounding of the batched UNet: measured on this CPU (8x8 latent, 4 euler steps),
    the host's plain euler gives image 0 differing by 7.7e-4 on values up to 341 between
    batch 1 and 4, the guided run by 7.2e-4, while guidance itself moves image 0 by 4.2e-2.
    (Ancestral samplers draw noise for the whole batch per step: image 0 then differs with
    the batch size in the host's own sampler too.)"""
    model, clip = sd15_small
    pos, neg = encode(pack, clip, PROMPT, SUBJECTS), plain(clip)
    patched = patch(pack, model)
    latent1, latent4 = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 8, 8)
    assert torch.equal(comfy.sample.prepare_noise(latent1, 11)[0], comfy.sample.prepare_noise(latent4, 11)[0])
    plain1 = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=8, steps=4, seed=11, batch=1)
    plain4 = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=8, steps=4, seed=11, batch=4)
    s1, s4 = guided_sampler(pack), guided_sampler(pack)
    one = run(patched, s1, pos, neg, size=8, steps=4, seed=11, batch=1)
    four = run(patched, s4, pos, neg, size=8, steps=4, seed=11, batch=4)
    assert torch.isfinite(four).all()
    scale = float(one.abs().max())
    host_rounding = float((plain1[0] - plain4[0]).abs().max())
    guided_diff = float((one[0] - four[0]).abs().max())
    assert guided_diff <= max(4 * host_rounding, 1e-6 * scale) and guided_diff <= 1e-5 * scale
    assert float((one[0] - plain1[0]).abs().max()) > 10 * guided_diff  # guidance moved it far more
    assert torch.allclose(s1.runs.latest().maps[0][0], s4.runs.latest().maps[0][0], atol=1e-5)


# -- through the executor: an error, then the server keeps serving ----------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tools.comfy_runner import Host
    return Host(output_dir=str(tmp_path_factory.mktemp("hard_inputs_out")))


def _good(seed, **kw):
    from tools.graphs import custom_sampling_graph
    return custom_sampling_graph(TINY, "a red circle and a blue square", "circle, square", steps=2, size=128,
                                 seed=seed, **kw)


def _bad_graph(case):
    graph = _good(0)
    if case == "token_indices":
        graph["2"]["inputs"]["subjects"] = "5, 7"
        return graph
    if case == "plain_prompt":
        graph["2"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}}
        return graph
    if case == "dpm_adaptive":
        return _good(0, sampler="dpm_adaptive")
    if case == "end_percent_above_1":
        return _good(0, end_percent=1.5)
    raise ValueError(case)


@pytest.mark.parametrize("case,message", [
    ("token_indices", "looks like a token index.*type the subject words themselves"),
    ("plain_prompt", "carries no AI-T2I subjects: encode the positive prompt with 'AI-T2I Subject Prompt'"),
    ("dpm_adaptive", "chooses its own steps.*pick a fixed-step sampler"),
    ("end_percent_above_1", "invalid graph.*end_percent"),
])
def test_executor_keeps_serving(host, case, message):
    from tools.comfy_runner import GraphError
    with pytest.raises(GraphError, match=message):
        host.run(_bad_graph(case))
    seed = 100 + ["token_indices", "plain_prompt", "dpm_adaptive", "end_percent_above_1"].index(case)
    out = host.run(_good(seed))  # a new seed: the sampler really runs again
    assert len(out["13"]["images"]) == 1 and len(out["15"]["images"]) == 2  # image, and a map per subject


def test_executor_strength_zero_equals_ksampler(host):
    """KSampler (AI-T2I) at strength 0 against the host's KSampler, same seed, through the
    executor: the saved latents are equal bit for bit."""
    import pathlib

    import folder_paths
    import safetensors.torch
    from tools.graphs import comparison_graph
    g = comparison_graph(TINY, "a red circle and a blue square", "circle, square", steps=4, size=128, seed=7,
                         strength=0.0)
    g["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "vanilla"}}
    g["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "ai_t2i_off"}}
    out = host.run(g)
    latents = []
    for node in ("20", "21"):
        info = out[node]["latents"][0]
        path = pathlib.Path(folder_paths.get_output_directory()) / info["subfolder"] / info["filename"]
        latents.append(safetensors.torch.load_file(str(path))["latent_tensor"])
    assert torch.isfinite(latents[0]).all() and torch.equal(latents[0], latents[1])
