"""The guided sampler: wraps any KSAMPLER and applies AI-T2I updates at chosen steps.

How the update reaches the sampler's state: the base sampler function (euler, dpmpp_2m,
...) is run unchanged, on a denoiser wrapper. The first model call of a step is made
on the sampler's own latent tensor; at a guided step the wrapper moves that tensor
in place (z <- z - alpha * dL/dz) before the ordinary CFG prediction, so the sampler
continues from the updated latent. Multistep history and ancestral noise stay the
sampler's own: nothing is restarted per step. The sampler's callback for that step
must then show the updated latent; if it does not, the sampler keeps a private copy
and the run stops with an error instead of silently doing nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils

from ...ai_t2i_attention import (LOSSES, AttentionRecorder, GuidanceSchedule, Preset, StepReport, TokenGroups,
                                 guided_update, subject_maps)
from ...ai_t2i_attention.layers import Layer, LayerChoiceError, choose_layers, describe_layers
from .attention import RECORDER_KEY, CrossAttentionHook, StopGuidanceForward, differentiable_attention, installed_layers
from .gradients import make_grad_capable
from .unet import unet_work, work_until

log = logging.getLogger("ai_t2i")

SUBJECTS_KEY = "ai_t2i_subjects"  # conditioning key carrying the resolved TokenGroups
LAYOUT_KEY = "ai_t2i_layout"  # same entry: a SubjectLayout from 'AI-T2I Subject Layout'
# Their step count is adaptive: the schedule's positions do not map onto their steps.
UNSUPPORTED_SAMPLERS = {"dpm_fast_function": "dpm_fast", "dpm_adaptive_function": "dpm_adaptive"}
# k-diffusion samplers that call the model once per step, on their own state tensor,
# before the step's callback: the update can be made in place, keeping their history
# and noise exactly. Every other sampler is driven step by step through the guided
# range (exact for single-step samplers; multistep ones restart their history there).
IN_PLACE_SAMPLERS = frozenset({
    "sample_euler", "sample_euler_ancestral", "sample_euler_ancestral_RF", "sample_euler_cfg_pp",
    "sample_euler_ancestral_cfg_pp", "sample_dpmpp_2m", "sample_dpmpp_2m_cfg_pp", "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_gpu", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde_gpu", "sample_lcm", "sample_ipndm",
    "sample_ipndm_v", "sample_deis", "sample_er_sde", "sample_gradient_estimation"})


class GuidanceError(RuntimeError):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True)
class GuidanceSettings:
    preset: Preset
    schedule: GuidanceSchedule = GuidanceSchedule()
    strength: float = 1.0  # multiplies every step size; 0 turns guidance off
    level: str = "auto"
    layers: str = "auto"
    keep_maps: bool = True  # keep each guided step's maps for previews
    # Also keep the maps after each update: one extra no-grad conditional forward per guided
    # step (stopped after the last layer read), so it is off unless a preview asks for it.
    keep_maps_after: bool = False
    stop_early: bool = True  # end the guidance forward after the last layer the loss reads
    fused_attention: bool = True  # the guidance pass uses the host's PyTorch attention (fused backward)


@dataclass
class RunRecord:
    """What one guided run did: per-step reports and the maps seen at each guided step."""

    subjects: list[str] = field(default_factory=list)
    map_size: Optional[tuple[int, int]] = None
    layers: str = ""  # which cross-attention layers the loss read (describe_layers)
    pass_work: Optional[float] = None  # estimated fraction of the UNet's forward a guidance pass ran
    reports: list[StepReport] = field(default_factory=list)
    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> (B, S, H, W) raw maps
    maps_after: dict[int, torch.Tensor] = field(default_factory=dict)  # same, at the step's updated latent

    def log_text(self) -> str:
        head = f"AI-T2I run: subjects={', '.join(self.subjects)} maps={self.map_size}"
        if self.layers:
            head += f" from {self.layers}"
        if self.pass_work is not None:
            head += f", guidance pass ~{self.pass_work:.0%} of the UNet"
        return "\n".join([head] + [r.line() for r in self.reports])


def subject_entry(conds: dict) -> tuple[dict, TokenGroups]:
    """The positive conditioning entry that carries resolved subjects."""
    positive = conds.get("positive") or []
    carrying = [c for c in positive if c.get(SUBJECTS_KEY) is not None]
    if not carrying:
        raise GuidanceError("the positive conditioning carries no AI-T2I subjects: encode the positive prompt with "
                            "'AI-T2I Subject Prompt' (it replaces CLIP Text Encode) and type the subject words there")
    if len(carrying) > 1:
        log.warning("AI-T2I: %d positive entries carry subjects; guiding with the first", len(carrying))
    entry = carrying[0]
    if entry.get("area") is not None or entry.get("mask") is not None:
        raise GuidanceError("the AI-T2I subject prompt has an area or mask set: guide a full-image prompt instead")
    return entry, entry[SUBJECTS_KEY].groups


def entry_layout(entry: dict, preset: Preset):
    """(SubjectLayout or None, the loss weights with the layout's weight applied)."""
    layout, w = entry.get(LAYOUT_KEY), preset.weights
    if layout is None or layout.weight == 0:  # weight 0 turns the layout off entirely
        return None, w
    if tuple(layout.subjects) != tuple(entry[SUBJECTS_KEY].subjects):
        raise GuidanceError("the layout was made for other subjects than the prompt's: connect 'AI-T2I Subject "
                            "Layout' directly after the 'AI-T2I Subject Prompt' it lays out")
    if not preset.reads_regions:
        raise GuidanceError("this method ignores layout regions: choose an AI-T2I method, or bypass 'AI-T2I "
                            "Subject Layout'")
    return layout, replace(w, layout_inner=w.layout_inner * layout.weight, layout_outer=w.layout_outer * layout.weight)


def unet_input_scale(model_sampling, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) c_in(sigma): the factor by which the host's model sampling turns the
    sampler's latent x (B, C, H, W) into the UNet's input z = c_in * x (calculate_input).
    eps and v models: 1 / sqrt(sigma^2 + sigma_data^2); flow matching (SD3, Flux): 1.
    Made outside inference mode: the guidance pass divides by it with autograd on."""
    with torch.inference_mode(False):
        return model_sampling.calculate_input(sigma.clone(), torch.ones_like(x[:, :1, :1, :1], device=x.device))


def _detach_skip(h, transformer_options):
    """The UNet adds ControlNet residuals to its skip tensors in place, after the middle
    block has saved the same tensor for backward. Handing the next block a copy keeps
    the saved tensor intact (forward values are unchanged)."""
    return h.clone()


def guidance_model_options(model_options: dict, recorder: AttentionRecorder, fused_attention: bool = True) -> dict:
    """A copy of model_options for the guidance pass: the recorder, the skip copy, the
    AI-T2I hook on every layer the recorder wants, and (fused_attention) the attention
    kernel with a cheap backward.

    Where another pack's attn2 patch took one of those slots after 'AI-T2I Attention Patch'
    (IPAdapter-style packs put their patch in the same slots), this pass wraps that patch in
    a hook of its own, so both run, in the copy only: every other pass keeps the model's
    options as they are."""
    mo = dict(model_options)
    to = dict(mo.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    attn2 = dict(replace.get("attn2", {}))
    displaced = [key for key in recorder.wanted if not isinstance(attn2.get(key), CrossAttentionHook)]
    for key in displaced:
        attn2[key] = CrossAttentionHook(key, attn2.get(key) or attn2.get(key[:2]))
    if displaced:
        replace["attn2"] = attn2
        to["patches_replace"] = replace
    patches = {k: list(v) for k, v in to.get("patches", {}).items()}
    patches.setdefault("input_block_patch_after_skip", []).append(_detach_skip)
    to["patches"] = patches
    to[RECORDER_KEY] = recorder
    if fused_attention:
        # The guidance pass needs attention with a cheap backward. An override another pack set
        # (e.g. Sage attention, which has no backward) only swaps the kernel: it is replaced here.
        to["optimized_attention_override"] = differentiable_attention
    mo["transformer_options"] = to
    return mo


def control_modules(entry: dict) -> list[torch.nn.Module]:
    """The networks of the ControlNet/T2I-adapter chain on a conditioning entry: the
    guidance forward runs them too (they read the latent), so they need gradients."""
    found, control = [], entry.get("control")
    while control is not None:
        for name in ("control_model", "t2i_model"):
            module = getattr(control, name, None)
            if isinstance(module, torch.nn.Module):
                found.append(module)
        control = getattr(control, "previous_controlnet", None)
    return found


class _GuidedDenoiser:
    """Stands in for the sampler's model: guides the first call of a guided step."""

    def __init__(self, model_k, run: "GuidedRun"):
        self.model_k = model_k
        self.inner_model = model_k.inner_model  # some samplers read model.inner_model
        self.run = run

    def __getattr__(self, name):
        return getattr(self.model_k, name)

    def __call__(self, x, sigma, **kwargs):
        self.run.before_model_call(x, sigma, kwargs)
        return self.model_k(x, sigma, **kwargs)


class GuidedRun:
    """State of one sampling run (created per call of GuidedSampler.sample)."""

    def __init__(self, settings: GuidanceSettings, guider, sigmas: torch.Tensor, record: RunRecord):
        self.settings = settings
        self.guider = guider
        self.total_steps = len(sigmas) - 1
        self.record = record
        self.pending: Optional[int] = 0  # step whose first model call has not happened yet
        self.updated: Optional[tuple[int, torch.Tensor]] = None
        self.active = settings.strength > 0 and bool(settings.schedule.guided_steps(self.total_steps))
        if settings.strength > 0 and settings.schedule.end > settings.schedule.start and not self.active:
            log.warning("AI-T2I: the guided range %g..%g holds none of the %d sampling steps, so nothing is guided: "
                        "widen start_percent..end_percent or use more steps", settings.schedule.start,
                        settings.schedule.end, self.total_steps)
        self.layers: list[Layer] = []
        # Smoothed subject maps of the latest guidance pass, and of the previous guided step's
        # last pass: the state that A-STAR retention and CONFORM read as maps.previous.
        self.latest_maps: Optional[torch.Tensor] = None
        self.previous_maps: Optional[torch.Tensor] = None
        if self.active:
            self._prepare()

    def _prepare(self) -> None:
        mo = self.guider.model_options
        layers = installed_layers(mo)
        if layers is None:
            raise GuidanceError("the model is not patched for AI-T2I: pass it through 'AI-T2I Attention Patch' "
                                "before the guider/sampler")
        self.entry, self.groups = subject_entry(self.guider.conds)
        self.record.subjects = list(self.entry[SUBJECTS_KEY].subjects)
        self.layout, self.weights = entry_layout(self.entry, self.settings.preset)
        self.regions: Optional[torch.Tensor] = None  # (B, S, h, w) at the map size, made once
        self.all_layers = layers
        make_grad_capable(self.guider.inner_model.diffusion_model)
        for module in control_modules(self.entry):
            make_grad_capable(module)

    # -- the two ways of driving the base sampler ----------------------------------------
    def in_place_function(self, base_fn):
        def guided_function(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            def step_callback(info):
                self.callback(info)
                if callback is not None:
                    callback(info)
            return base_fn(_GuidedDenoiser(model_k, self), x, sigmas, extra_args=extra_args, callback=step_callback,
                           disable=disable, **options)
        return guided_function

    def stepwise_function(self, base_fn):
        """One base-sampler call per guided step, then one call for the rest.

        Each call gets its own seed offset so ancestral/SDE noise never repeats.
        """
        def guided_function(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            extra_args = dict(extra_args or {})
            seed = extra_args.get("seed", 0) or 0
            guided = self.settings.schedule.guided_steps(self.total_steps)
            last = guided[-1] + 1
            for i in range(last):
                if i in guided:
                    x = self.update(x, sigmas[i] * x.new_ones([x.shape[0]]), i, extra_args["model_options"])
                x = base_fn(model_k, x, sigmas[i:i + 2], extra_args={**extra_args, "seed": seed + i},
                            callback=_offset(callback, i), disable=True, **options)
            if last < self.total_steps:
                x = base_fn(model_k, x, sigmas[last:], extra_args={**extra_args, "seed": seed + last},
                            callback=_offset(callback, last), disable=disable, **options)
            return x
        return guided_function

    # -- sampler-facing -------------------------------------------------------------
    def callback(self, info: dict) -> None:
        i = info["i"]
        if self.updated is not None and self.updated[0] == i:
            step_x = info["x"]
            if step_x is not self.updated[1] and not torch.equal(step_x, self.updated[1]):
                raise GuidanceError("this sampler keeps a private copy of the latent, so AI-T2I updates cannot reach "
                                    "it; use euler, euler_ancestral, heun, dpm_2, dpmpp_2m, dpmpp_sde, lms, ddim or "
                                    "another k-diffusion sampler")
            self.updated = None
        self.pending = i + 1

    def before_model_call(self, x: torch.Tensor, sigma: torch.Tensor, kwargs: dict) -> None:
        step, self.pending = self.pending, None
        if step is None or not self.active or not self.settings.schedule.is_guided(step, self.total_steps):
            return
        new_x = self.update(x, sigma, step, kwargs["model_options"])
        with torch.inference_mode(x.is_inference()):
            x.copy_(new_x)
        self.updated = (step, x)

    def update(self, x: torch.Tensor, sigma: torch.Tensor, step: int, model_options: dict) -> torch.Tensor:
        """The guided update of step `step` on latent x (B, C, H, W); returns the new latent."""
        if not self.layers:
            hw = tuple(x.shape[-2:])
            work = unet_work(self.guider.inner_model.diffusion_model, hw)
            share = lambda layers: work_until(work, [l.key for l in layers])  # noqa: E731
            try:
                self.layers = choose_layers(self.all_layers, hw, self.settings.level, self.settings.layers, share,
                                            control=self.entry.get("control") is not None)
            except LayerChoiceError as e:
                raise GuidanceError(str(e)) from None
            self.record.layers = describe_layers(self.layers)
            self.record.pass_work = share(self.layers) if self.settings.stop_early else 1.0
        sched = self.settings.schedule
        self.previous_maps = self.latest_maps
        refinement = sched.refinement_target(step, self.total_steps) if self.settings.preset.refine else None
        # The reference moves the UNet's input z = c_in * x (diffusers' latent), not the sampler's x:
        # the same step taken on x would move z by only c_in^2 of it (0.005 at SD's first sigma).
        c_in = unet_input_scale(self.guider.inner_model.model_sampling, sigma, x)
        z = x * c_in
        new_z, report = guided_update(
            z, lambda z: self._terms(z / c_in, sigma, model_options, step), step,
            self.settings.strength * sched.step_size(step, self.total_steps), refinement,
            comfy.model_management.throw_exception_if_processing_interrupted)
        new_x = x + (new_z - z) / c_in  # an image whose update was skipped keeps x bit for bit
        self.record.reports.append(report)
        if self.settings.keep_maps_after:
            self.record.maps_after[step] = self._maps_after(new_x, sigma, model_options)
        for line in report.skipped:
            log.warning("AI-T2I step %d: %s, so that image's update was skipped (its latent is unchanged). If the "
                        "UNet runs in fp16, lower strength or load the model in fp32/bf16.", step, line)
        return new_x

    # -- the guidance forward ---------------------------------------------------------
    def _record_maps(self, z: torch.Tensor, sigma: torch.Tensor, model_options: dict):
        """Run the prompt's branch on latent z (B, C, h, w) until the layers the loss reads
        have fired; returns their SubjectMaps. Gradients flow if the caller enables them."""
        recorder = AttentionRecorder(frozenset(l.key for l in self.layers), stop_early=self.settings.stop_early)
        mo = guidance_model_options(model_options, recorder, self.settings.fused_attention)
        try:
            comfy.samplers.calc_cond_batch(self.guider.inner_model, [[self.entry]], z, sigma, mo)
        except StopGuidanceForward:
            pass
        if not recorder.complete:
            missing = sorted(recorder.wanted - set(recorder.seen))
            raise GuidanceError(f"the AI-T2I hooks did not fire on {len(missing)} layers (e.g. {missing[0]}): "
                                "another patch or model wrapper bypasses cross-attention there; connect "
                                "'AI-T2I Attention Patch' last in the model chain")
        self.record.map_size = recorder.map_size
        return subject_maps(recorder.average(), self.groups)

    def _terms(self, z: torch.Tensor, sigma: torch.Tensor, model_options: dict, step: int) -> dict:
        with torch.inference_mode(False), torch.enable_grad():
            maps = self._record_maps(z, sigma, model_options)
            maps.previous = self.previous_maps
            maps.regions = self._regions(z, tuple(maps.raw.shape[-2:]))
            terms = LOSSES[self.settings.preset.loss](maps, self.weights)
        self.latest_maps = maps.smoothed.detach()
        if self.settings.keep_maps and step not in self.record.maps:
            self.record.maps[step] = maps.raw.detach().cpu()
        return terms

    def _maps_after(self, z: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """(B, S, H, W) raw subject maps of latent z, no gradient: what the step's own
        prediction sees after the update."""
        with torch.no_grad():
            return self._record_maps(z, sigma, model_options).raw.cpu()

    def _regions(self, z: torch.Tensor, map_hw: tuple[int, int]) -> Optional[torch.Tensor]:
        """The layout's regions at the map size, for a (B, C, h, w) latent z (None: no layout)."""
        if self.layout is None:
            return None
        if self.regions is None or self.regions.shape[0] != z.shape[0] or tuple(self.regions.shape[-2:]) != map_hw:
            self.layout.check_image(tuple(z.shape[-2:]), z.shape[0])
            self.regions = self.layout.region_masks(map_hw, z.shape[0]).to(z.device)
        return self.regions


def _offset(callback, offset: int):
    """A k-diffusion callback whose step index is shifted by offset."""
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset})


class GuidedSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustom / SamplerCustomAdvanced wrapping a base KSAMPLER."""

    def __init__(self, base, settings: GuidanceSettings):
        if not isinstance(base, comfy.samplers.KSAMPLER):
            raise GuidanceError(f"AI-T2I can wrap k-diffusion samplers (KSamplerSelect); got {type(base).__name__}")
        name = getattr(base.sampler_function, "__name__", "")
        if name in UNSUPPORTED_SAMPLERS:
            raise GuidanceError(f"{UNSUPPORTED_SAMPLERS[name]} chooses its own steps, so a step schedule cannot be "
                                "applied; pick a fixed-step sampler such as euler or dpmpp_2m")
        self.base = base
        self.settings = settings
        self.last_run: Optional[RunRecord] = None

    def max_denoise(self, model_wrap, sigmas):
        return self.base.max_denoise(model_wrap, sigmas)

    @property
    def in_place(self) -> bool:
        return getattr(self.base.sampler_function, "__name__", "") in IN_PLACE_SAMPLERS

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        record = RunRecord()
        self.last_run = record
        run = GuidedRun(self.settings, model_wrap, sigmas, record)
        base_fn = self.base.sampler_function
        if not run.active:
            fn = base_fn
        elif self.in_place:
            fn = run.in_place_function(base_fn)
        else:
            fn = run.stepwise_function(base_fn)
        inner = comfy.samplers.KSAMPLER(fn, self.base.extra_options, self.base.inpaint_options)
        return inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)


def sample_with_guidance(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive,
                         negative, latent: dict, denoise: float, settings: GuidanceSettings):
    """KSampler-equivalent sampling with AI-T2I guidance. Returns (latent dict, RunRecord)."""
    import comfy.sample
    import latent_preview

    sampler = GuidedSampler(comfy.samplers.sampler_object(sampler_name), settings)
    # The host's own KSampler computes the sigmas (denoise, discarded penultimate sigma...).
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    out = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, samples,
                                     noise_mask=latent.get("noise_mask"), callback=callback,
                                     disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result.pop("downscale_ratio_spacial", None)
    result["samples"] = out
    return result, sampler.last_run
