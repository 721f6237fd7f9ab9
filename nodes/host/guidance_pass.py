"""The guidance pass: one forward of the prompt's branch with gradients, on a copy of the
model's options, that records the cross-attention maps the loss reads and stops after the
last of them.

What changes here is what changes when the host changes how a model is called (its
patch slots and transformer_options, calc_cond_batch, the model sampling's input scale,
the UNet's in-place skip additions). The sampler driving (sampling.py) reaches the model
only through the GuidancePass interface below, so another model family plugs in here.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

import comfy.samplers
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ...ai_t2i_attention import AttentionRecorder, pool_maps
from ...ai_t2i_attention.layers import Layer, map_size
from .attention import (RECORDER_KEY, CrossAttentionHook, StopGuidanceForward, differentiable_attention,
                        installed_layers)
from .conditioning import control_modules
from .errors import GuidanceError
from .gradients import make_grad_capable
from .joint_attention import JointLayout, joint_guidance_options
from .mmdit import dit_family, dit_work, is_dit, run_block
from .unet import UnsupportedModel, cross_attention_layers, unet_work, work_until


class GuidancePass(Protocol):
    """What the sampler driving asks of a model family, and all it knows of the network.

    Two families implement it: the UNet (UNetGuidancePass: attn2 hooks) and the
    joint-attention models SD3/SD3.5 and Flux.1 (MMDiTGuidancePass: block hooks and an
    attention override that read the image-to-text block of each joint attention, the text
    tokens' columns of softmax(QK^T) over the whole sequence). Each gives its own walk's
    `layers` and `work_share`; the driving does not change.

    layers: every layer the patch node hooked, in execution order; the engine's layer
            policy (ai_t2i_attention/layers.py) chooses among them.
    """

    layers: Sequence[Layer]

    def work_share(self, latent_hw: tuple[int, int]) -> Callable[[Sequence[Layer]], float]:
        """For a latent of latent_hw (h, w): the fraction of the network's forward that a
        pass stopping after the given layers runs (0..1)."""

    def input_scale(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1) factor from the sampler's latent x (B, C, H, W) at sigma (B,) to the
        network's input; the guided update is taken there."""

    def attention(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                  layers: Sequence[Layer]) -> torch.Tensor:
        """(B, H, W, T) probabilities of `layers` (averaged over heads and layers) from the
        image positions to the T text tokens, for the sampler's latent x (B, C, h, w) on the
        prompt's branch. Differentiable in x when the caller enables gradients."""


def patched_layers(model_options: dict) -> tuple[Layer, ...]:
    """The layers 'AI-T2I Attention Patch' hooked on the sampler's model."""
    layers = installed_layers(model_options)
    if layers is None:
        raise GuidanceError("the model is not patched for AI-T2I: pass it through 'AI-T2I Attention Patch' "
                            "before the guider/sampler")
    return layers


def guidance_pass(guider, entry: dict, layers: Sequence[Layer], stop_early: bool = True,
                  fused_attention: bool = True) -> GuidancePass:
    """The guidance pass of the guider's model on the prompt's conditioning entry, chosen by
    the model's type: joint-attention (SD3/SD3.5, Flux.1) or UNet. Any other model is an
    error naming what is supported."""
    model = guider.inner_model
    try:
        if is_dit(model):
            return MMDiTGuidancePass(guider, entry, layers, stop_early, fused_attention)
        if isinstance(model.diffusion_model, UNetModel):
            return UNetGuidancePass(guider, entry, layers, stop_early, fused_attention)
        cross_attention_layers(model.diffusion_model)  # raises UnsupportedModel, naming what is supported
    except UnsupportedModel as e:
        raise GuidanceError(str(e)) from None
    raise GuidanceError(f"AI-T2I cannot guide a {type(model).__name__}")


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


def recorded_forward(model, entry: dict, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                     recorder: AttentionRecorder, parts: str, attention: str) -> torch.Tensor:
    """Run the prompt entry's branch with the guidance pass's model_options (it stops after
    the recorder's last layer) and return the recorded (B, H, W, T) maps. A hooked layer that
    did not fire is an error: another patch or wrapper bypassed `attention` there (`parts`
    names the hooked units in the message)."""
    try:
        comfy.samplers.calc_cond_batch(model, [[entry]], x, sigma, model_options)
    except StopGuidanceForward:
        pass
    if not recorder.complete:
        missing = sorted(recorder.wanted - set(recorder.seen))
        raise GuidanceError(f"the AI-T2I hooks did not fire on {len(missing)} {parts} (e.g. {missing[0]}): "
                            f"another patch or model wrapper bypasses {attention} there; connect "
                            "'AI-T2I Attention Patch' last in the model chain")
    return recorder.average()


class UNetGuidancePass:
    """The guidance pass of a ComfyUI UNet (openaimodel), hooked by install_hooks.

    Made once per guided run: the UNet and the ControlNets on the entry are made
    grad-capable here (the values do not change; see gradients.py)."""

    def __init__(self, guider, entry: dict, layers: Sequence[Layer], stop_early: bool = True,
                 fused_attention: bool = True):
        self.guider = guider
        self.entry = entry  # the prompt's conditioning entry: the branch the pass runs
        self.layers = tuple(layers)
        self.stop_early = stop_early  # end the forward after the last layer read
        self.fused_attention = fused_attention
        make_grad_capable(guider.inner_model.diffusion_model)
        for module in control_modules(entry):
            make_grad_capable(module)

    def work_share(self, latent_hw: tuple[int, int]) -> Callable[[Sequence[Layer]], float]:
        work = unet_work(self.guider.inner_model.diffusion_model, latent_hw)
        return lambda layers: work_until(work, [l.key for l in layers])

    def input_scale(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return unet_input_scale(self.guider.inner_model.model_sampling, sigma, x)

    def attention(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                  layers: Sequence[Layer]) -> torch.Tensor:
        recorder = AttentionRecorder(frozenset(l.key for l in layers), stop_early=self.stop_early)
        mo = guidance_model_options(model_options, recorder, self.fused_attention)
        return recorded_forward(self.guider.inner_model, self.entry, x, sigma, mo, recorder,
                                "layers", "cross-attention")


def context_tokens(entry: dict) -> int:
    """T: the number of text tokens of the entry's context (B, T, C), as the model receives it."""
    cond = entry.get("model_conds", {}).get("c_crossattn")
    if cond is None or getattr(cond, "cond", None) is None:
        raise GuidanceError("the AI-T2I subject prompt has no text context for the model: encode it with "
                            "'AI-T2I Subject Prompt' from the checkpoint's own text encoder")
    return int(cond.cond.shape[1])


class MMDiTGuidancePass:
    """The guidance pass of a joint-attention model (SD3/SD3.5: MMDiT; Flux.1), hooked by
    joint_attention.install_joint_hooks.

    The maps are recorded at the patch grid (latent / patch) and average-pooled to the
    chosen layers' factor (the level policy: ai_t2i_attention/layers.py). Made once per
    guided run: the DiT and the ControlNets on the entry are made grad-capable here."""

    def __init__(self, guider, entry: dict, layers: Sequence[Layer], stop_early: bool = True,
                 fused_attention: bool = True):
        self.guider = guider
        self.model = guider.inner_model
        self.family = dit_family(self.model)
        self.entry = entry
        self.layers = tuple(layers)
        self.text_tokens = context_tokens(entry)
        self.stop_early = stop_early
        self.fused_attention = fused_attention
        make_grad_capable(self.model.diffusion_model)
        for module in control_modules(entry):
            make_grad_capable(module)

    def work_share(self, latent_hw: tuple[int, int]) -> Callable[[Sequence[Layer]], float]:
        work = dit_work(self.model, latent_hw, self.text_tokens)
        return lambda layers: work_until(work, [l.key for l in layers])

    def input_scale(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return unet_input_scale(self.model.model_sampling, sigma, x)  # flow models: 1

    def layout(self, latent_hw: tuple[int, int]) -> JointLayout:
        """Where the context's and the latent's tokens sit in each joint attention."""
        grid = map_size(latent_hw, self.family.patch)
        text = (self.family.registers, self.family.registers + self.text_tokens)
        return JointLayout(text, (text[1], text[1] + grid[0] * grid[1]), grid)

    def attention(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                  layers: Sequence[Layer]) -> torch.Tensor:
        recorder = AttentionRecorder(frozenset(l.key for l in layers), stop_early=self.stop_early)
        run = (lambda key, args: run_block(self.model, key, args)) if self.family.checkpointed else None
        mo = joint_guidance_options(model_options, recorder, self.layout(tuple(x.shape[-2:])), self.layers, run,
                                    self.fused_attention)
        maps = recorded_forward(self.model, self.entry, x, sigma, mo, recorder, "blocks", "the joint attention")
        return pool_maps(maps, layers[0].factor // self.family.patch)
