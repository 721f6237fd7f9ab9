"""The host's conditioning, as a guided run reads it: which positive entry carries the
subjects (and their layout), and the ControlNet chain hanging on that entry.

What changes here is what changes when the host changes its conditioning format (the
entry dict, its "area" / "mask" / "control" keys, the ControlNet objects' attributes).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ...ai_t2i_attention import Preset, TokenGroups
from .errors import GuidanceError

log = logging.getLogger("ai_t2i")

SUBJECTS_KEY = "ai_t2i_subjects"  # conditioning key carrying the resolved TokenGroups
LAYOUT_KEY = "ai_t2i_layout"  # same entry: a SubjectLayout from 'AI-T2I Subject Layout'


def subject_entry(conds: dict) -> tuple[dict, TokenGroups]:
    """The positive conditioning entry that carries resolved subjects."""
    positive = conds.get("positive") or []
    carrying = [c for c in positive if c.get(SUBJECTS_KEY) is not None]
    if not carrying:
        raise GuidanceError("the positive conditioning carries no AI-T2I subjects: encode the positive prompt with "
                            "'AI-T2I Subject Prompt' (it replaces CLIP Text Encode) and type the subject words there")
    if len(carrying) > 1:
        log.warning("AI-T2I: %d positive entries carry subjects; guiding with the first", len(carrying))
    entry = carrying[0]
    if entry.get("area") is not None or entry.get("mask") is not None:
        raise GuidanceError("the AI-T2I subject prompt has an area or mask set: guide a full-image prompt instead")
    return entry, entry[SUBJECTS_KEY].groups


def subject_names(entry: dict) -> list[str]:
    """The subjects of the entry as the run log names them: as the user typed them, with
    the prompt's word where it is another form ('circle -> circles', ResolvedSubjects.labels)."""
    return list(entry[SUBJECTS_KEY].labels())


def entry_layout(entry: dict, preset: Preset):
    """(SubjectLayout or None, the loss weights with the layout's weight applied)."""
    layout, w = entry.get(LAYOUT_KEY), preset.weights
    if layout is None or layout.weight == 0:  # weight 0 turns the layout off entirely
        return None, w
    if tuple(layout.subjects) != tuple(entry[SUBJECTS_KEY].subjects):  # both as typed
        raise GuidanceError("the layout was made for other subjects than the prompt's: connect 'AI-T2I Subject "
                            "Layout' directly after the 'AI-T2I Subject Prompt' it lays out")
    if not preset.reads_regions:
        raise GuidanceError("this method ignores layout regions: choose an AI-T2I method, or bypass 'AI-T2I "
                            "Subject Layout'")
    return layout, replace(w, layout=w.layout.scaled(layout.weight))


def has_control(entry: dict) -> bool:
    """A ControlNet or T2I adapter is attached to the entry."""
    return entry.get("control") is not None


def control_modules(entry: dict) -> list[torch.nn.Module]:
    """The networks of the ControlNet/T2I-adapter chain on a conditioning entry: the
    guidance forward runs them too (they read the latent), so they need gradients."""
    found, control = [], entry.get("control")
    while control is not None:
        for name in ("control_model", "t2i_model"):
            module = getattr(control, name, None)
            if isinstance(module, torch.nn.Module):
                found.append(module)
        control = getattr(control, "previous_controlnet", None)
    return found
