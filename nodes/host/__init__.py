"""Everything that touches ComfyUI internals. A host change is mended here only.

families.py     the model families, decided once: UNet or DiT (joint attention); each family's
                layers, hook slots, work estimate and guidance-pass entries; install_hooks
unet.py         the UNet's structure in one walk: its cross-attention layers, the work before each
dit.py          the same for joint-attention models (SD3/SD3.5, Flux.1): kind, blocks, work
unet_hooks.py   the attn2 hook that records a cross-attention layer, and a UNet pass's entries
dit_hooks.py    the DiT block hook and the recording joint-attention override, and a DiT pass's entries
structure.py    what both walks share: layer keys, the unsupported-model error, the work-share rule
keys.py         the transformer_options keys the pass and the hooks share, and the early-stop signal
guidance_pass.py the guidance forward, one class for every family
guided_run.py   a guided run prepared whole, and the update of one guided step
drivers.py      the base sampler driven in place or step by step through a guided run
step_locator.py the step of a model call, from its sigma
sampling.py     GuidedSampler (the SAMPLER) and KSampler-equivalent sampling with it
run_log.py      a guided sampler's runs, found by the latent each produced
conditioning.py the conditioning keys and the positive entry a guided run reads
gradients.py    weights loaded under inference mode made usable by autograd
tokens.py       word -> token column resolution with the host's tokenizers
tiny_model.py   the embedded model, built from the host's own classes
errors.py       GuidanceError, the problem a user can fix
"""
