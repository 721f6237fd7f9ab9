"""The guidance pass: one forward of the prompt's branch with gradients, on a copy of the
model's options, that records the attention maps the loss reads and stops after the last of
them. One class for every model family: what differs is asked of the family (families.py).

What changes here is what changes when the host changes how a model is called
(calc_cond_batch, transformer_options, the model sampling's input scale). The sampler
driving reaches the network only through GuidancePass.
"""
from __future__ import annotations

from typing import Sequence

import torch

import comfy.samplers

from ...ai_t2i_attention import AttentionRecorder
from ...ai_t2i_attention.layers import Layer
from .conditioning import control_modules
from .errors import GuidanceError
from .families import Family, family_of, hooked_layers
from .gradients import make_grad_capable
from .keys import RECORDER_KEY, StopGuidanceForward
from .structure import UnsupportedModel, work_until


def patched_layers(model_options: dict) -> tuple[Layer, ...]:
    """The layers 'AI-T2I Attention Patch' hooked on the sampler's model."""
    layers = hooked_layers(model_options)
    if layers is None:
        raise GuidanceError("the model is not patched for AI-T2I: pass it through 'AI-T2I Attention Patch' "
                            "before the guider/sampler")
    return layers


def context_tokens(entry: dict) -> int:
    """T: the number of text tokens of the entry's context (B, T, C), as the model receives it."""
    cond = entry.get("model_conds", {}).get("c_crossattn")
    if cond is None or getattr(cond, "cond", None) is None:
        raise GuidanceError("the AI-T2I subject prompt has no text context for the model: encode it with "
                            "'AI-T2I Subject Prompt' from the checkpoint's own text encoder")
    return int(cond.cond.shape[1])


def input_scale(model_sampling, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) c_in(sigma): the factor by which the host's model sampling turns the
    sampler's latent x (B, C, H, W) into the network's input z = c_in * x (calculate_input).
    eps and v models: 1 / sqrt(sigma^2 + sigma_data^2); flow matching (SD3, Flux): 1.
    Made outside inference mode: the guidance pass divides by it with autograd on."""
    with torch.inference_mode(False):
        return model_sampling.calculate_input(sigma.clone(), torch.ones_like(x[:, :1, :1, :1], device=x.device))


def pass_options(model_options: dict, recorder: AttentionRecorder, family: Family, hooked: Sequence[Layer],
                 latent_hw: tuple[int, int], text_tokens: int, fused_attention: bool, joint_keys: str = "all") -> dict:
    """A copy of model_options for one guidance pass: the recorder, the family's own entries,
    and the family's hook on every layer the pass needs.

    Where another pack's patch took one of those slots after 'AI-T2I Attention Patch'
    (IPAdapter-style packs use the same slots), it is wrapped in a hook of our own here, in
    the copy only, so both run: every other pass keeps the model's options as they are."""
    mo = dict(model_options)
    to = dict(mo.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    slots = dict(replace.get(family.patch_kind, {}))
    displaced = [key for key in family.pass_keys(hooked, recorder.wanted)
                 if not isinstance(slots.get(family.slot(key)), family.hook_type)]
    for key in displaced:
        slots[family.slot(key)] = family.hook_type(key, family.wrapped(slots, key))
    if displaced:
        replace[family.patch_kind] = slots
        to["patches_replace"] = replace
    to[RECORDER_KEY] = recorder
    family.add_pass_options(to, latent_hw, text_tokens, fused_attention, joint_keys)
    mo["transformer_options"] = to
    return mo


def recorded_forward(model, entry: dict, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                     recorder: AttentionRecorder, family: Family) -> torch.Tensor:
    """Run the prompt entry's branch with the guidance pass's model_options (it stops after
    the recorder's last layer) and return the recorded (B, H, W, T) maps. A hooked layer that
    did not fire is an error: another patch or wrapper bypassed the family's attention there."""
    try:
        comfy.samplers.calc_cond_batch(model, [[entry]], x, sigma, model_options)
    except StopGuidanceForward:
        pass
    if not recorder.complete:
        missing = sorted(recorder.wanted - set(recorder.seen))
        raise GuidanceError(f"the AI-T2I hooks did not fire on {len(missing)} {family.units} (e.g. {missing[0]}): "
                            f"another patch or model wrapper bypasses {family.attention} there; connect "
                            "'AI-T2I Attention Patch' last in the model chain")
    return recorder.average()


class GuidancePass:
    """The guidance pass of the guider's model on the prompt's conditioning entry.

    Made once per guided run, for any family: the network and the ControlNets on the entry
    are made grad-capable here (the values do not change; see gradients.py).

    hooked: every layer the patch node hooked, in execution order; the engine's layer policy
            (ai_t2i_attention/layers.py) chooses among them.
    """

    def __init__(self, guider, entry: dict, hooked: Sequence[Layer], stop_early: bool = True,
                 fused_attention: bool = True, joint_keys: str = "all"):
        self.model = guider.inner_model
        try:
            self.family = family_of(self.model)
        except UnsupportedModel as e:
            raise GuidanceError(str(e)) from None
        self.entry = entry  # the prompt's conditioning entry: the branch the pass runs
        self.hooked = tuple(hooked)
        self.text_tokens = context_tokens(entry)
        self.stop_early = stop_early  # end the forward after the last layer read
        self.fused_attention = fused_attention
        self.joint_keys = joint_keys  # a joint-attention model's maps: softmax over "all" keys or the "text" keys
        make_grad_capable(self.model.diffusion_model)
        for module in control_modules(entry):
            make_grad_capable(module)

    def work_share(self, latent_hw: tuple[int, int], layers: Sequence[Layer]) -> float:
        """For a latent of latent_hw (h, w): the fraction of the network's forward that a pass
        stopping after `layers` runs (0..1)."""
        return work_until(self.family.work(latent_hw, self.text_tokens), [l.key for l in layers])

    def input_scale(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1) factor from the sampler's latent x (B, C, H, W) at sigma (B,) to the
        network's input; the guided update is taken there."""
        return input_scale(self.model.model_sampling, sigma, x)

    def attention(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                  layers: Sequence[Layer]) -> torch.Tensor:
        """(B, H, W, T) probabilities of `layers` (averaged over heads and layers) from the
        image positions to the T text tokens, for the sampler's latent x (B, C, h, w) on the
        prompt's branch. Differentiable in x when the caller enables gradients."""
        recorder = AttentionRecorder(frozenset(l.key for l in layers), stop_early=self.stop_early)
        mo = pass_options(model_options, recorder, self.family, self.hooked, tuple(x.shape[-2:]), self.text_tokens,
                          self.fused_attention, self.joint_keys)
        return self.family.maps(recorded_forward(self.model, self.entry, x, sigma, mo, recorder, self.family), layers)
