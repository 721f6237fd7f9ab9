"""The settings of one guided run (GuidanceSettings), and how the node's widget values make them."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .joint_maps import DEFAULT_JOINT_MAP, JOINT_MAP_RULES, JointMapRule
from .methods import Preset, configured_preset
from .schedule import GuidanceSchedule

REFINEMENT_CHOICES = ("preset", "on", "off")


class SettingsError(ValueError):
    """Widget values that make no guided run; the message names the problem and the fix."""


def joint_map_rule(name: str) -> JointMapRule:
    """The JointMapRule a joint_map name stands for; an unknown name raises SettingsError
    naming the choices."""
    if name not in JOINT_MAP_RULES:
        raise SettingsError(f"unknown joint_map {name!r}; choose one of {', '.join(JOINT_MAP_RULES)}")
    return JOINT_MAP_RULES[name]


@dataclass(frozen=True)
class GuidanceSettings:
    preset: Preset  # the method: its loss, weights and refinement (refine: whether it runs)
    schedule: GuidanceSchedule = GuidanceSchedule()
    strength: float = 1.0  # multiplies every step size; 0 turns guidance off
    level: str = "auto"
    layers: str = "auto"
    joint_map: str = DEFAULT_JOINT_MAP  # a JOINT_MAP_RULES name: how SD3/Flux maps are read (a UNet's are its own)
    keep_maps: bool = True  # keep each guided step's maps for previews
    # Also keep the maps after each update: one extra no-grad conditional forward per guided
    # step (stopped after the last layer read), so it is off unless a preview asks for it.
    keep_maps_after: bool = False
    stop_early: bool = True  # end the guidance forward after the last layer the loss reads
    fused_attention: bool = True  # the guidance pass uses the host's PyTorch attention (fused backward)

    @classmethod
    def from_widgets(cls, method: str, strength: float, start_percent: float, end_percent: float,
                     scale_factor: float = 20.0, isolation_metric: str = "euclidean", refinement: str = "preset",
                     level: str = "auto", layers: str = "auto",
                     joint_map: str = DEFAULT_JOINT_MAP) -> GuidanceSettings:
        """The settings the guided nodes' widgets ask for (nodes/options.py names them).

        refinement: "preset" keeps the method's own choice, "on" / "off" overrule it; "on"
        for a method without a refinement raises SettingsError. An unknown method raises
        configured_preset's ValueError, an impossible guided range GuidanceSchedule's.
        """
        preset = configured_preset(method, isolation_metric=isolation_metric)
        if refinement not in REFINEMENT_CHOICES:
            raise SettingsError(f"unknown refinement {refinement!r}; choose preset, on or off")
        if refinement == "on" and preset.refinement is None:
            raise SettingsError(f"{method} has no iterative refinement (no term of its loss says when a subject is "
                                "present enough): set refinement to 'preset' or 'off', or choose Attend-and-Excite")
        joint_map_rule(joint_map)  # refuses an unknown name before the run
        if refinement != "preset":
            preset = replace(preset, refine=refinement == "on")
        schedule = GuidanceSchedule(start=start_percent, end=end_percent, scale_factor=scale_factor)
        return cls(preset=preset, schedule=schedule, strength=strength, level=level, layers=layers,
                   joint_map=joint_map)

    @property
    def joint_map_rule(self) -> JointMapRule:
        """The JointMapRule that joint_map names (a SettingsError names the choices)."""
        return joint_map_rule(self.joint_map)
