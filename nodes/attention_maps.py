"""AI-T2I Attention Maps: per-subject heatmaps of a guided run, for the image preview."""
from __future__ import annotations

from comfy_api.latest import io

from ..ai_t2i_attention import parse_list
from ..ai_t2i_attention.preview import before_after_tiles
from .host.sampling import GuidedSampler
from .preview_notice import unguided_tile


class AIT2IAttentionMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IAttentionMaps",
            display_name="AI-T2I Attention Maps",
            category="sampling/AI-T2I",
            description=("Shows where each subject attended during the run of an AI-T2I Guided Sampler that made "
                         "'samples': one heatmap per subject and image, optionally over the decoded image. With "
                         "'AI-T2I Record Maps After Guidance' between the Guided Sampler and SamplerCustom, each step "
                         "shows the maps before and after its update. A run that guided no step (strength 0, or a "
                         "range without steps) shows one tile that says so."),
            inputs=[
                io.Sampler.Input("sampler", tooltip="The 'AI-T2I Guided Sampler' that ran."),
                io.Latent.Input("samples", tooltip=(
                    "The 'output' LATENT of the SamplerCustom that used this sampler: it picks that run's maps.")),
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
        wanted = _parse_steps(steps)
        record = sampler.runs.run_for(samples["samples"])
        log_text = record.log_text()
        if not record.maps:  # strength 0 or a range without steps: the prompt succeeds, the preview says so
            if images is not None and images.shape[0] != samples["samples"].shape[0]:
                images = None
            return io.NodeOutput(unguided_tile(record, images), log_text, ui={"text": [log_text]})
        keys = sorted(record.maps)
        if wanted == "all":
            chosen = keys
        elif isinstance(wanted, set):
            chosen = sorted({keys[0] if w == "first" else keys[-1] for w in wanted})
        else:
            chosen = wanted
            absent = [c for c in chosen if c not in record.maps]
            if absent:
                raise ValueError(f"steps {absent} were not guided; guided steps: {keys}")
        if images is not None and images.shape[0] != next(iter(record.maps.values())).shape[0]:
            images = None
        tiles, legend = before_after_tiles(record, chosen, images)
        return io.NodeOutput(tiles, log_text, ui={"text": [legend + "\n" + log_text]})


def _parse_steps(steps: str):
    """The 'steps' widget: "all", a set of "first"/"last", or a list of step numbers."""
    words = [w.lower() for w in parse_list(steps)]
    if words == ["all"]:
        return "all"
    if words and set(words) <= {"first", "last"}:
        return set(words)
    try:
        if not words:
            raise ValueError
        return [int(w) for w in words]
    except ValueError:
        raise ValueError(f"steps {steps!r}: use 'first, last', 'all' or step numbers like '0, 5'") from None
