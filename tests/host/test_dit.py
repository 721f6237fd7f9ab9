"""A joint-attention model's (DiT's) structure (nodes/host/dit.py) on tiny random-weight host
models (SD3/SD3.5 MMDiT, Flux.1) and on full-size ones on the meta device: the kinds refused by
name, the layer choice's errors, the work estimate against torch's FLOP counter, and the
blocks "auto" reads.

Plumbing only: random weights say nothing of how well guidance works on real SD3/Flux."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ai_t2i_pack.ai_t2i_attention.layers import AUTO_WORK_BUDGET, choose_layers, describe_layers
from ai_t2i_pack.nodes.host import dit, structure
from dit_models import T, conds, sample
from runner import guided_sampler, patch


def test_unsupported_joint_attention_model_is_refused_by_name(pack):
    import comfy.supported_models
    from tools import random_models as builders
    if not hasattr(comfy.supported_models, "Flux2"):
        pytest.skip("this ComfyUI has no Flux.2 model class (it came after 0.3.64): there is nothing to refuse")
    config = dict(image_model="flux2", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=64,
                  hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8] * 4,
                  theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, global_modulation=True,
                  mlp_silu_act=True, ops_bias=False, dtype=torch.float32)
    flux2 = builders._patcher(comfy.supported_models.Flux2, config, 0)
    with pytest.raises(ValueError, match=r"supports .*SD3/SD3.5 \(MMDiT\) and Flux.1.*this model is a Flux2 \(Flux\).*"
                                         r"Use an SD1.x/SD2.x/SDXL, SD3/SD3.5 or Flux.1 checkpoint"):
        patch(pack, flux2)


def test_dit_layer_choice_errors_name_the_fix(pack, dit_model):
    name, model, pooled = dit_model
    pos, neg = conds(pooled)
    with pytest.raises(Exception, match=r"no down\+up blocks; choose layers 'auto' or 'joint'"):
        sample(patch(pack, model), guided_sampler(pack, layers="down+up"), pos, neg)
    with pytest.raises(Exception, match="level 1/1 cannot be made by pooling it"):
        sample(patch(pack, model), guided_sampler(pack, level="1/1"), pos, neg)


class _Stop(Exception):
    pass


def _counted_share(model, slot, latent, pooled):
    """FLOPs of the host's forward stopped after block `slot` (by a block patch of this test)
    over a whole forward."""
    dm = model.model.diffusion_model
    x, t = torch.randn(1, 16, latent, latent), torch.tensor([0.5])
    kwargs = {"context": torch.randn(1, T, 4096), "y": torch.randn(1, pooled)}
    if pooled == 768:
        kwargs["guidance"] = torch.tensor([3.5])

    def stop_after(args, extra):
        extra["original_block"](args)
        raise _Stop()

    flops = []
    for stop in (True, False):
        m = model.clone()
        if stop:
            m.set_model_patch_replace(stop_after, "dit", *slot)
        to = m.model_options.get("transformer_options", {})
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            try:
                dm(x, t, transformer_options=dict(to), **kwargs)
            except _Stop:
                pass
        flops.append(counter.get_total_flops())
    return flops[0] / flops[1]


@pytest.mark.parametrize("latent", [32, 16])
def test_work_estimate_matches_counted_flops(dit_model, latent):
    name, model, pooled = dit_model
    items = dit.dit_work(model.model, (latent, latent), T)
    keys = [k for k, _ in items if k is not None]
    for key in (keys[0], keys[1], keys[-1]):
        estimate = structure.work_until(items, [key])
        measured = _counted_share(model, ({"double": "double_block", "single": "single_block"}[key[0]], key[1]), latent,
                                  pooled)
        assert abs(estimate - measured) < 0.03, (name, key, estimate, measured)
        assert 0.0 < estimate < 1.0


def test_auto_reads_joint_blocks_within_budget_on_full_size_models():
    """On the real SD3.5 Large and Flux.1 sizes (meta device: shapes only), auto reads Flux's
    19 double blocks (about a third of its forward), and SD3.5's first joint blocks up to the
    budget (its joint blocks are the whole network)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

    import comfy.model_base
    # The host's model classes around full-size diffusion models, without the rest of BaseModel's state
    # (the walk reads the diffusion model only).
    flux = object.__new__(comfy.model_base.Flux)
    torch.nn.Module.__init__(flux)
    flux.diffusion_model = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                                mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, device="meta",
                                operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16)
    sd35 = object.__new__(comfy.model_base.SD3)
    torch.nn.Module.__init__(sd35)
    sd35.diffusion_model = OpenAISignatureMMDITWrapper(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=38, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}},
        num_patches=36864, pos_embed_max_size=192, qk_norm="rms", device="meta",
        operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16)
    results = {}
    for name, model, tokens in (("flux", flux, 256), ("sd35", sd35, 154)):
        layers = dit.dit_layers(model)
        items = dit.dit_work(model, (128, 128), tokens)
        share = lambda ls: structure.work_until(items, [l.key for l in ls])  # noqa: E731
        chosen = choose_layers(layers, (128, 128), "auto", "auto", share)
        results[name] = (describe_layers(chosen), share(chosen), {l.factor for l in chosen})
    assert results["flux"][0] == "double " + ", ".join(map(str, range(19))) + " (19 layers)"
    assert 0.25 < results["flux"][1] < 0.45 and results["flux"][2] == {8}  # 1024 px: 64x64 grid pooled to 16x16
    assert results["sd35"][0].startswith("double 0, 1, ") and 0.6 < results["sd35"][1] <= AUTO_WORK_BUDGET
