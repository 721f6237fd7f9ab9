"""Guidance widgets shared by the guided sampler and the one-node KSampler."""
from __future__ import annotations

from comfy_api.latest import io

from ..ai_t2i_attention import PRESETS, GuidanceSettings, SettingsError
from ..ai_t2i_attention.joint_maps import DEFAULT_JOINT_MAP, JOINT_MAP_RULES
from ..ai_t2i_attention.layers import AUTO_WORK_BUDGET, LAYER_SETS, LEVELS
from ..ai_t2i_attention.settings import REFINEMENT_CHOICES
from .host.errors import GuidanceError

METHOD_TOOLTIP = (
    "Loss preset. AI-T2I: isolation + aggregation + presence + attribute alignment. The 'only' variants drop a "
    "term (ablations). Baselines: Attend-and-Excite (presence only, iterative refinement); Divide & Bind "
    "(total-variation attendance + JSD attribute binding, refinement); A-STAR (segregation of subjects' maps + "
    "retention of the previous step's maps; the first guided step has no previous maps); CONFORM (contrastive "
    "loss: attributes with their subject, subjects apart; with no attribute words only the previous step's "
    "maps give it something to pull on).")

LAYERS_TOOLTIP = (
    "Which UNet blocks' cross-attention at that level is read. auto: down+up as the reference does, unless the "
    f"guidance pass would then run more than {AUTO_WORK_BUDGET:.0%} of the UNet (SDXL, whose up-block maps "
    "come after most of its work): then the down blocks only, so guidance stays near 1.35x the time of plain "
    "sampling. With a ControlNet auto reads down+up (its residuals join on the up path). The run log names "
    "the layers read. 'down' is the cheapest: the pass stops right after the down blocks. SD3/SD3.5 and Flux.1 "
    "(joint-attention models): 'joint' reads every joint (Flux: double-stream) block, 'joint+single' adds Flux's "
    "single-stream blocks, 'joint early' / 'joint middle' / 'joint late' read a third of the joint blocks; auto reads the joint blocks, only the first ones where reading all would run more "
    f"than {AUTO_WORK_BUDGET:.0%} of the network (SD3, whose joint blocks are the whole network).")


JOINT_MAP_TOOLTIP = (
    "SD3/SD3.5 and Flux.1 only (a UNet's maps are its cross-attention's, a softmax over the text already): how a "
    "joint-attention block's image-to-word attention becomes a subject's map. 'joint softmax': the attention's own "
    "probabilities, a softmax over every text and image token. 'text softmax': a softmax over the text tokens alone, "
    "as Attend-and-Excite's SD3 ports read it. 'sharpened joint softmax' (default, chosen on the Flux-shaped toy): "
    "the joint softmax, each subject's map blurred, cubed and normalised over the image, as FOCUS shapes its maps.")


def guidance_inputs() -> list:
    """The widgets every guided node has, in the order workflows save their values."""
    return [
        io.Combo.Input("method", options=list(PRESETS), default="AI-T2I", tooltip=METHOD_TOOLTIP),
        io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.05, tooltip=(
            "Multiplies every update's step size. 1 is the reference's step on SD1.x/SDXL and half of it on "
            "SD3/Flux (chosen on the embedded Flux-shaped model). 0 turns guidance off: the output is then exactly "
            "the base sampler's.")),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
            "First guided step, as a fraction of the sampling steps.")),
        io.Float.Input("end_percent", default=0.5, min=0.0, max=1.0, step=0.01, tooltip=(
            "Guidance stops at this fraction of the steps (the reference guides the first 25 of 50 steps: 0.5).")),
    ]


def layers_input(optional: bool = False):
    return io.Combo.Input("layers", options=["auto", *LAYER_SETS], default="auto", optional=optional,
                          tooltip=LAYERS_TOOLTIP)


def joint_map_input(optional: bool = False):
    return io.Combo.Input("joint_map", options=list(JOINT_MAP_RULES), default=DEFAULT_JOINT_MAP, optional=optional,
                          tooltip=JOINT_MAP_TOOLTIP)


def advanced_inputs() -> list:
    """The guided sampler's further widgets (the one-node KSampler offers ``layers`` and ``joint_map``)."""
    return [
        io.Float.Input("scale_factor", default=20.0, min=0.0, max=200.0, step=0.5, tooltip=(
            "Base step size: step i moves the latent by scale_factor * sqrt(s_i) * gradient, s going 1.0 -> 0.5.")),
        io.Combo.Input("isolation_metric", options=["euclidean", "cosine"], default="euclidean", tooltip=(
            "How subjects' maps are pushed apart: distance of their centroids (reference) or 1 - cosine "
            "similarity.")),
        io.Combo.Input("refinement", options=list(REFINEMENT_CHOICES), default="preset", tooltip=(
            "Iterative refinement at 0%, 20% and 40% of the steps (Attend-and-Excite): repeat the update (up to 20 "
            "times) until the weakest subject is present enough. 'preset' uses the method's own choice (on for "
            "Attend-and-Excite, Divide & Bind and CONFORM, off for AI-T2I as in its reference code). A-STAR has "
            "none.")),
        io.Combo.Input("level", options=list(LEVELS), default="auto", tooltip=(
            "Which attention resolution the loss reads, as a fraction of the latent size. auto: the one closest to "
            "16x16 maps (latent/4 for SD1.5 at 512 px and SDXL at 1024 px). SD3/Flux attend on one latent/2 grid, "
            "which is average-pooled: auto to about 16x16, 1/4 or 1/8 by that factor (1/1 is not available).")),
        layers_input(),
        joint_map_input(optional=True),
    ]


def settings_from_inputs(**widgets) -> GuidanceSettings:
    """GuidanceSettings from the values of the widgets above (guidance_inputs, advanced_inputs),
    passed by their names; a combination that makes no run raises GuidanceError, the host's
    error for a problem the user can fix."""
    try:
        return GuidanceSettings.from_widgets(**widgets)
    except SettingsError as e:
        raise GuidanceError(str(e)) from None
