"""AI-T2I Attention Maps: per-subject heatmaps of a guided run, for the image preview."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ai_t2i_attention import parse_list
from ..ai_t2i_attention.preview import heatmaps
from .host.sampling import GuidedSampler


class AIT2IAttentionMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IAttentionMaps",
            display_name="AI-T2I Attention Maps",
            category="sampling/AI-T2I",
            description=("Shows where each subject attended during the last run of an AI-T2I Guided Sampler: one "
                         "heatmap per subject and image, optionally over the decoded image. With 'AI-T2I Record "
                         "Maps After Guidance' between the Guided Sampler and SamplerCustom, each step shows the maps "
                         "before and after its update."),
            inputs=[
                io.Sampler.Input("sampler", tooltip="The 'AI-T2I Guided Sampler' that ran."),
                io.Latent.Input("samples", tooltip="The sampler's output (ensures the maps are read after the run)."),
                io.String.Input("steps", default="first, last", tooltip=(
                    "Guided steps to show: 'first, last', 'all', or step numbers like '0, 5, 10'.")),
                io.Image.Input("images", optional=True, tooltip="Decoded images to draw the heatmaps over."),
            ],
            outputs=[
                io.Image.Output(display_name="attention_maps", tooltip=(
                    "Heatmaps in this order: for each chosen step, the maps before the update (then, if recorded, "
                    "after it); within each, image by image, the subjects in the order typed. The node's text lists "
                    "the order.")),
                io.String.Output(display_name="loss_log", tooltip="The loss per guided step."),
            ],
        )

    @classmethod
    def execute(cls, sampler, samples, steps, images=None) -> io.NodeOutput:
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
        return io.NodeOutput(tiles, log_text, ui={"text": [legend + "\n" + log_text]})


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
