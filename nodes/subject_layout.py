"""AI-T2I Subject Layout: a box or a mask per subject, attached to the subject prompt."""
from __future__ import annotations

from ..ai_t2i_attention.layout import BOX_EXAMPLE, LayoutError, SubjectLayout, check_mask, parse_boxes, subject_index
from ..ai_t2i_attention.tokens import parse_list
from .host.conditioning import LAYOUT_KEY, SUBJECTS_KEY

MASK_SLOTS = 4


class AIT2ISubjectLayout:
    DESCRIPTION = ("Gives subjects a region of the image: AI-T2I then gathers each subject's attention inside its "
                   "region and keeps it out of the rest (BoxDiff-style inner and outer constraints). Boxes are typed; "
                   "masks come from any mask node or a hand-drawn mask. Put it between 'AI-T2I Subject Prompt' and "
                   "the sampler.")
    CATEGORY = "conditioning/AI-T2I"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The same conditioning, carrying the subjects' regions for the AI-T2I sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        masks = {f"mask_{i}": ("MASK", {"tooltip":
            f"Region of a subject (white = inside). Without mask_subjects it is the prompt's subject number {i}. "
            "Make it at the image's size (one mask, or one per image of the batch)."}) for i in range(1, MASK_SLOTS + 1)}
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "The positive prompt from 'AI-T2I Subject Prompt'."}),
                "boxes": ("STRING", {"multiline": True, "default": BOX_EXAMPLE, "tooltip":
                    "One box per subject: 'subject: x0 y0 x1 y1', separated by ';' or new lines. x0 y0 is the "
                    "top-left corner and x1 y1 the bottom-right one, as fractions of the image width and height "
                    "(0..1, y downwards), e.g. 'cat: 0.05 0.2 0.45 0.8'. End an entry with 'px' to give pixels "
                    "instead ('cat: 26 51 230 205 px'; then set width and height). Subjects are named as in the "
                    "subject prompt. Leave empty when masks give all regions; a subject with no region is only "
                    "kept out of the others' regions."}),
                "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.05, "tooltip":
                    "How hard the regions are enforced: multiplies the inner and outer terms' weights (1.0 each, "
                    "next to isolation 2.0 and aggregation 1.25). The sampler's strength scales everything. 0 turns the layout "
                    "off (the sampler then ignores the regions)."}),
            },
            "optional": {
                **masks,
                "mask_subjects": ("STRING", {"default": "", "tooltip":
                    "Which subject each mask is for, comma separated, in the order mask_1, mask_2, ... (e.g. "
                    "'dog, cat'). Empty: mask_1 is the first subject, mask_2 the second, and so on."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                    "Image width in pixels. Needed only for boxes in pixels ('px'); 0 = not given."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                    "Image height in pixels. Needed only for boxes in pixels ('px'); 0 = not given."}),
            },
        }

    def apply(self, conditioning, boxes, weight=1.0, mask_subjects="", width=0, height=0, **masks):
        carrying = [c for c in conditioning if c[1].get(SUBJECTS_KEY) is not None]
        if not carrying:
            raise LayoutError("the conditioning carries no AI-T2I subjects: connect the output of 'AI-T2I Subject "
                              "Prompt' (where the subject words are typed) to this node")
        subjects = tuple(carrying[0][1][SUBJECTS_KEY].subjects)
        size = (width, height) if width and height else None
        parsed = parse_boxes(boxes, subjects, size)
        region_masks = [None] * len(subjects)
        names = parse_list(mask_subjects)
        slots = [(i, masks.get(f"mask_{i}")) for i in range(1, MASK_SLOTS + 1)]
        connected = [(i, m) for i, m in slots if m is not None]
        if names and len(names) < max((i for i, _ in connected), default=0):
            raise LayoutError(f"mask_subjects names {len(names)} subjects but mask_{connected[-1][0]} is connected: "
                              "name one subject per mask slot, in the order mask_1, mask_2, ...")
        for i, mask in connected:
            label = f"mask_{i}"
            if names:
                s = subject_index(names[i - 1], subjects, f"mask_subjects (for {label})")
            elif i <= len(subjects):
                s = i - 1
            else:
                raise LayoutError(f"{label} is connected but the prompt has only {len(subjects)} subjects: "
                                  "disconnect it or name its subject in mask_subjects")
            mask = check_mask(mask, f"{label} (for {subjects[s]!r})")
            if size and tuple(mask.shape[-2:]) != (height, width):
                raise LayoutError(f"{label} is {mask.shape[-1]}x{mask.shape[-2]} px but width x height is "
                                  f"{width}x{height}: make the mask at the image's size")
            if region_masks[s] is not None:
                raise LayoutError(f"two masks are for {subjects[s]!r}: give one mask per subject")
            region_masks[s] = mask
        layout = SubjectLayout(subjects, tuple(parsed.get(s) for s in range(len(subjects))), tuple(region_masks),
                               weight)
        out = []
        for c in conditioning:
            spec = c[1].get(SUBJECTS_KEY)
            if spec is not None and tuple(spec.subjects) == subjects:
                out.append([c[0], {**c[1], LAYOUT_KEY: layout}])
            else:
                out.append(c)
        return (out,)
