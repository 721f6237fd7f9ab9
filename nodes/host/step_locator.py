"""Which step of the run a model call belongs to, told from the sigma it is called at.

k-diffusion samplers call the model with sigma (B,) and say nothing else of the step; a
sigma may stand at several positions of the schedule (the sampler does not move between
them), and a step may call the model more than once (heun, dpm_2: only the first call is
the step's own).
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import GuidanceError


class StepLocator:
    """Finds steps in the sampler's sigmas (steps + 1,): step i runs from sigmas[i]."""

    def __init__(self, sigmas: torch.Tensor):
        self.step_sigmas = sigmas[:-1].detach().cpu()  # (steps,)
        self.reached = -1  # the latest step found: it tells apart the steps of a repeated sigma

    def step_at(self, sigma: torch.Tensor) -> Optional[int]:
        """The step of a model call at sigma (B,): the position of that sigma in the sampler's
        sigmas. A sigma standing at several positions is each of them in turn: the first after
        the latest step reached. None: a further call at the latest step."""
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
