"""The model families (nodes/host/families.py), decided once per model: which family a host
model is, and where install_hooks puts the family's hook for each layer (and what it wraps)."""
from ai_t2i_pack.nodes.host import families
from ai_t2i_pack.nodes.host.dit_hooks import JointBlockHook
from ai_t2i_pack.nodes.host.unet_hooks import CrossAttentionHook
from runner import options_snapshot


def _slots(model_patcher, kind: str) -> dict:
    return model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})


def other_pack_patch(*args):  # stands for another pack's replace patch: only its identity is read here
    raise AssertionError("not called in these tests")


def test_unet_hooks_go_in_every_attn2_slot(sd15_small):
    """SD1.5: one CrossAttentionHook per cross-attention layer, in the attn2 slot of its own
    (block, index, transformer) key, on a clone; a block-wide (2-key) patch another pack put
    there first is what the layers of that block wrap."""
    model, _ = sd15_small
    assert isinstance(families.family_of(model.model), families.UNetFamily)
    other = model.clone()
    other.set_model_attn2_replace(other_pack_patch, "output", 3)  # block-wide: covers ("output", 3, 0)
    before = options_snapshot(other.model_options)
    hooked = families.install_hooks(other)
    assert options_snapshot(other.model_options) == before  # the input model is not patched
    layers = families.hooked_layers(hooked.model_options)
    assert len(layers) == 16 and families.hooked_layers(other.model_options) is None
    slots = _slots(hooked, "attn2")
    hooks = {key: slot for key, slot in slots.items() if len(key) == 3}
    assert sorted(hooks) == sorted(layer.key for layer in layers)
    assert all(isinstance(h, CrossAttentionHook) and h.key == key for key, h in hooks.items())
    assert hooks[("output", 3, 0)].wrapped is other_pack_patch
    assert all(h.wrapped is None for key, h in hooks.items() if key != ("output", 3, 0))


def test_dit_hooks_go_in_every_block_slot(dit_model):
    """SD3/SD3.5 and Flux: one JointBlockHook per block, in the `dit` slot the host names it by
    (("double_block", i), Flux also ("single_block", i)), keyed ("double" | "single", i, 0); a
    block patch another pack put there first is wrapped."""
    name, model, _ = dit_model
    family = families.family_of(model.model)
    assert isinstance(family, families.DiTFamily)
    dm = model.model.diffusion_model
    double = len(dm.joint_blocks) if name.startswith("sd3") else len(dm.double_blocks)
    single = 0 if name.startswith("sd3") else len(dm.single_blocks)
    other = model.clone()
    other.set_model_patch_replace(other_pack_patch, "dit", "double_block", 1)
    before = options_snapshot(other.model_options)
    hooked = families.install_hooks(other)
    slots = _slots(hooked, "dit")
    expected = [("double_block", i) for i in range(double)] + [("single_block", i) for i in range(single)]
    assert sorted(slots) == sorted(expected)
    keys = [layer.key for layer in families.hooked_layers(hooked.model_options)]
    assert keys == [("double", i, 0) for i in range(double)] + [("single", i, 0) for i in range(single)]
    for key in keys:
        hook = slots[family.slot(key)]
        assert isinstance(hook, JointBlockHook) and hook.key == key
        assert hook.wrapped is (other_pack_patch if key == ("double", 1, 0) else None)
    assert options_snapshot(other.model_options) == before  # the input model is not patched
