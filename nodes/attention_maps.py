"""AI-T2I Attention Maps: per-subject heatmaps of a guided run, for the image preview."""
from __future__ import annotations

import torch

from ..ai_t2i_attention import parse_list
from ..ai_t2i_attention.preview import heatmaps
from .host.sampling import GuidedSampler


class AIT2IAttentionMaps:
    DESCRIPTION = ("Shows where each subject attended during the last run of an AI-T2I Guided Sampler: one heatmap "
                   "per subject and image, optionally over the decoded image. With 'AI-T2I Record Maps After "
                   "Guidance' between the Guided Sampler and SamplerCustom, each step shows the maps before and "
                   "after its update.")
    CATEGORY = "sampling/AI-T2I"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("attention_maps", "loss_log")
    OUTPUT_TOOLTIPS = ("Heatmaps in this order: for each chosen step, the maps before the update (then, if recorded, "
                       "after it); within each, image by image, the subjects in the order typed. The node's text "
                       "lists the order.", "The loss per guided step.")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "sampler": ("SAMPLER", {"tooltip": "The 'AI-T2I Guided Sampler' that ran."}),
                    "samples": ("LATENT", {"tooltip": "The sampler's output (ensures the maps are read after the run)."}),
                    "steps": ("STRING", {"default": "first, last", "tooltip":
                        "Guided steps to show: 'first, last', 'all', or step numbers like '0, 5, 10'."}),
                },
                "optional": {"images": ("IMAGE", {"tooltip": "Decoded images to draw the heatmaps over."})}}

    def render(self, sampler, samples, steps, images=None):
        if not isinstance(sampler, GuidedSampler):
            raise ValueError("sampler is not an 'AI-T2I Guided Sampler': connect the same SAMPLER that SamplerCustom used")
        record = sampler.last_run
        if record is None or not record.maps:
            raise ValueError("the guided sampler has not guided any step yet (strength 0 or an empty step range?)")
        keys = sorted(record.maps)
        words = [w.lower() for w in parse_list(steps)]
        if words == ["all"]:
            chosen = keys
        elif set(words) <= {"first", "last"}:
            chosen = sorted({keys[0] if w == "first" else keys[-1] for w in words})
        else:
            try:
                chosen = [int(w) for w in words]
            except ValueError:
                raise ValueError(f"steps {steps!r}: use 'first, last', 'all' or step numbers like '0, 5'") from None
            absent = [c for c in chosen if c not in record.maps]
            if absent:
                raise ValueError(f"steps {absent} were not guided; guided steps: {keys}")
        if images is not None and images.shape[0] != next(iter(record.maps.values())).shape[0]:
            images = None
        tiles, legend = before_after_tiles(record, chosen, images)
        log_text = record.log_text()
        return {"ui": {"text": [legend + "\n" + log_text]}, "result": (tiles, log_text)}


def before_after_tiles(record, steps: list[int], images=None) -> tuple[torch.Tensor, str]:
    """(N, H, W, 3) heatmaps of the chosen steps, before and (where recorded) after the
    update, and a text legend of the order. images: optional (B, H, W, 3) to draw over."""
    size = tuple(images.shape[1:3]) if images is not None else (256, 256)
    parts, rows = [], []
    for k in steps:
        for when, maps in (("before", record.maps.get(k)), ("after", record.maps_after.get(k))):
            if maps is None:
                continue
            parts.append(heatmaps(maps, size, images))
            rows.append(f"step {k} {when} update: " + ", ".join(
                f"image {b} {s}" for b in range(maps.shape[0]) for s in record.subjects))
    return torch.cat(parts, dim=0), "tiles in order:\n" + "\n".join(rows)
