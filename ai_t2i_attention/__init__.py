"""AI-T2I engine: attention maps, losses, token resolution and the update schedule.

Imports nothing from the host; everything here works on plain tensors.
"""
from .guidance import StepReport, gradient_step, guided_update
from .losses import LOSSES, PRESETS, LossWeights, Preset, preset_weights
from . import baselines  # registers Divide & Bind, A-STAR and CONFORM into LOSSES / PRESETS
from .maps import AttentionRecorder, SubjectMaps, TokenGroups, attention_probabilities, gaussian_smooth, subject_maps
from .regions import Regions, centroid, find_regions
from .schedule import ATTEND_AND_EXCITE_REFINEMENT, GuidanceSchedule
from .tokens import MAX_SUBJECTS, ResolvedSubjects, SubjectError, Tokenization, parse_list, parse_pairs, resolve

__all__ = [
    "StepReport", "gradient_step", "guided_update", "LOSSES", "PRESETS", "LossWeights", "Preset",
    "preset_weights", "AttentionRecorder", "SubjectMaps", "TokenGroups", "attention_probabilities",
    "gaussian_smooth", "subject_maps", "Regions", "centroid", "find_regions",
    "ATTEND_AND_EXCITE_REFINEMENT", "GuidanceSchedule", "MAX_SUBJECTS", "SubjectError",
    "ResolvedSubjects", "Tokenization", "parse_list", "parse_pairs", "resolve",
]
