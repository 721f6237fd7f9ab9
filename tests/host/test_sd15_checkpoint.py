"""The random SD1.5 checkpoint the host tests load is SD1.5 in its autoencoder too."""
import torch

import nodes


def test_checkpoint_vae_is_sd15s_and_decodes_8x(sd15):
    """CheckpointLoaderSimple reads the written file; its VAE is the SD1.x layout (4 levels,
    8x, 4 latent channels), so a (1, 4, 12, 8) latent decodes to a (1, 96, 64, 3) image.
    (The SD x4 upscaler's autoencoder, which the host detects from a 3-level file, gives 48 x 32.)"""
    _, _, vae = sd15
    assert vae.latent_channels == 4 and vae.downscale_ratio == 8 and vae.upscale_ratio == 8
    decoder = vae.first_stage_model.decoder
    assert decoder.num_resolutions == 4 and decoder.num_res_blocks == 2 and decoder.ch == 128
    assert [block.block[0].conv1.out_channels for block in decoder.up] == [128, 256, 512, 512]
    latent = torch.randn(1, 4, 12, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        image, = nodes.VAEDecode().decode(vae, {"samples": latent})
    assert tuple(image.shape) == (1, 96, 64, 3)
    assert torch.isfinite(image).all()
