"""The embedded tiny text-to-image model: a Stable-Diffusion-1-shaped checkpoint.

Why it exists: attention guidance needs a real cross-attention UNet to act on, and the
test suite and benchmarks need one that fits in the repository and samples in seconds on
a CPU. This module builds that model only from ComfyUI's own classes, so the host treats
it exactly like an SD1 checkpoint: the MODEL is a ``comfy.model_base.BaseModel`` wrapping
``openaimodel.UNetModel`` (eps prediction, SD's discrete linear-beta schedule), the CLIP is
a ``comfy.sd.CLIP`` around an ``SDClipModel`` fed by the SD1 CLIP tokenizer the host ships,
and the VAE is a ``comfy.sd.VAE`` that recognises a TAESD state dict. KSampler,
SamplerCustom, CLIPTextEncode, VAEEncode/VAEDecode and every sampler and scheduler of the
host therefore apply unchanged.

Everything architectural is in :class:`TinyModelConfig`; the training script
(``tools/train_tiny_model.py``) imports this module for the same builders and for
:func:`save_tiny_model`, so the file layout is defined in exactly one place.

File layout (one ``.safetensors``, fp16 tensors, SD1 checkpoint key names)::

    model.diffusion_model.*                      UNetModel
    cond_stage_model.transformer.text_model.*    CLIP text transformer (+ text_projection)
    first_stage_model.taesd_encoder.* / .taesd_decoder.* / .vae_scale / .vae_shift   TAESD

and the safetensors metadata key ``ai_t2i_tiny_config`` holding the JSON of
:class:`TinyModelConfig` (architecture plus the latent statistics measured after the
autoencoder was trained). Only ``comfy.*`` is imported, with absolute imports, so the
module loads both inside the node pack and from a plain script.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.taesd.taesd
import comfy.utils
from comfy.ldm.flux.model import Flux
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

log = logging.getLogger("ai_t2i")

METADATA_KEY = "ai_t2i_tiny_config"
ARCHITECTURES = ("unet", "flux")
FORMAT_NAME = "ai_t2i_tiny_sd"
FORMAT_VERSION = 1
UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "cond_stage_model."  # the text transformer's own keys follow: transformer.text_model.*
VAE_PREFIX = "first_stage_model."
# Name under which the pack ships the trained weights (in <repo>/models/).
DEFAULT_MODEL_FILENAME = "ai_t2i_tiny_shapes.safetensors"
# Byte budget of the committed file.
MAX_FILE_BYTES = 25 * 1000 * 1000


def default_model_path() -> str:
    """``<repo>/models/ai_t2i_tiny_shapes.safetensors``, derived from this file's place."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, "models", DEFAULT_MODEL_FILENAME)


@dataclass
class TinyModelConfig:
    """Every architectural constant of the tiny model, shared by loader and trainer.

    Sizes and why:

    * 128x128 RGB images through a TAESD-shaped autoencoder (fixed 64-channel
      architecture, 8x down-sampling, 4 latent channels) give 16x16x4 latents: the
      same latent geometry as SD1, only smaller. TAESD is used because
      ``comfy.sd.VAE`` recognises its state dict by key name, needs no config, and
      is a plain deterministic autoencoder (no KL term to tune).
    * UNet: ``model_channels`` 64 with ``channel_mult`` (1, 2) has two resolutions,
      16x16 (64 channels) and 8x8 (128 channels). A SpatialTransformer with
      cross-attention follows *every* res block of both levels (input, middle and
      output), so cross-attention maps exist at two resolutions as in SD, not only
      in the middle block. ``num_head_channels`` 32 gives 2 heads at 16x16 and 4 at
      8x8. ``num_res_blocks`` 1 keeps the UNet near 4 M parameters, which is what a
      one-hour CPU training run can fit. SD1 choices elsewhere: conv (not linear)
      ``proj_in``/``proj_out``, GEGLU feed-forward, ``legacy`` False.
    * Text encoder: CLIP text transformer of width 64, 3 layers, 2 heads (head width
      32, as in the UNet), MLP 256, quick-GELU, 77 positions, on the real CLIP BPE
      vocabulary (49408 tokens). The vocabulary embedding (49408 x 64 = 3.2 M
      parameters) is most of the text encoder and bounds the width under the 25 MB
      file budget. Its output is the final-layer-normed last layer, exactly SD1's
      ``layer="last"`` (which equals CLIPSetLastLayer -1).
    * Diffusion: eps prediction, 1000 discrete steps, linear betas 0.00085..0.012 in
      sqrt space: SD1's schedule, so the host's ``ModelSamplingDiscrete`` applies.

    Latent statistics (filled in by the trainer after the autoencoder stage):
    ``latent_scale_factor`` is the host's ``LatentFormat.scale_factor`` (1 / std of the
    centred VAE-space latents), so the UNet sees ~unit-variance latents;
    ``latent_rgb_factors`` / ``_bias`` are a least-squares linear map from model-space
    latents to RGB in [-1, 1], used by the host's Latent2RGB previews.
    """

    image_size: int = 128
    latent_channels: int = 4
    vae_downscale: int = 8

    model_channels: int = 64
    channel_mult: tuple = (1, 2)
    num_res_blocks: int = 1
    transformer_depth: int = 1
    num_head_channels: int = 32

    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 2
    text_mlp: int = 256
    text_activation: str = "quick_gelu"
    max_tokens: int = 77
    vocab_size: int = 49408

    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000

    # True: the text encoder's output is zero at the end token and the padding, so the
    # only content the UNet can read is in the word columns; the start token (which a
    # causal encoder computes from itself alone) and the zeroed columns are content-free
    # sinks, like Stable Diffusion's start token. False (files before this field): the
    # end token and padding carry a summary of the whole caption, and a UNet trained on
    # them can ignore the words, which leaves nothing word-grounded for guidance to read.
    content_free_end: bool = False

    # "unet": the SD1-shaped model above. "flux": a Flux.1-shaped one, the host's own Flux
    # class (double-stream then single-stream blocks, RoPE on a 1x1 patch grid, flow matching
    # through the host's ModelSamplingFlux) on the same text encoder and autoencoder; the
    # unet fields are then unused and the flux fields below describe it.
    architecture: str = "unet"
    # Flux-shaped sizes and why: width 128 in 4 heads of 32 (the UNet toy's head width);
    # RoPE axes (4, 14, 14) split the head as Flux.1's (16, 56, 56) split its 128; patch 1
    # on the 16x16 latent gives 256 image tokens, so maps are 16x16 as the UNet toy's.
    # 4 double-stream and 6 single-stream blocks keep Flux.1's order (double first) at a
    # size a 2-core CPU trains in about an hour.
    flux_hidden: int = 128
    flux_heads: int = 4
    flux_double: int = 4
    flux_single: int = 6
    flux_mlp_ratio: float = 4.0
    flux_axes_dim: tuple = (4, 14, 14)
    flux_theta: int = 10000
    # ModelSamplingFlux's mu: Flux.1's resolution-dependent shift is 0.5 at 256 image tokens
    # (base_shift), the token count of this model's 16x16 latent.
    flux_shift: float = 0.5

    latent_scale_factor: float = 1.0
    latent_rgb_factors: Optional[list] = None
    latent_rgb_factors_bias: Optional[list] = None
    # Free-form provenance (training steps, data, ...): never read by the loader.
    notes: dict = field(default_factory=dict)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_downscale

    def unet_config(self, dtype=None) -> dict:
        """Keyword arguments for ``openaimodel.UNetModel`` (SD1-style keys)."""
        levels = len(self.channel_mult)
        return {
            "image_size": self.latent_size,
            "in_channels": self.latent_channels,
            "out_channels": self.latent_channels,
            "model_channels": self.model_channels,
            "num_res_blocks": [self.num_res_blocks] * levels,
            "channel_mult": list(self.channel_mult),
            "transformer_depth": [self.transformer_depth] * (self.num_res_blocks * levels),
            "transformer_depth_output": [self.transformer_depth] * ((self.num_res_blocks + 1) * levels),
            "transformer_depth_middle": self.transformer_depth,
            "num_heads": -1,
            "num_head_channels": self.num_head_channels,
            "context_dim": self.text_width,
            "use_spatial_transformer": True,
            "use_linear_in_transformer": False,
            "legacy": False,
            "adm_in_channels": None,
            "use_checkpoint": False,
            "use_temporal_attention": False,
            "use_temporal_resblock": False,
            "dtype": dtype,
        }

    def flux_config(self, dtype=None) -> dict:
        """Keyword arguments for the host's ``comfy.ldm.flux.model.Flux`` (FluxParams' fields).

        No guidance embedding (the toy is not guidance-distilled: it samples with CFG, as
        SD3 does). ``vec_in_dim`` is the text width, and the pooled vector the text encoder
        hands it is zero (:class:`TinyClipModel` with ``content_free_pooled``): the caption
        reaches the image only through its token columns, which the maps read.
        """
        return {
            "image_model": "flux",
            "in_channels": self.latent_channels,
            "out_channels": self.latent_channels,
            "vec_in_dim": self.text_width,
            "context_in_dim": self.text_width,
            "hidden_size": self.flux_hidden,
            "mlp_ratio": self.flux_mlp_ratio,
            "num_heads": self.flux_heads,
            "depth": self.flux_double,
            "depth_single_blocks": self.flux_single,
            "axes_dim": list(self.flux_axes_dim),
            "theta": self.flux_theta,
            "patch_size": 1,
            "qkv_bias": True,
            "guidance_embed": False,
            "dtype": dtype,
        }

    def diffusion_config(self, dtype=None) -> dict:
        """The diffusion model's keyword arguments, for this file's architecture."""
        return self.flux_config(dtype) if self.architecture == "flux" else self.unet_config(dtype)

    def text_config(self) -> dict:
        """The ``textmodel_json_config`` dict for ``comfy.sd1_clip.SDClipModel``."""
        return {
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "hidden_size": self.text_width,
            "intermediate_size": self.text_mlp,
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": self.text_heads,
            "hidden_act": self.text_activation,
            "max_position_embeddings": self.max_tokens,
            "vocab_size": self.vocab_size,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
            "layer_norm_eps": 1e-5,
            "projection_dim": self.text_width,
        }

    def sampling_settings(self) -> dict:
        if self.architecture == "flux":
            return {"shift": self.flux_shift}
        return {
            "beta_schedule": "linear",
            "linear_start": self.linear_start,
            "linear_end": self.linear_end,
            "timesteps": self.timesteps,
        }

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["flux_axes_dim"] = list(self.flux_axes_dim)
        d["format"] = FORMAT_NAME
        d["format_version"] = FORMAT_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TinyModelConfig":
        d = json.loads(text)
        if d.pop("format", FORMAT_NAME) != FORMAT_NAME:
            raise ValueError("not an ai_t2i tiny model config")
        version = d.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"tiny model format version {version} is newer than this loader ({FORMAT_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            log.debug("tiny model config: ignoring unknown fields %s", unknown)
        d = {k: v for k, v in d.items() if k in known}
        for name in ("channel_mult", "flux_axes_dim"):
            if name in d:
                d[name] = tuple(d[name])
        if d.get("architecture", "unet") not in ARCHITECTURES:
            raise ValueError(f"tiny model architecture {d['architecture']!r} is not one of {ARCHITECTURES}")
        return cls(**d)


# ---------------------------------------------------------------------------
# Host-side classes: latent format, model config, clip target
# ---------------------------------------------------------------------------


class TinyLatentFormat(comfy.latent_formats.LatentFormat):
    """4-channel latents; scale factor and preview factors come from the file."""

    latent_channels = 4
    latent_dimensions = 2

    def __init__(self, scale_factor: float = 1.0, rgb_factors=None, rgb_bias=None):
        self.scale_factor = float(scale_factor)
        self.latent_rgb_factors = rgb_factors
        self.latent_rgb_factors_bias = rgb_bias
        self.taesd_decoder_name = None


class TinySDModelConfig(comfy.supported_models_base.BASE):
    """``supported_models_base.BASE`` for the tiny model.

    Not registered in ``comfy.supported_models`` (the host must stay unmodified), so
    the checkpoint is loaded by :func:`load_tiny_model` rather than by detection.
    ``unet_extra_config`` is empty because :meth:`TinyModelConfig.unet_config` already
    sets the head layout (BASE's default would force 64-channel heads).
    """

    unet_config = {}
    unet_extra_config = {}
    latent_format = TinyLatentFormat
    memory_usage_factor = 1.0
    # Listed fp32 first: see load_tiny_model for why fp32 is the default weight dtype.
    supported_inference_dtypes = [torch.float32, torch.float16, torch.bfloat16]
    vae_key_prefix = [VAE_PREFIX]
    text_encoder_key_prefix = [TEXT_PREFIX]

    def __init__(self, tiny: TinyModelConfig):
        self.tiny = tiny
        self.sampling_settings = tiny.sampling_settings()
        super().__init__(tiny.diffusion_config())
        self.latent_format = TinyLatentFormat(tiny.latent_scale_factor, tiny.latent_rgb_factors,
                                              tiny.latent_rgb_factors_bias)

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.EPS

    def clip_target(self, state_dict={}):
        target = comfy.supported_models_base.ClipTarget(TinyTokenizer, TinyClipModel)
        target.params = {"textmodel_json_config": self.tiny.text_config(),
                         "content_free_end": self.tiny.content_free_end,
                         "content_free_pooled": self.tiny.architecture == "flux"}
        return target

    def process_clip_state_dict(self, state_dict):
        return comfy.utils.state_dict_prefix_replace(state_dict, {TEXT_PREFIX: "clip_l."}, filter_keys=True)

    def process_clip_state_dict_for_saving(self, state_dict):
        return comfy.utils.state_dict_prefix_replace(state_dict, {"clip_l.": TEXT_PREFIX})


class TinyFluxModelConfig(TinySDModelConfig):
    """The Flux-shaped tiny model: the host's ``comfy.model_base.Flux`` (so ModelType.FLUX,
    ModelSamplingFlux with the file's shift, Flux's conditioning) around the host's Flux
    class. The host's guidance and patch code sees a Flux.1 model."""

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.FLUX

    def get_model(self, state_dict, prefix="", device=None):
        return comfy.model_base.Flux(self, device=device)


def model_config_for(tiny: TinyModelConfig) -> TinySDModelConfig:
    """The host model config of a tiny model file's architecture."""
    return TinyFluxModelConfig(tiny) if tiny.architecture == "flux" else TinySDModelConfig(tiny)


class TinySDTokenizer(comfy.sd1_clip.SDTokenizer):
    """The SD1 CLIP tokenizer (the host's own vocabulary files), with the tiny width
    as embedding size so textual-inversion embeddings of the wrong width are refused."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        width = int(tokenizer_data.get("ai_t2i_tiny_text_width", TinyModelConfig.text_width))
        super().__init__(embedding_directory=embedding_directory, embedding_size=width, embedding_key="clip_l",
                         tokenizer_data=tokenizer_data)


class TinyTokenizer(comfy.sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, clip_name="l",
                         tokenizer=TinySDTokenizer)


class TinyTextEncoder(comfy.sd1_clip.SDClipModel):
    """``SDClipModel`` with the tiny config; SD1's "last" layer, unprojected pooling.

    ``content_free_end`` (see :class:`TinyModelConfig`) uses the host's own masking:
    with no "end" special token, ``SDClipModel.process_tokens`` masks from the first
    end/pad token (49407) on, and ``zero_out_masked`` zeroes the output there. The
    encoder's self-attention is causal, so the word columns are the same either way.
    """

    def __init__(self, device="cpu", dtype=None, model_options={}, textmodel_json_config=None,
                 content_free_end=False):
        if textmodel_json_config is None:
            textmodel_json_config = TinyModelConfig().text_config()
        masking = {}
        if content_free_end:
            masking = {"special_tokens": {"start": 49406, "pad": 49407}, "zero_out_masked": True}
        super().__init__(device=device, dtype=dtype, model_options=model_options,
                         textmodel_json_config=dict(textmodel_json_config), layer="last",
                         return_projected_pooled=False, **masking)


class TinyClipModel(comfy.sd1_clip.SD1ClipModel):
    """SD1's wrapper (attribute ``clip_l``), so state-dict and LoRA keys are SD1's.

    ``content_free_pooled`` (the Flux-shaped model): the pooled vector is zero, so the
    Flux model's vector input carries no caption (see TinyModelConfig.flux_config)."""

    def __init__(self, device="cpu", dtype=None, model_options={}, textmodel_json_config=None,
                 content_free_end=False, content_free_pooled=False):
        super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name="l",
                         clip_model=TinyTextEncoder, textmodel_json_config=textmodel_json_config,
                         content_free_end=content_free_end)
        self.content_free_pooled = content_free_pooled

    def encode_token_weights(self, token_weight_pairs):
        out = super().encode_token_weights(token_weight_pairs)
        if not self.content_free_pooled:
            return out
        return (out[0], torch.zeros_like(out[1])) + tuple(out[2:])


# ---------------------------------------------------------------------------
# Bare modules (used by the trainer) and the file layout
# ---------------------------------------------------------------------------


def build_unet(cfg: TinyModelConfig, device=None, dtype=torch.float32, operations=None) -> torch.nn.Module:
    """The bare diffusion model of the file's architecture: UNetModel, or the host's Flux
    (weights uninitialised: ComfyUI's ops skip initialisation)."""
    ops = operations if operations is not None else comfy.ops.disable_weight_init
    if cfg.architecture == "flux":
        return Flux(**cfg.flux_config(dtype), device=device, operations=ops)
    return UNetModel(**cfg.unet_config(dtype), device=device, operations=ops)


def build_text_model(cfg: TinyModelConfig, device="cpu", dtype=torch.float32) -> TinyClipModel:
    """The same ``TinyClipModel`` the CLIP object wraps (frozen, as the host builds it)."""
    return TinyClipModel(device=device, dtype=dtype, textmodel_json_config=cfg.text_config(),
                         content_free_end=cfg.content_free_end, content_free_pooled=cfg.architecture == "flux")


def build_tokenizer(cfg: TinyModelConfig) -> TinyTokenizer:
    return TinyTokenizer(tokenizer_data={"ai_t2i_tiny_text_width": cfg.text_width})


def build_taesd(cfg: TinyModelConfig) -> comfy.taesd.taesd.TAESD:
    return comfy.taesd.taesd.TAESD(latent_channels=cfg.latent_channels)


def export_state_dict(unet: torch.nn.Module, text_model: torch.nn.Module, taesd: torch.nn.Module,
                      dtype=torch.float16) -> dict:
    """The checkpoint's state dict from the three modules (see the module docstring).

    ``text_model`` is a :class:`TinyClipModel` (keys ``clip_l.transformer.*``);
    its ``logit_scale`` is not stored (SD1 checkpoints do not store it either).
    """
    out = {}
    for k, v in unet.state_dict().items():
        out[UNET_PREFIX + k] = v
    for k, v in text_model.state_dict().items():
        if not k.startswith("clip_l.transformer."):
            continue
        out[TEXT_PREFIX + k[len("clip_l."):]] = v
    for k, v in taesd.state_dict().items():
        out[VAE_PREFIX + k] = v
    return {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in out.items()}


def save_tiny_model(path: str, cfg: TinyModelConfig, unet, text_model, taesd, dtype=torch.float16) -> int:
    """Write the single-file checkpoint; returns its size in bytes."""
    import safetensors.torch

    sd = export_state_dict(unet, text_model, taesd, dtype=dtype)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    safetensors.torch.save_file(sd, path, metadata={METADATA_KEY: cfg.to_json()})
    return os.path.getsize(path)


def _split(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def read_tiny_config(path: str) -> TinyModelConfig:
    import safetensors

    with safetensors.safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} is not an ai_t2i tiny model (no {METADATA_KEY!r} metadata)")
    return TinyModelConfig.from_json(meta[METADATA_KEY])


def load_tiny_model(path: Optional[str] = None, dtype: Optional[torch.dtype] = None, embedding_directory=None):
    """Load the tiny checkpoint as the host's ``(MODEL, CLIP, VAE)``.

    Returns ``(comfy.model_patcher.ModelPatcher, comfy.sd.CLIP, comfy.sd.VAE)``,
    built the way ``comfy.sd.load_state_dict_guess_config`` builds an SD1 checkpoint,
    with :class:`TinySDModelConfig` in place of the detected config.

    The UNet weights default to fp32 (host flags such as ``--fp16-unet`` still win):
    at ~4 M parameters the cost is nil, and fp32 keeps CPU and GPU results close,
    which the attention-guidance tests compare. Pass ``dtype`` to override.
    Works under ``torch.inference_mode()`` (ComfyUI runs nodes in it); nothing here
    needs gradients.
    """
    path = path or default_model_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tiny model file not found: {path}")
    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    if not metadata or METADATA_KEY not in metadata:
        raise ValueError(f"{path} is not an ai_t2i tiny model (no {METADATA_KEY!r} metadata)")
    tiny = TinyModelConfig.from_json(metadata[METADATA_KEY])
    model_config = model_config_for(tiny)

    # --- MODEL
    unet_sd = _split(sd, UNET_PREFIX)
    parameters = comfy.utils.calculate_parameters(unet_sd)
    load_device = comfy.model_management.get_torch_device()
    if dtype is None:
        dtype = comfy.model_management.unet_dtype(model_params=parameters, supported_dtypes=[torch.float32])
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    initial_device = comfy.model_management.unet_inital_load_device(parameters, dtype)
    model = model_config.get_model(sd, UNET_PREFIX, device=initial_device)
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"tiny model UNet keys do not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                               offload_device=comfy.model_management.unet_offload_device())
    if initial_device != torch.device("cpu"):
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)

    # --- VAE (comfy.sd.VAE detects TAESD from the taesd_decoder.* keys)
    vae_sd = _split(sd, VAE_PREFIX)
    if "taesd_decoder.1.weight" not in vae_sd:
        raise ValueError(f"{path}: no TAESD weights under {VAE_PREFIX!r}")
    vae = comfy.sd.VAE(sd=vae_sd)

    # --- CLIP
    clip_sd = model_config.process_clip_state_dict(sd)
    clip = comfy.sd.CLIP(model_config.clip_target(), embedding_directory=embedding_directory,
                         tokenizer_data={"ai_t2i_tiny_text_width": tiny.text_width},
                         parameters=comfy.utils.calculate_parameters(clip_sd))
    missing, unexpected = clip.load_sd(clip_sd, full_model=True)
    missing = [k for k in missing if not k.endswith("logit_scale")]
    if missing or unexpected:
        raise ValueError(f"tiny model text encoder keys do not match: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return patcher, clip, vae
