"""One guided run: everything it reads, made before its first step (prepare_run), and the
update of one guided step (GuidedRun.update): the guidance pass's maps, the method's loss,
the engine's guided_update with the host's interrupt check, and the run record.

A guided step reads nothing back from the device but the test a refinement needs: the
record keeps the step's losses and maps where they were made, and GuidedRun.finish brings
them to the host when the run ends (and warns there of any image whose update was skipped).

The network is reached only through GuidancePass and the conditioning through
conditioning.py, so nothing here depends on the model family.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch.profiler import record_function

import comfy.model_management

from ...ai_t2i_attention import (LOSSES, GuidanceSettings, LossWeights, RunRecord, SubjectMaps, TokenGroups,
                                 guided_update, subject_maps)
from ...ai_t2i_attention.joint_maps import DEFAULT_JOINT_MAP
from ...ai_t2i_attention.layers import Layer, LayerChoiceError, choose_layers, describe_layers, map_size
from .conditioning import entry_layout, has_control, subject_entry, subject_names
from .errors import GuidanceError
from .guidance_pass import GuidancePass, patched_layers

log = logging.getLogger("ai_t2i")


def prepare_run(settings: GuidanceSettings, guider, sigmas: torch.Tensor, noise: torch.Tensor,
                record: RunRecord) -> "GuidedRun":
    """Everything a guided run reads, before its first step: the prompt's entry and its
    subjects, the model's guidance pass, the layers the loss reads and the layout's regions,
    for the sampler's starting noise (B, C, h, w) (its shape is the latent's). Every error the
    user can fix is raised here, before sampling starts."""
    hooked = patched_layers(guider.model_options)
    entry, groups = subject_entry(guider.conds)
    layout, weights = entry_layout(entry, settings.preset)
    guidance_pass = GuidancePass(guider, entry, hooked, settings.stop_early, settings.fused_attention,
                                 settings.joint_map_rule.keys)
    batch, hw = noise.shape[0], tuple(noise.shape[-2:])
    share = lambda chosen: guidance_pass.work_share(hw, chosen)  # noqa: E731
    try:
        layers = choose_layers(guidance_pass.hooked, hw, settings.level, settings.layers, share,
                               control=has_control(entry))
    except LayerChoiceError as e:
        raise GuidanceError(str(e)) from None
    record.subjects = subject_names(entry)
    record.layers = describe_layers(layers)
    if guidance_pass.family.joint_attention and settings.joint_map != DEFAULT_JOINT_MAP:  # how a DiT's maps were read
        record.layers += f" as {settings.joint_map}"
    record.pass_work = share(layers) if settings.stop_early else 1.0
    record.map_size = map_size(hw, layers[0].factor)  # the chosen layers share one level
    regions = None  # (B, S, H, W) at the map size: the layout's, made once
    if layout is not None:
        layout.check_image(hw, batch)
        with torch.inference_mode(False):  # the loss reads them with autograd on (the host samples in inference mode)
            regions = layout.region_masks(record.map_size, batch).to(noise.device)
    return GuidedRun(settings, guidance_pass, sigmas, groups, weights, layers, regions, record)


class GuidedRun:
    """State of one guided sampling run, complete from the start (see prepare_run).

    settings:      the run's settings
    guidance_pass: the model's guidance pass
    sigmas:        (steps + 1,) the sampler's sigmas: step i runs from sigmas[i]
    groups:        the subjects' (and attributes') token columns
    weights:       the loss weights, the layout's weight applied
    layers:        the layers the loss reads (one level)
    regions:       (B, S, H, W) the layout's regions at the map size; None: no layout
    record:        what the run did, filled step by step
    """

    def __init__(self, settings: GuidanceSettings, guidance_pass: GuidancePass, sigmas: torch.Tensor,
                 groups: TokenGroups, weights: LossWeights, layers: list[Layer], regions: Optional[torch.Tensor],
                 record: RunRecord):
        self.settings = settings
        self.guidance_pass = guidance_pass
        self.sigmas = sigmas
        self.total_steps = len(sigmas) - 1
        self.guided_steps = settings.schedule.guided_steps(self.total_steps)
        self.groups = groups
        self.weights = weights
        self.layers = layers
        self.regions = regions
        self.record = record
        # joint_map is a joint-attention model's setting (the family says): a UNet's maps are
        # read as they are, whatever it says.
        self.sharpen = settings.joint_map_rule.sharpen and guidance_pass.family.joint_attention
        # Smoothed subject maps of the latest guidance pass, and of the previous guided step's
        # last pass: the state that A-STAR retention and CONFORM read as maps.previous.
        self.latest_maps: Optional[torch.Tensor] = None
        self.previous_maps: Optional[torch.Tensor] = None

    def is_guided(self, step: int) -> bool:
        return self.settings.schedule.is_guided(step, self.total_steps)

    def update(self, x: torch.Tensor, sigma: torch.Tensor, step: int, model_options: dict) -> torch.Tensor:
        """The guided update of step `step` on latent x (B, C, H, W) at sigma (B,); returns the new latent."""
        with record_function("ai_t2i.step"):
            return self._update(x, sigma, step, model_options)

    def _update(self, x: torch.Tensor, sigma: torch.Tensor, step: int, model_options: dict) -> torch.Tensor:
        schedule = self.settings.schedule
        self.previous_maps = self.latest_maps
        refinement = self.settings.preset.refinement_at(step, self.total_steps)
        # The reference moves the network's input z = c_in * x (diffusers' latent), not the sampler's x:
        # the same step taken on x would move z by only c_in^2 of it (0.005 at SD's first sigma).
        c_in = self.guidance_pass.input_scale(sigma, x)
        z = x * c_in
        new_z, report = guided_update(
            z, lambda z: self._terms(z / c_in, sigma, model_options, step), step,
            self.settings.strength * self.guidance_pass.family.step_scale * schedule.step_size(step, self.total_steps),
            refinement,
            comfy.model_management.throw_exception_if_processing_interrupted)
        new_x = x + (new_z - z) / c_in  # an image whose update was skipped keeps x bit for bit
        self.record.reports.append(report)
        if self.settings.keep_maps_after:
            with record_function("ai_t2i.maps_after"):
                self.record.maps_after[step] = self._maps_after(new_x, sigma, model_options)
        return new_x

    def finish(self) -> None:
        """At the run's end: the record's values on the host (RunRecord.finish), and a warning
        for every image whose update a step skipped, naming the step."""
        self.record.finish()
        for report in self.record.reports:
            for line in report.skipped:
                log.warning("AI-T2I step %d: %s, so that image's update was skipped (its latent is unchanged). If "
                            "the model runs in fp16, lower strength or load the model in fp32/bf16.", report.step,
                            line)

    def _maps(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> SubjectMaps:
        """SubjectMaps of latent x (B, C, h, w) from one guidance pass, with the layout's
        regions and the previous guided step's maps. Gradients flow if the caller enables them."""
        with record_function("ai_t2i.forward"):
            avg = self.guidance_pass.attention(x, sigma, model_options, self.layers)
        if tuple(avg.shape[1:3]) != self.record.map_size:
            raise RuntimeError(f"the guidance pass gave {tuple(avg.shape[1:3])} maps, where the latent's size "
                               f"gives {self.record.map_size} at the layers read")
        with record_function("ai_t2i.loss"):  # the subject maps are the loss's first part
            return subject_maps(avg, self.groups, regions=self.regions, previous=self.previous_maps,
                                sharpen=self.sharpen)

    def _terms(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict, step: int) -> dict:
        """The method's loss terms {term: (B,)} at latent x, from one guidance pass with gradients."""
        with torch.inference_mode(False), torch.enable_grad():
            maps = self._maps(x, sigma, model_options)
            with record_function("ai_t2i.loss"):
                terms = LOSSES[self.settings.preset.loss](maps, self.weights)
        self.latest_maps = maps.smoothed.detach()
        if self.settings.keep_maps and step not in self.record.maps:
            self.record.maps[step] = maps.raw.detach()  # to the CPU when the run ends (finish)
        return terms

    def _maps_after(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """(B, S, H, W) raw subject maps of latent x, no gradient: what the step's own
        prediction sees after the update."""
        with torch.no_grad():
            return self._maps(x, sigma, model_options).raw  # to the CPU when the run ends (finish)
