"""The guided sampler: wraps any KSAMPLER and applies AI-T2I updates at chosen steps.

Only the driving of the sampler lives here: preparing a run, reaching the sampler's state
(in place or step by step), and the update of one guided step. The network is reached only
through the GuidancePass interface (guidance_pass.py: its layers, the work share, the input
scale, the guidance forward's maps) and the conditioning through conditioning.py, so nothing
here depends on the network being a UNet.

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
from typing import Optional

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils

# GuidanceSettings and RunRecord are the engine's plain data; the host's callers import them from here too.
from ...ai_t2i_attention import (LOSSES, GuidanceSettings, LossWeights, RunRecord, TokenGroups, guided_update,
                                 subject_maps)
from ...ai_t2i_attention.layers import Layer, LayerChoiceError, choose_layers, describe_layers, map_size
from .conditioning import entry_layout, has_control, subject_entry, subject_names
from .errors import GuidanceError
from .guidance_pass import GuidancePass, guidance_pass, patched_layers

log = logging.getLogger("ai_t2i")

# Their step count is adaptive: the schedule's positions do not map onto their steps.
UNSUPPORTED_SAMPLERS = {"dpm_fast_function": "dpm_fast", "dpm_adaptive_function": "dpm_adaptive"}
# k-diffusion samplers that call the model once per step, at the step's own sigma, on their
# own state tensor, before the step's callback: the update can be made in place, keeping
# their history and noise exactly. Every other sampler is driven step by step through the
# guided range (exact for single-step samplers; multistep ones restart their history there).
IN_PLACE_SAMPLERS = frozenset({
    "sample_euler", "sample_euler_ancestral", "sample_euler_ancestral_RF", "sample_euler_cfg_pp",
    "sample_euler_ancestral_cfg_pp", "sample_dpmpp_2m", "sample_dpmpp_2m_cfg_pp", "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_gpu", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde_gpu", "sample_lcm", "sample_ipndm",
    "sample_ipndm_v", "sample_deis", "sample_er_sde", "sample_gradient_estimation"})


def guides(settings: GuidanceSettings, total_steps: int) -> bool:
    """Whether a run of total_steps steps has a guided step; warns where the user's range holds none."""
    active = settings.strength > 0 and bool(settings.schedule.guided_steps(total_steps))
    if settings.strength > 0 and settings.schedule.end > settings.schedule.start and not active:
        log.warning("AI-T2I: the guided range %g..%g holds none of the %d sampling steps, so nothing is guided: "
                    "widen start_percent..end_percent or use more steps", settings.schedule.start,
                    settings.schedule.end, total_steps)
    return active


def prepare_run(settings: GuidanceSettings, guider, sigmas: torch.Tensor, latent: torch.Tensor,
                record: RunRecord) -> "GuidedRun":
    """Everything a guided run reads, before its first step: the prompt's entry and its
    subjects, the model's guidance pass, the layers the loss reads and the layout's regions,
    for the sampler's starting latent (B, C, h, w). Every error the user can fix is raised
    here, before sampling starts."""
    hooked = patched_layers(guider.model_options)
    entry, groups = subject_entry(guider.conds)
    layout, weights = entry_layout(entry, settings.preset)
    model = guidance_pass(guider, entry, hooked, settings.stop_early, settings.fused_attention)
    batch, hw = latent.shape[0], tuple(latent.shape[-2:])
    share = model.work_share(hw)
    try:
        layers = choose_layers(model.layers, hw, settings.level, settings.layers, share, control=has_control(entry))
    except LayerChoiceError as e:
        raise GuidanceError(str(e)) from None
    record.subjects = subject_names(entry)
    record.layers = describe_layers(layers)
    record.pass_work = share(layers) if settings.stop_early else 1.0
    record.map_size = map_size(hw, layers[0].factor)  # the chosen layers share one level
    regions = None  # (B, S, H, W) at the map size: the layout's, made once
    if layout is not None:
        layout.check_image(hw, batch)
        with torch.inference_mode(False):  # the loss reads them with autograd on (the host samples in inference mode)
            regions = layout.region_masks(record.map_size, batch).to(latent.device)
    return GuidedRun(settings, model, sigmas, groups, weights, layers, regions, record)


class GuidedRun:
    """State of one guided sampling run, complete from the start (see prepare_run).

    settings, model: the run's settings and the model's guidance pass
    sigmas:  (steps + 1,) the sampler's sigmas: step i runs from sigmas[i]
    groups:  the subjects' (and attributes') token columns
    weights: the loss weights, the layout's weight applied
    layers:  the layers the loss reads (one level)
    regions: (B, S, H, W) the layout's regions at the map size; None: no layout
    record:  what the run did, filled step by step
    """

    def __init__(self, settings: GuidanceSettings, model: GuidancePass, sigmas: torch.Tensor, groups: TokenGroups,
                 weights: LossWeights, layers: list[Layer], regions: Optional[torch.Tensor], record: RunRecord):
        self.settings = settings
        self.model = model
        self.total_steps = len(sigmas) - 1
        self.step_sigmas = sigmas[:-1].detach().cpu()  # (steps,) where step_at looks a model call's sigma up
        self.groups = groups
        self.weights = weights
        self.layers = layers
        self.regions = regions
        self.record = record
        # Smoothed subject maps of the latest guidance pass, and of the previous guided step's
        # last pass: the state that A-STAR retention and CONFORM read as maps.previous.
        self.latest_maps: Optional[torch.Tensor] = None
        self.previous_maps: Optional[torch.Tensor] = None
        self.reached = -1  # the latest step step_at found: it tells apart the steps of a repeated sigma
        guided = settings.schedule.guided_steps(self.total_steps)
        self.last_guided = guided[-1] if guided else -1
        self.updated: Optional[tuple[int, torch.Tensor]] = None  # (step, the latent updated in place)

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

    # -- sampler-facing (in place) ----------------------------------------------------------
    def step_at(self, sigma: torch.Tensor) -> Optional[int]:
        """The step of a model call at sigma (B,): the position of that sigma in the sampler's
        sigmas. A sigma standing at several positions (the sampler does not move between
        them) is each of them in turn: the first after the latest step reached. None: a
        further call at the latest step (only a step's first call is guided)."""
        # The sampler passes sigmas[i] * ones in the latent's dtype: compare in that dtype.
        here = torch.nonzero(self.step_sigmas.to(sigma.dtype) == sigma.reshape(-1)[0].cpu()).flatten().tolist()
        if not here:
            raise GuidanceError(f"the sampler called the model at sigma {float(sigma.reshape(-1)[0]):g}, which is "
                                "none of its steps' sigmas (e.g. euler with s_churn), so AI-T2I cannot tell which "
                                "step it is; use it without churn, or another sampler")
        later = [i for i in here if i > self.reached]
        if not later:
            return None
        self.reached = later[0]
        return self.reached

    def before_model_call(self, x: torch.Tensor, sigma: torch.Tensor, kwargs: dict) -> None:
        if self.reached >= self.last_guided:
            return  # past the guided range: no lookup (a device-to-host copy of sigma) on every later call
        step = self.step_at(sigma)
        if step is None or not self.settings.schedule.is_guided(step, self.total_steps):
            return
        new_x = self.update(x, sigma, step, kwargs["model_options"])
        with torch.inference_mode(x.is_inference()):
            x.copy_(new_x)
        self.updated = (step, x)

    def callback(self, info: dict) -> None:
        """The sampler's callback after step info["i"]: where that step was updated in place,
        the latent it shows must be the updated one (else the sampler keeps a private copy)."""
        if self.updated is not None and self.updated[0] == info["i"]:
            step_x = info["x"]
            if step_x is not self.updated[1] and not torch.equal(step_x, self.updated[1]):
                raise GuidanceError("this sampler keeps a private copy of the latent, so AI-T2I updates cannot reach "
                                    "it; use euler, euler_ancestral, heun, dpm_2, dpmpp_2m, dpmpp_sde, lms, ddim or "
                                    "another k-diffusion sampler")
            self.updated = None

    # -- the update of one guided step ------------------------------------------------------
    def update(self, x: torch.Tensor, sigma: torch.Tensor, step: int, model_options: dict) -> torch.Tensor:
        """The guided update of step `step` on latent x (B, C, H, W); returns the new latent."""
        sched = self.settings.schedule
        self.previous_maps = self.latest_maps
        refinement = self.settings.preset.refinement_at(step, self.total_steps)
        # The reference moves the UNet's input z = c_in * x (diffusers' latent), not the sampler's x:
        # the same step taken on x would move z by only c_in^2 of it (0.005 at SD's first sigma).
        c_in = self.model.input_scale(sigma, x)
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

    def _maps(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict):
        """SubjectMaps of latent x (B, C, h, w) from one guidance pass, with the layout's
        regions and the previous guided step's maps. Gradients flow if the caller enables them."""
        avg = self.model.attention(x, sigma, model_options, self.layers)
        if tuple(avg.shape[1:3]) != self.record.map_size:
            raise RuntimeError(f"the guidance pass gave {tuple(avg.shape[1:3])} maps, where the latent's size "
                               f"gives {self.record.map_size} at the layers read")
        return subject_maps(avg, self.groups, regions=self.regions, previous=self.previous_maps)

    def _terms(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict, step: int) -> dict:
        with torch.inference_mode(False), torch.enable_grad():
            maps = self._maps(x, sigma, model_options)
            terms = LOSSES[self.settings.preset.loss](maps, self.weights)
        self.latest_maps = maps.smoothed.detach()
        if self.settings.keep_maps and step not in self.record.maps:
            self.record.maps[step] = maps.raw.detach().cpu()
        return terms

    def _maps_after(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """(B, S, H, W) raw subject maps of latent x, no gradient: what the step's own
        prediction sees after the update."""
        with torch.no_grad():
            return self._maps(x, sigma, model_options).raw.cpu()


class _GuidedDenoiser:
    """Stands in for the sampler's model (in place): the run sees every model call first.
    Sampler-side, not model-side: it wraps whatever model the sampler was handed."""

    def __init__(self, model_k, run: GuidedRun):
        self.model_k = model_k
        self.inner_model = model_k.inner_model  # some samplers read model.inner_model
        self.run = run

    def __getattr__(self, name):
        return getattr(self.model_k, name)

    def __call__(self, x, sigma, **kwargs):
        self.run.before_model_call(x, sigma, kwargs)
        return self.model_k(x, sigma, **kwargs)


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
        base_fn = self.base.sampler_function
        if not guides(self.settings, len(sigmas) - 1):
            fn = base_fn
        else:
            run = prepare_run(self.settings, model_wrap, sigmas, noise, record)
            fn = run.in_place_function(base_fn) if self.in_place else run.stepwise_function(base_fn)
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
