"""The UNet's structure (nodes/host/unet.py) on the host's own UNet classes: its
cross-attention layers and their levels, the guidance pass's share of its work against
torch's FLOP counter, and the layer set "auto" chosen from it."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import comfy.ops
import comfy.supported_models
from ai_t2i_pack.ai_t2i_attention import AttentionRecorder
from ai_t2i_pack.ai_t2i_attention.layers import AUTO_WORK_BUDGET, LayerChoiceError, choose_layers, describe_layers
from ai_t2i_pack.nodes.host import structure, unet
from ai_t2i_pack.nodes.host import tiny_model as tiny
from ai_t2i_pack.nodes.host.keys import RECORDER_KEY, StopGuidanceForward
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from runner import patch


def _layers(model):
    return unet.cross_attention_layers(model.model.diffusion_model)


def test_sd15_layers_and_levels(sd15_small):
    model, _ = sd15_small
    layers = _layers(model)
    by_factor = {}
    for l in layers:
        by_factor.setdefault(l.factor, []).append(l.key)
    # SD1.5: 16 cross-attention layers; latent/4 holds input 7, 8 and output 3, 4, 5 (+ nothing else).
    assert len(layers) == 16
    assert by_factor[4] == [("input", 7, 0), ("input", 8, 0), ("output", 3, 0), ("output", 4, 0), ("output", 5, 0)]
    assert by_factor[8] == [("middle", 0, 0)]
    assert len(by_factor[1]) == 5 and len(by_factor[2]) == 5


def test_sdxl_layers_and_levels(sdxl_small):
    model, _ = sdxl_small
    layers = _layers(model)
    counts = {}
    for l in layers:
        counts[(l.key[0], l.factor)] = counts.get((l.key[0], l.factor), 0) + 1
    # SDXL: 2x2 at latent/2 and 2x10 at latent/4 going down, 10 in the middle, 3x10 + 3x2 going up.
    assert counts == {("input", 2): 4, ("input", 4): 20, ("middle", 4): 10, ("output", 4): 30, ("output", 2): 6}


def test_auto_level_picks_16x16(sd15_small):
    layers = tuple(_layers(sd15_small[0]))
    for latent, side in ((64, 16), (32, 16), (16, 16), (96, 24)):
        chosen = choose_layers(layers, (latent, latent), "auto", "down+up")
        assert latent // chosen[0].factor == side


def _measured_share(pack, model, keys, latent: int) -> float:
    """FLOPs of a forward stopped after `keys` (as the guidance pass stops) over a whole forward,
    counted by torch's FLOP counter on the real model."""
    patched = patch(pack, model)
    dm = patched.model.diffusion_model
    x = torch.randn(1, 4, latent, latent)
    t = torch.tensor([500.0])
    text_width = next(m.attn2.to_k.in_features for m in dm.modules() if hasattr(m, "attn2"))
    ctx = torch.randn(1, 77, text_width)
    kwargs = {"y": torch.randn(1, dm.label_emb[0][0].in_features)} if dm.num_classes is not None else {}
    flops = []
    for stop in (True, False):
        to = dict(patched.model_options["transformer_options"])
        to[RECORDER_KEY] = AttentionRecorder(frozenset(keys), stop_early=stop)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            try:
                dm(x, t, context=ctx, transformer_options=to, **kwargs)
            except StopGuidanceForward:
                pass
        flops.append(counter.get_total_flops())
    return flops[0] / flops[1]


@pytest.mark.parametrize("fixture,latent", [("sd15_small", 32), ("sdxl_small", 32), ("sdxl_small", 16)])
def test_estimate_matches_counted_flops(pack, request, fixture, latent):
    """The estimate from weight shapes agrees with torch's FLOP count of the real forward,
    stopped where the guidance pass stops, for every layer set."""
    model, _ = request.getfixturevalue(fixture)
    dm = model.model.diffusion_model
    layers = tuple(unet.cross_attention_layers(dm))
    items = unet.unet_work(dm, (latent, latent))
    for layer_set in ("down+up", "down"):
        chosen = choose_layers(layers, (latent, latent), "auto", layer_set)
        keys = [l.key for l in chosen]
        estimate, measured = structure.work_until(items, keys), _measured_share(pack, model, keys, latent)
        assert abs(estimate - measured) < 0.03, (fixture, layer_set, estimate, measured)
        assert 0.0 < estimate < 1.0
        print(fixture, latent, layer_set, f"estimate {estimate:.3f} counted {measured:.3f}")


def _full_size(config_cls, **overrides):
    """A full-size UNet of the host's class on the meta device: shapes only, no memory."""
    cfg = dict(config_cls.unet_config)
    cfg.update(overrides)
    cfg.pop("dtype", None)
    return UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init, dtype=torch.float32)


SD15 = dict(model_channels=320, in_channels=4, out_channels=4, num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1] * 9 + [0] * 3,
            transformer_depth_middle=1, num_heads=8, num_head_channels=-1, image_size=32,
            use_spatial_transformer=True, legacy=False)


SDXL = dict(model_channels=320, context_dim=2048, adm_in_channels=2816, num_classes="sequential", in_channels=4,
            out_channels=4, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10, num_heads=-1,
            num_head_channels=64, use_linear_in_transformer=True, image_size=32,
            use_spatial_transformer=True, legacy=False)


def _auto(dm, latent):
    items = unet.unet_work(dm, (latent, latent))
    share = lambda layers: structure.work_until(items, [l.key for l in layers])  # noqa: E731
    chosen = choose_layers(tuple(unet.cross_attention_layers(dm)), (latent, latent), "auto", "auto", share)
    reference = choose_layers(tuple(unet.cross_attention_layers(dm)), (latent, latent), "auto", "down+up")
    return describe_layers(chosen), share(chosen), share(reference)


def test_auto_keeps_down_and_up_on_sd15():
    dm = _full_size(comfy.supported_models.SD15, **SD15)
    for latent in (64, 96):  # 512 and 768 px
        chosen, share, reference = _auto(dm, latent)
        assert chosen == "input 7, 8 + output 3, 4, 5 (5 layers)"
        assert share == reference < 0.6  # the stop skips the costly 32x32 and 64x64 up blocks


def test_auto_reads_the_down_blocks_on_sdxl():
    dm = _full_size(comfy.supported_models.SDXL, **SDXL)
    for latent in (64, 128):  # 512 and 1024 px: maps at the deepest level, behind 10-block transformers
        chosen, share, reference = _auto(dm, latent)
        assert chosen == "input 7, 8 (20 layers)"
        assert reference > 0.7 and share < 0.4


def test_auto_reads_the_down_blocks_on_the_embedded_model():
    cfg = tiny.TinyModelConfig().unet_config()
    cfg.pop("dtype", None)
    dm = UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init, dtype=torch.float32)
    chosen, share, reference = _auto(dm, 16)
    assert reference == pytest.approx(1.0, abs=0.02)  # its 16x16 maps are at full resolution, the last up block
    assert chosen.startswith("input ") and "output" not in chosen and share < 0.3


def test_auto_follows_the_work_budget(sd15_small):
    layers = tuple(unet.cross_attention_layers(sd15_small[0].model.diffusion_model))
    over = choose_layers(layers, (64, 64), "auto", "auto", lambda layers: AUTO_WORK_BUDGET + 0.01)
    assert describe_layers(over) == "input 7, 8 (2 layers)"
    within = choose_layers(layers, (64, 64), "auto", "auto", lambda layers: AUTO_WORK_BUDGET)
    assert describe_layers(within) == "input 7, 8 + output 3, 4, 5 (5 layers)"
    with pytest.raises(LayerChoiceError, match=r"unknown layer set 'downs'; choose one of auto, down\+up"):
        choose_layers(layers, (64, 64), "auto", "downs")
