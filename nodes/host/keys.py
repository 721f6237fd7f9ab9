"""The names the guidance pass and its hooks share, and the signal that ends a pass early.

A leaf: every hook module and the guidance pass import it, and it imports nothing of the pack,
so no two modules of the host adapter need each other.
"""
from __future__ import annotations

# model_options key marking a model patched by this pack (value: the hooked layers).
PATCH_KEY = "ai_t2i_patch"
# transformer_options keys, set in the guidance pass's own copy of the options only: every
# other forward (the sampler's CFG passes) runs the hooks as pass-through.
RECORDER_KEY = "ai_t2i_recorder"  # the pass's AttentionRecorder
BLOCK_KEY = "ai_t2i_block"  # DiT: the layer key of the block running (in the block hook's copy)
JOINT_LAYOUT_KEY = "ai_t2i_joint_layout"  # DiT: a JointLayout, where text and image tokens sit
RUN_BLOCK_KEY = "ai_t2i_run_block"  # DiT: run_block(key, args), for a family whose patched blocks are checkpointed


class StopGuidanceForward(Exception):
    """Raised after the last layer the loss reads: the rest of the network is not needed."""


def record_layer(recorder, key, probabilities, map_size: tuple[int, int]) -> None:
    """Hand one layer's (B, N, T) probabilities to the pass's recorder; end the forward when it
    holds every layer it wants and may stop early."""
    recorder.record_probabilities(key, probabilities, map_size)
    if recorder.complete and recorder.stop_early:
        raise StopGuidanceForward()
