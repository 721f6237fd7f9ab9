"""The pack's nodes: each translates its inputs and calls the engine or the host adapter."""
from .attention_maps import AIT2IAttentionMaps
from .attention_patch import AIT2IAttentionPatch
from .guided_sampler import AIT2IGuidedSampler
from .ksampler import AIT2IKSampler
from .record_maps import AIT2IRecordMapsAfter
from .subject_layout import AIT2ISubjectLayout
from .subject_prompt import AIT2ISubjectPrompt
from .tiny_model_loader import AIT2ITinyModelLoader

NODE_CLASS_MAPPINGS = {
    "AIT2ISubjectPrompt": AIT2ISubjectPrompt,
    "AIT2ISubjectLayout": AIT2ISubjectLayout,
    "AIT2IAttentionPatch": AIT2IAttentionPatch,
    "AIT2IGuidedSampler": AIT2IGuidedSampler,
    "AIT2IKSampler": AIT2IKSampler,
    "AIT2IAttentionMaps": AIT2IAttentionMaps,
    "AIT2IRecordMapsAfter": AIT2IRecordMapsAfter,
    "AIT2ITinyModelLoader": AIT2ITinyModelLoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AIT2ISubjectPrompt": "AI-T2I Subject Prompt",
    "AIT2ISubjectLayout": "AI-T2I Subject Layout",
    "AIT2IAttentionPatch": "AI-T2I Attention Patch",
    "AIT2IGuidedSampler": "AI-T2I Guided Sampler",
    "AIT2IKSampler": "KSampler (AI-T2I)",
    "AIT2IAttentionMaps": "AI-T2I Attention Maps",
    "AIT2IRecordMapsAfter": "AI-T2I Record Maps After Guidance",
    "AIT2ITinyModelLoader": "AI-T2I Tiny Model Loader",
}
