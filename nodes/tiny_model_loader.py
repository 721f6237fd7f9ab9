"""AI-T2I Tiny Model Loader: the embedded shapes model, as MODEL, CLIP and VAE."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from .host.tiny_model import default_model_path, load_tiny_model

MODELS_DIR = os.path.dirname(default_model_path())


def _choices() -> list[str]:
    names = sorted(f for f in os.listdir(MODELS_DIR) if f.endswith(".safetensors")) if os.path.isdir(MODELS_DIR) else []
    return names or [os.path.basename(default_model_path())]


class AIT2ITinyModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2ITinyModelLoader",
            display_name="AI-T2I Tiny Model Loader",
            category="loaders/AI-T2I",
            description=("Loads a tiny text-to-image model that ships with the pack (trained on synthetic coloured "
                         "shapes, 128x128 images). It runs anywhere in seconds, so AI-T2I can be tried and measured "
                         "without a large checkpoint. Prompts like 'a red circle and a blue square'."),
            inputs=[io.Combo.Input("model_name", options=_choices(),
                                   tooltip="A tiny model file from the pack's models/ folder: ai_t2i_tiny_shapes is "
                                           "shaped like Stable Diffusion 1.5 (a UNet); a file whose name has 'flux' "
                                           "is shaped like Flux.1 (joint-attention blocks, flow matching).")],
            outputs=[io.Model.Output(tooltip="The tiny diffusion model (UNet or Flux-shaped, as the file says)."),
                     io.Clip.Output(tooltip="Its text encoder (CLIP tokenizer)."),
                     io.Vae.Output(tooltip="Its autoencoder (TAESD-shaped).")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        path = os.path.join(MODELS_DIR, os.path.basename(model_name))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{model_name} is not in the pack's models/ folder ({MODELS_DIR}); "
                                    "reinstall the pack or train one with tools/train_tiny_model.py")
        return io.NodeOutput(*load_tiny_model(path, embedding_directory=folder_paths.get_folder_paths("embeddings")))
