"""The pack's nodes (ComfyUI's V3 schema): each translates its inputs and calls the engine or
the host adapter. The host registers them from :func:`comfy_entrypoint`, by their node ids,
which are those of the pack's earlier V1 classes, so saved workflows load unchanged."""
from comfy_api.latest import ComfyExtension, io

from .attention_maps import AIT2IAttentionMaps
from .attention_patch import AIT2IAttentionPatch
from .guided_sampler import AIT2IGuidedSampler
from .ksampler import AIT2IKSampler
from .record_maps import AIT2IRecordMapsAfter
from .subject_layout import AIT2ISubjectLayout
from .subject_prompt import AIT2ISubjectPrompt
from .tiny_model_loader import AIT2ITinyModelLoader

# In the order the node reference lists them.
NODES: list[type[io.ComfyNode]] = [
    AIT2ISubjectPrompt,
    AIT2ISubjectLayout,
    AIT2IAttentionPatch,
    AIT2IGuidedSampler,
    AIT2IKSampler,
    AIT2IAttentionMaps,
    AIT2IRecordMapsAfter,
    AIT2ITinyModelLoader,
]


class AIT2IExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> AIT2IExtension:
    return AIT2IExtension()
