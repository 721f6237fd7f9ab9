"""Real host models with random weights, built from ComfyUI's own classes.

Weights are created under torch.inference_mode(), as the host's loaders create them
while executing nodes, so the gradient path meets the same inference tensors.
"""
from __future__ import annotations

import torch

import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models

CPU = torch.device("cpu")


def random_init(module: torch.nn.Module, seed: int) -> None:
    """The host builds layers without initialising them (weights come from files):
    give every weight a variance-preserving random value, norms identity (a 1-D `weight`,
    or an RMSNorm's `scale` as Flux names it: zero there would zero every query and key)."""
    gens = {}
    for name, p in module.named_parameters():
        g = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
        if p.dim() > 1:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32).to(p.dtype) / fan_in ** 0.5)
        elif name.endswith("weight") or name.endswith(".scale"):
            p.fill_(1.0)
        else:
            p.zero_()


def _patcher(config_cls, unet_config: dict, seed: int, init: bool = True, device=None):
    """ModelPatcher around a host model class; weights made on `device` (default CPU)."""
    device = torch.device(device) if device is not None else CPU
    torch.manual_seed(seed)
    with torch.inference_mode():
        cfg = config_cls(unet_config)
        model = cfg.get_model({}, device=device)
        model.diffusion_model.to(device=device, dtype=unet_config["dtype"])
        if init:
            random_init(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=CPU)


def sd15_model(width: int = 320, seed: int = 0, init: bool = True, dtype=torch.float32, device=None):
    """SD1.5 topology (levels, blocks, heads, context 768). width 320 is the real size."""
    unet = dict(comfy.supported_models.SD15.unet_config)
    unet.update(model_channels=width, in_channels=4, out_channels=4, num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4],
                transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                transformer_depth_middle=1, num_heads=8, num_head_channels=-1,
                use_spatial_transformer=True, legacy=False, image_size=32, dtype=dtype)
    return _patcher(comfy.supported_models.SD15, unet, seed, init, device)


def sdxl_model(width: int = 64, context: int = 2048, seed: int = 0, dtype=torch.float32, device=None):
    """SDXL topology (3 levels, transformer depth 2 and 10, linear projections, ADM input)."""
    unet = dict(comfy.supported_models.SDXL.unet_config)
    unet.update(model_channels=width, context_dim=context, adm_in_channels=2816, num_classes="sequential", in_channels=4, out_channels=4,
                num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                num_heads=-1, num_head_channels=64, use_spatial_transformer=True,
                legacy=False, image_size=32, use_linear_in_transformer=True, dtype=dtype)
    return _patcher(comfy.supported_models.SDXL, unet, seed, device=device)


def sd3_model(depth: int = 2, blocks: int = 3, grid: int = 16, context: int = 4096, seed: int = 0, qk_norm=None,
              x_block_self_attn_layers=(), dtype=torch.float32, device=None):
    """SD3/SD3.5 topology (comfy.model_base.SD3 around the host's MMDiT) at a tiny width.

    The host fixes the width at 64 * depth and the heads at depth; blocks is the number of
    joint blocks (the last one's text side is pre-only, as in the real models). grid: the
    positional table's side in patches (a latent of up to 2 * grid pixels a side). qk_norm
    "rms" and x_block_self_attn_layers give the SD3.5 (Medium: MMDiT-X) variants. Context:
    the real 4096-wide text features (CLIP-L/G padded, then T5), pooled vector 2048."""
    unet = dict(comfy.supported_models.SD3.unet_config)
    unet.update(in_channels=16, out_channels=16, patch_size=2, depth=depth, num_blocks=blocks, input_size=None,
                adm_in_channels=2048, num_patches=grid * grid, pos_embed_max_size=grid, qk_norm=qk_norm,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": context, "out_features": 64 * depth}},
                x_block_self_attn_layers=list(x_block_self_attn_layers), dtype=dtype)
    patcher = _patcher(comfy.supported_models.SD3, unet, seed, device=device)
    pos_embed = patcher.model.diffusion_model.pos_embed  # a buffer (learnt, loaded from files): random_init skips it
    with torch.inference_mode():
        g = torch.Generator(device=pos_embed.device).manual_seed(seed + 1)
        pos_embed.copy_(torch.randn(pos_embed.shape, generator=g, device=pos_embed.device).to(pos_embed.dtype))
    return patcher


def flux_model(width: int = 64, heads: int = 2, double: int = 2, single: int = 2, context: int = 4096,
               guidance_embed: bool = True, seed: int = 0, dtype=torch.float32, device=None):
    """Flux topology (comfy.model_base.Flux around the host's Flux: double-stream blocks, then
    single-stream blocks, 3-axis RoPE, patch size 2) at a tiny width. guidance_embed: dev
    (True) or schnell (False). Context: the real 4096-wide T5 features, pooled CLIP-L 768."""
    head = width // heads
    axes = [head - 2 * (3 * head // 8), 3 * head // 8, 3 * head // 8]  # time, height, width axes (even sizes)
    config = comfy.supported_models.Flux if guidance_embed else comfy.supported_models.FluxSchnell
    unet = dict(config.unet_config)
    unet.update(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=context, hidden_size=width,
                mlp_ratio=4.0, num_heads=heads, depth=double, depth_single_blocks=single, axes_dim=axes,
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=guidance_embed, dtype=dtype)
    return _patcher(config, unet, seed, device=device)


class _Target:
    def __init__(self, clip, tokenizer, params=None):
        self.clip, self.tokenizer, self.params = clip, tokenizer, params or {}


def sd1_clip(seed: int = 0, embedding_directory=None):
    """SD1.x CLIP-L text encoder (real architecture and tokenizer, random weights)."""
    torch.manual_seed(seed)
    with torch.inference_mode():
        clip = comfy.sd.CLIP(_Target(comfy.sd1_clip.SD1ClipModel, comfy.sd1_clip.SD1Tokenizer),
                             embedding_directory=embedding_directory, model_options={"dtype": torch.float32})
        random_init(clip.cond_stage_model, seed)
    return clip


def sdxl_clip(seed: int = 0):
    """SDXL CLIP-L + CLIP-G (real architectures and tokenizers, random weights)."""
    torch.manual_seed(seed)
    with torch.inference_mode():
        clip = comfy.sd.CLIP(_Target(comfy.sdxl_clip.SDXLClipModel, comfy.sdxl_clip.SDXLTokenizer),
                             model_options={"dtype": torch.float32})
        random_init(clip.cond_stage_model, seed)
    return clip


def vae_random(seed: int = 0):
    """The SD1.x/SD2.x KL autoencoder with random weights: 4 levels (channels 128, 256, 512,
    512; 2 res blocks each), 8x down, 4 latent channels, so a (B, 4, h, w) latent decodes to
    (B, 8h, 8w, 3). The host picks the architecture from the state dict's keys: its default
    SD layout, unless the fourth level's upsampler is missing, which it reads as the SD x4
    upscaler's 3-level, 4x autoencoder. Only the keys it reads are given here."""
    sd = {"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3), "post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
          "encoder.down.2.downsample.conv.weight": torch.zeros(512, 512, 3, 3),
          "decoder.up.3.upsample.conv.weight": torch.zeros(512, 512, 3, 3)}
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=sd)
        random_init(vae.first_stage_model, seed)
    return vae


def write_random_sd15_checkpoint(path) -> None:
    """A full-size SD1.5 checkpoint with random weights, saved by the host's own writer."""
    model = sd15_model(width=320)
    clip = sd1_clip()
    vae = vae_random()
    comfy.sd.save_checkpoint(str(path) + ".tmp", model, clip, vae)
    import os
    os.replace(str(path) + ".tmp", path)


def write_random_attention_lora(path, checkpoint) -> None:
    """A rank-4 LoRA on every cross-attention key/value projection of the SD1.5 UNet."""
    import comfy.lora
    import comfy.utils
    unet = sd15_model(width=320, init=False)
    key_map = comfy.lora.model_lora_keys_unet(unet.model, {})
    shapes = {k: v.shape for k, v in unet.model.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    sd = {}
    for lora_key, model_key in key_map.items():
        if not isinstance(model_key, str) or not lora_key.startswith("lora_unet_"):
            continue
        if ".attn2.to_k." not in model_key and ".attn2.to_v." not in model_key:
            continue
        out_f, in_f = shapes[model_key]
        sd[f"{lora_key}.lora_up.weight"] = torch.randn(out_f, 4, generator=g) * 0.5
        sd[f"{lora_key}.lora_down.weight"] = torch.randn(4, in_f, generator=g) * 0.5
        sd[f"{lora_key}.alpha"] = torch.tensor(4.0)
    assert sd, "no attn2 keys found for the LoRA"
    comfy.utils.save_torch_file(sd, str(path))


def write_random_controlnet(path) -> None:
    """An SD1.5 ControlNet (ldm layout) with random, non-zero weights."""
    import comfy.cldm.cldm
    import comfy.utils
    unet = dict(comfy.supported_models.SD15.unet_config)
    unet.update(model_channels=320, in_channels=4, num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4],
                transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1, num_heads=8,
                num_head_channels=-1, use_spatial_transformer=True, legacy=False, image_size=32)
    for k in ("out_channels", "use_temporal_attention", "adm_in_channels"):
        unet.pop(k, None)
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, **unet)
    with torch.no_grad():
        random_init(net, 3)
    sd = {f"control_model.{k}": v.contiguous() for k, v in net.state_dict().items()}
    comfy.utils.save_torch_file(sd, str(path))


def write_random_lora(path, model, clip=None, rank: int = 4, seed: int = 7, scale: float = 0.5) -> None:
    """A rank-`rank` LoRA for a given (MODEL, CLIP) pair, in the kohya key layout.

    It covers the UNet's cross-attention key/value projections and, with a CLIP, the
    text encoder's self-attention projections, so a trigger word's context changes too.
    Shapes come from the given models, so it fits reduced-width test models as well.
    """
    import comfy.lora
    import comfy.utils
    targets = []  # (lora key, weight shape)
    shapes = {k: v.shape for k, v in model.model.state_dict().items()}
    for lora_key, model_key in comfy.lora.model_lora_keys_unet(model.model, {}).items():
        if (isinstance(model_key, str) and lora_key.startswith("lora_unet_")
                and (".attn2.to_k." in model_key or ".attn2.to_v." in model_key)):
            targets.append((lora_key, shapes[model_key]))
    if clip is not None:
        shapes = {k: v.shape for k, v in clip.cond_stage_model.state_dict().items()}
        for lora_key, model_key in comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}).items():
            if lora_key.startswith("lora_te_") and "_self_attn_" in lora_key:
                targets.append((lora_key, shapes[model_key]))
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for lora_key, (out_f, in_f) in targets:
        sd[f"{lora_key}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * scale / rank ** 0.5
        sd[f"{lora_key}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * scale / in_f ** 0.5
        sd[f"{lora_key}.alpha"] = torch.tensor(float(rank))
    if not sd:
        raise ValueError("the model has no cross-attention projections a LoRA could target")
    comfy.utils.save_torch_file(sd, str(path))


def write_random_flux_dev_file(path, double: int = 1, single: int = 1, seed: int = 0) -> None:
    """A Flux.1 dev diffusion-model file (the Black Forest Labs key layout) with random
    weights, that the host's UNETLoader detects as Flux dev. The detection fixes the width
    (24 heads of 128: hidden size 3072) and the 4096-wide T5 context, so only the number of
    double- and single-stream blocks is small; stored in bf16 (about 0.7 GB per double block
    and 0.3 GB per single block)."""
    import comfy.utils
    model = flux_model(width=3072, heads=24, double=double, single=single, seed=seed)
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    del model
    comfy.utils.save_torch_file(sd, str(path) + ".tmp")
    import os
    os.replace(str(path) + ".tmp", path)
