"""AI-T2I engine: attention maps, losses, token resolution and the update schedule.

Imports nothing from the host; everything here works on plain tensors.
"""
from .guidance import RefinementTarget, StepReport, gradient_step, guided_update
from .layout_terms import LayoutWeights
from .losses import ATTEND_AND_EXCITE_REFINEMENT, LOSSES, PRESETS, LossWeights, Preset, Refinement, preset_weights
from . import baselines  # registers Divide & Bind, A-STAR and CONFORM into LOSSES / PRESETS
from .maps import (AttentionRecorder, SubjectMaps, TokenGroups, attention_probabilities, gaussian_smooth,
                   joint_attention_probabilities, pool_maps, subject_maps)
from .regions import Regions, centroid, find_regions
from .schedule import GuidanceSchedule
from .tokens import (MAX_SUBJECTS, PRECEDING, ResolvedSubjects, SubjectError, Tokenization, TokenStream, parse_attributes,
                     parse_list, parse_pairs, resolve, resolve_streams)

__all__ = [
    "RefinementTarget", "Refinement", "StepReport", "gradient_step", "guided_update", "LOSSES", "PRESETS", "LossWeights", "Preset",
    "preset_weights", "LayoutWeights", "AttentionRecorder", "SubjectMaps", "TokenGroups", "attention_probabilities",
    "joint_attention_probabilities", "pool_maps",
    "gaussian_smooth", "subject_maps", "Regions", "centroid", "find_regions",
    "ATTEND_AND_EXCITE_REFINEMENT", "GuidanceSchedule", "MAX_SUBJECTS", "SubjectError",
    "ResolvedSubjects", "Tokenization", "parse_list", "parse_pairs", "resolve", "parse_attributes", "PRECEDING",
    "TokenStream", "resolve_streams",
]
