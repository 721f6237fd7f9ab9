"""The guided sampler: a SAMPLER for SamplerCustom / SamplerCustomAdvanced that wraps any
KSAMPLER and applies AI-T2I updates at chosen steps, and KSampler-equivalent sampling with it.

A run is prepared whole (guided_run.py), then the base sampler is driven in place or step by
step (drivers.py). Each run's record is kept with the latent it produced (run_log.py), where
AI-T2I Attention Maps finds it.
"""
from __future__ import annotations

import logging

import torch

import comfy.samplers
import comfy.utils

from ...ai_t2i_attention import GuidanceSettings, RunRecord
from . import drivers
from .errors import GuidanceError
from .guided_run import prepare_run
from .run_log import RunLog

log = logging.getLogger("ai_t2i")


def guides(settings: GuidanceSettings, total_steps: int) -> bool:
    """Whether a run of total_steps steps has a guided step; warns where the user's range holds none."""
    active = settings.strength > 0 and bool(settings.schedule.guided_steps(total_steps))
    if settings.strength > 0 and settings.schedule.end > settings.schedule.start and not active:
        log.warning("AI-T2I: the guided range %g..%g holds none of the %d sampling steps, so nothing is guided: "
                    "widen start_percent..end_percent or use more steps", settings.schedule.start,
                    settings.schedule.end, total_steps)
    return active


class GuidedSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustom / SamplerCustomAdvanced wrapping a base KSAMPLER."""

    def __init__(self, base, settings: GuidanceSettings):
        if not isinstance(base, comfy.samplers.KSAMPLER):
            raise GuidanceError(f"AI-T2I can wrap k-diffusion samplers (KSamplerSelect); got {type(base).__name__}")
        name = getattr(base.sampler_function, "__name__", "")
        if name in drivers.UNSUPPORTED_SAMPLERS:
            raise GuidanceError(f"{drivers.UNSUPPORTED_SAMPLERS[name]} chooses its own steps, so a step schedule cannot be "
                                "applied; pick a fixed-step sampler such as euler or dpmpp_2m")
        self.base = base
        self.settings = settings
        # Its finished runs with their outputs: AI-T2I Attention Maps finds a run by the latent wired to it.
        self.runs = RunLog()

    def max_denoise(self, model_wrap, sigmas):
        return self.base.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        record = RunRecord()
        base_fn = self.base.sampler_function
        total_steps = len(sigmas) - 1
        run = None
        if not guides(self.settings, total_steps):
            record.unguided_reason = self.unguided_reason(total_steps)
            fn = base_fn
        else:
            run = prepare_run(self.settings, model_wrap, sigmas, noise, record)
            fn = (drivers.in_place if drivers.drives_in_place(base_fn) else drivers.step_by_step)(base_fn, run)
        inner = comfy.samplers.KSAMPLER(fn, self.base.extra_options, self.base.inpaint_options)
        samples = inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                               disable_pbar)
        if run is not None:
            run.finish()  # the record's values to the host once, at the end (no step waited for them)
        # The latent the graph receives: CFGGuider.inner_sample returns process_latent_out of the
        # samples in float32 (model_wrap is that guider), which SamplerCustom(Advanced) moves to
        # the intermediate device and puts in its 'output'. The same op on the same tensor: equal bit for bit.
        self.runs.add(record, model_wrap.inner_model.process_latent_out(samples.to(torch.float32)))
        return samples

    def unguided_reason(self, total_steps: int) -> str:
        """Why a run of total_steps steps guides none (guides() said so), in the user's widgets' terms."""
        if self.settings.strength <= 0:
            return "no step was guided (strength 0)"
        schedule = self.settings.schedule
        return (f"no step was guided (the range {schedule.start:.2f}..{schedule.end:.2f} holds none of the "
                f"{total_steps} steps)")


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
    return result, sampler.runs.latest()
