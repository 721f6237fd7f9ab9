"""Everything that touches ComfyUI internals. A host change is mended here only.

conditioning.py   the conditioning keys and the positive entry a guided run reads
unet.py           one walk over the UNet's blocks: its cross-attention layers, the work before each
mmdit.py          the same for joint-attention models (SD3/SD3.5, Flux.1): family, blocks, work
attention.py      the attn2 hooks that record attention, and the patch that installs them
joint_attention.py the DiT block hooks and the recording attention override of their guidance pass
guidance_pass.py  the guidance forward, behind GuidancePass: what a model family implements
sampling.py       the sampler driving: GuidedSampler, a run prepared whole, in place or step by step
gradients.py      weights loaded under inference mode made usable by autograd
tokens.py         word -> token column resolution with the host's tokenizers
tiny_model.py     the embedded model, built from the host's own classes
errors.py         GuidanceError, the problem a user can fix
"""
