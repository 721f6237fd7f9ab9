"""The two ways of driving a base sampler (euler, dpmpp_2m, ...) through a guided run. Each
takes the base sampler function and the run, and returns a sampler function of the same
signature, which the host's KSAMPLER calls as it would the base one.

in_place:     the base function runs once, unchanged, on a denoiser that sees every model
              call first. A guided step's first call is made on the sampler's own latent
              tensor; it is moved in place (z <- z - alpha * dL/dz) before the ordinary CFG
              prediction, so multistep history and ancestral noise stay the sampler's own.
              The step's callback must then show the updated latent; if it does not, the
              sampler kept a private copy and the run stops with an error instead of silently
              doing nothing.
step_by_step: one base call per step through the guided range, the update made between
              them, then one call for the rest (exact for single-step samplers; multistep
              ones restart their history there). Each call gets its own seed offset so
              ancestral/SDE noise never repeats.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import GuidanceError
from .guided_run import GuidedRun
from .step_locator import StepLocator

# Their step count is adaptive: the schedule's positions do not map onto their steps.
UNSUPPORTED_SAMPLERS = {"dpm_fast_function": "dpm_fast", "dpm_adaptive_function": "dpm_adaptive"}
# k-diffusion samplers that call the model once per step, at the step's own sigma, on their
# own state tensor, before the step's callback: they are driven in place. Every other sampler
# is driven step by step.
IN_PLACE_SAMPLERS = frozenset({
    "sample_euler", "sample_euler_ancestral", "sample_euler_ancestral_RF", "sample_euler_cfg_pp",
    "sample_euler_ancestral_cfg_pp", "sample_dpmpp_2m", "sample_dpmpp_2m_cfg_pp", "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_gpu", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde_gpu", "sample_lcm", "sample_ipndm",
    "sample_ipndm_v", "sample_deis", "sample_er_sde", "sample_gradient_estimation"})


def drives_in_place(base_fn: Callable) -> bool:
    """Whether a base sampler function is driven in place (else step by step)."""
    return getattr(base_fn, "__name__", "") in IN_PLACE_SAMPLERS


def in_place(base_fn: Callable, run: GuidedRun) -> Callable:
    updates = _InPlaceUpdates(run)

    def sample(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        def step_callback(info):
            updates.check_callback(info)
            if callback is not None:
                callback(info)
        return base_fn(_GuidedDenoiser(model_k, updates), x, sigmas, extra_args=extra_args, callback=step_callback,
                       disable=disable, **options)
    return sample


def step_by_step(base_fn: Callable, run: GuidedRun) -> Callable:
    def sample(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        extra_args = dict(extra_args or {})
        seed = extra_args.get("seed", 0) or 0
        guided = run.guided_steps
        last = guided[-1] + 1
        for i in range(last):
            if i in guided:
                x = run.update(x, sigmas[i] * x.new_ones([x.shape[0]]), i, extra_args["model_options"])
            x = base_fn(model_k, x, sigmas[i:i + 2], extra_args={**extra_args, "seed": seed + i},
                        callback=_offset(callback, i), disable=True, **options)
        if last < run.total_steps:
            x = base_fn(model_k, x, sigmas[last:], extra_args={**extra_args, "seed": seed + last},
                        callback=_offset(callback, last), disable=disable, **options)
        return x
    return sample


class _InPlaceUpdates:
    """The in-place driver's state for one run: the step of each model call, and the latent
    updated in place whose step's callback has not come yet."""

    def __init__(self, run: GuidedRun):
        self.run = run
        self.locator = StepLocator(run.sigmas)
        guided = run.guided_steps
        self.last_guided = guided[-1] if guided else -1
        self.updated: Optional[tuple[int, torch.Tensor]] = None  # (step, the latent updated in place)

    def before_model_call(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> None:
        if self.locator.reached >= self.last_guided:
            return  # past the guided range: no lookup (a device-to-host copy of sigma) on every later call
        step = self.locator.step_at(sigma)
        if step is None or not self.run.is_guided(step):
            return
        new_x = self.run.update(x, sigma, step, model_options)
        with torch.inference_mode(x.is_inference()):
            x.copy_(new_x)
        self.updated = (step, x)

    def check_callback(self, info: dict) -> None:
        """The sampler's callback after step info["i"]: where that step was updated in place,
        the latent it shows must be the updated one (else the sampler keeps a private copy)."""
        if self.updated is not None and self.updated[0] == info["i"]:
            step_x = info["x"]
            if step_x is not self.updated[1] and not torch.equal(step_x, self.updated[1]):
                raise GuidanceError("this sampler keeps a private copy of the latent, so AI-T2I updates cannot reach "
                                    "it; use euler, euler_ancestral, heun, dpm_2, dpmpp_2m, dpmpp_sde, lms, ddim or "
                                    "another k-diffusion sampler")
            self.updated = None


class _GuidedDenoiser:
    """Stands in for the sampler's model (in place): the run sees every model call first.
    Sampler-side, not model-side: it wraps whatever model the sampler was handed."""

    def __init__(self, model_k, updates: _InPlaceUpdates):
        self.model_k = model_k
        self.inner_model = model_k.inner_model  # some samplers read model.inner_model
        self.updates = updates

    def __getattr__(self, name):
        return getattr(self.model_k, name)

    def __call__(self, x, sigma, **kwargs):
        self.updates.before_model_call(x, sigma, kwargs.get("model_options"))
        return self.model_k(x, sigma, **kwargs)


def _offset(callback, offset: int):
    """A k-diffusion callback whose step index is shifted by offset."""
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset})
