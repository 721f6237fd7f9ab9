"""AI-T2I engine: attention maps, losses, the methods table, token resolution, the update
schedule and the settings and record of a guided run.

Imports nothing from the host; everything here works on plain tensors.
"""
from .guidance import RefinementTarget, StepReport, gradient_step, guided_update
from .maps import (AttentionRecorder, SubjectMaps, TokenGroups, attention_probabilities, gaussian_smooth,
                   joint_attention_probabilities, pool_maps, subject_maps)
from .methods import ATTEND_AND_EXCITE_REFINEMENT, LOSSES, PRESETS, Preset, Refinement, configured_preset
from .record import RunRecord
from .regions import Regions, centroid, find_regions
from .schedule import GuidanceSchedule
from .settings import GuidanceSettings, SettingsError
from .tokens import (MAX_SUBJECTS, PRECEDING, ResolvedSubjects, SubjectError, Tokenization, TokenStream, parse_attributes,
                     parse_list, parse_pairs, resolve, resolve_streams)
from .weights import BaselineWeights, LayoutWeights, LossWeights

__all__ = [
    "RefinementTarget", "Refinement", "StepReport", "gradient_step", "guided_update", "LOSSES", "PRESETS", "LossWeights",
    "BaselineWeights", "Preset", "configured_preset", "LayoutWeights", "AttentionRecorder", "SubjectMaps", "TokenGroups",
    "attention_probabilities", "joint_attention_probabilities", "pool_maps",
    "gaussian_smooth", "subject_maps", "Regions", "centroid", "find_regions",
    "ATTEND_AND_EXCITE_REFINEMENT", "GuidanceSchedule", "GuidanceSettings", "SettingsError", "RunRecord",
    "MAX_SUBJECTS", "SubjectError",
    "ResolvedSubjects", "Tokenization", "parse_list", "parse_pairs", "resolve", "parse_attributes", "PRECEDING",
    "TokenStream", "resolve_streams",
]
