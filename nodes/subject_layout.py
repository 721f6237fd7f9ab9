"""AI-T2I Subject Layout: a box or a mask per subject, attached to the subject prompt."""
from __future__ import annotations

from comfy_api.latest import io

from ..ai_t2i_attention.layout_parse import BOX_EXAMPLE, LayoutError, SubjectLayout, assign_masks, parse_boxes
from .host.conditioning import LAYOUT_KEY, SUBJECTS_KEY

MASK_SLOTS = 4


class AIT2ISubjectLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        masks = [io.Mask.Input(f"mask_{i}", optional=True, tooltip=(
            f"Region of a subject (white = inside). Without mask_subjects it is the prompt's subject number {i}. "
            "Make it at the image's size (one mask, or one per image of the batch).")) for i in range(1, MASK_SLOTS + 1)]
        return io.Schema(
            node_id="AIT2ISubjectLayout",
            display_name="AI-T2I Subject Layout",
            category="conditioning/AI-T2I",
            description=("Gives subjects a region of the image: AI-T2I then gathers each subject's attention inside "
                         "its region and keeps it out of the rest (BoxDiff-style inner and outer constraints). Boxes "
                         "are typed; masks come from any mask node or a hand-drawn mask. Put it between 'AI-T2I "
                         "Subject Prompt' and the sampler."),
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The positive prompt from 'AI-T2I Subject Prompt'."),
                io.String.Input("boxes", multiline=True, default=BOX_EXAMPLE, tooltip=(
                    "One box per subject: 'subject: x0 y0 x1 y1', separated by ';' or new lines. x0 y0 is the "
                    "top-left corner and x1 y1 the bottom-right one, as fractions of the image width and height "
                    "(0..1, y downwards), e.g. 'cat: 0.05 0.2 0.45 0.8'. End an entry with 'px' to give pixels "
                    "instead ('cat: 26 51 230 205 px'; then set width and height). Subjects are named as in the "
                    "subject prompt. Leave empty when masks give all regions; a subject with no region is only "
                    "kept out of the others' regions.")),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.05, tooltip=(
                    "How hard the regions are enforced: multiplies the inner and outer terms' weights (1.0 each, "
                    "next to isolation 2.0 and aggregation 1.25). The sampler's strength scales everything. 0 turns "
                    "the layout off (the sampler then ignores the regions).")),
                *masks,
                io.String.Input("mask_subjects", default="", optional=True, tooltip=(
                    "Which subject each mask is for, comma separated, in the order mask_1, mask_2, ... (e.g. "
                    "'dog, cat'). Empty: mask_1 is the first subject, mask_2 the second, and so on.")),
                io.Int.Input("width", default=0, min=0, max=16384, step=8, optional=True, tooltip=(
                    "Image width in pixels. Needed only for boxes in pixels ('px'); 0 = not given.")),
                io.Int.Input("height", default=0, min=0, max=16384, step=8, optional=True, tooltip=(
                    "Image height in pixels. Needed only for boxes in pixels ('px'); 0 = not given.")),
            ],
            outputs=[io.Conditioning.Output(tooltip=(
                "The same conditioning, carrying the subjects' regions for the AI-T2I sampler."))],
        )

    @classmethod
    def execute(cls, conditioning, boxes, weight=1.0, mask_subjects="", width=0, height=0, **masks) -> io.NodeOutput:
        carrying = [c for c in conditioning if c[1].get(SUBJECTS_KEY) is not None]
        if not carrying:
            raise LayoutError("the conditioning carries no AI-T2I subjects: connect the output of 'AI-T2I Subject "
                              "Prompt' (where the subject words are typed) to this node")
        subjects = tuple(carrying[0][1][SUBJECTS_KEY].subjects)
        size = (width, height) if width and height else None
        parsed = parse_boxes(boxes, subjects, size)
        region_masks = assign_masks(subjects, {i: masks.get(f"mask_{i}") for i in range(1, MASK_SLOTS + 1)},
                                    mask_subjects, size)
        layout = SubjectLayout(subjects, tuple(parsed.get(s) for s in range(len(subjects))), region_masks, weight)
        out = []
        for c in conditioning:
            spec = c[1].get(SUBJECTS_KEY)
            if spec is not None and tuple(spec.subjects) == subjects:
                out.append([c[0], {**c[1], LAYOUT_KEY: layout}])
            else:
                out.append(c)
        return io.NodeOutput(out)
