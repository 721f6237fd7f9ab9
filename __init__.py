"""AI-T2I for ComfyUI: aggregating-and-isolating cross-attention guidance.

The nodes use ComfyUI's V3 schema; the host calls ``comfy_entrypoint`` to register them."""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
