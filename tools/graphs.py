"""API-format graphs (what ComfyUI's page queues), built in code for the demo, tests and
benchmark. Each node: {"class_type": ..., "inputs": {...}}; links are [node id, output]."""
from __future__ import annotations


def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def model_source(source: dict) -> dict:
    """source: {"checkpoint": name} or {"tiny": filename} -> node "1" giving MODEL, CLIP, VAE."""
    if "checkpoint" in source:
        return {"1": _n("CheckpointLoaderSimple", ckpt_name=source["checkpoint"])}
    return {"1": _n("AIT2ITinyModelLoader", model_name=source["tiny"])}


def custom_sampling_graph(source: dict, prompt: str, subjects: str, attributes: str = "", seed: int = 0,
                          steps: int = 20, cfg: float = 7.5, size: int = 512, batch: int = 1, sampler: str = "euler",
                          method: str = "AI-T2I", strength: float = 1.0, end_percent: float = 0.5,
                          prefix: str = "ai_t2i") -> dict:
    """Subject prompt -> patch -> guided sampler in SamplerCustomAdvanced -> decode, save, maps."""
    g = model_source(source)
    g.update({
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=prompt, subjects=subjects, attributes=attributes),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=""),
        "4": _n("AIT2IAttentionPatch", model=["1", 0]),
        "5": _n("KSamplerSelect", sampler_name=sampler),
        "6": _n("AIT2IGuidedSampler", sampler=["5", 0], method=method, strength=strength, start_percent=0.0,
                end_percent=end_percent, scale_factor=20.0, isolation_metric="euclidean", refinement="preset",
                level="auto", layers="down+up"),
        "7": _n("BasicScheduler", model=["4", 0], scheduler="normal", steps=steps, denoise=1.0),
        "8": _n("RandomNoise", noise_seed=seed),
        "9": _n("CFGGuider", model=["4", 0], positive=["2", 0], negative=["3", 0], cfg=cfg),
        "10": _n("EmptyLatentImage", width=size, height=size, batch_size=batch),
        "11": _n("SamplerCustomAdvanced", noise=["8", 0], guider=["9", 0], sampler=["6", 0], sigmas=["7", 0],
                 latent_image=["10", 0]),
        "12": _n("VAEDecode", samples=["11", 0], vae=["1", 2]),
        "13": _n("SaveImage", images=["12", 0], filename_prefix=prefix),
        "14": _n("AIT2IAttentionMaps", sampler=["6", 0], samples=["11", 0], steps="first, last", images=["12", 0]),
        "15": _n("SaveImage", images=["14", 0], filename_prefix=prefix + "_maps"),
    })
    return g


def comparison_graph(source: dict, prompt: str, subjects: str, attributes: str = "", seed: int = 0,
                     steps: int = 20, cfg: float = 7.5, size: int = 512, sampler: str = "euler",
                     scheduler: str = "normal", method: str = "AI-T2I", prefix: str = "compare",
                     strength: float = 1.0) -> dict:
    """Vanilla KSampler and KSampler (AI-T2I) from the same seed, side by side."""
    g = model_source(source)
    common = dict(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                  negative=["3", 0], latent_image=["4", 0], denoise=1.0)
    g.update({
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=prompt, subjects=subjects, attributes=attributes),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=""),
        "4": _n("EmptyLatentImage", width=size, height=size, batch_size=1),
        "5": _n("KSampler", model=["1", 0], positive=["2", 0], **common),
        "6": _n("AIT2IKSampler", model=["1", 0], positive=["2", 0], method=method, strength=strength,
                start_percent=0.0, end_percent=0.5, **common),
        "7": _n("VAEDecode", samples=["5", 0], vae=["1", 2]),
        "8": _n("VAEDecode", samples=["6", 0], vae=["1", 2]),
        "9": _n("ImageBatch", image1=["7", 0], image2=["8", 0]),
        "10": _n("SaveImage", images=["9", 0], filename_prefix=prefix),
        "11": _n("SaveImage", images=["6", 1], filename_prefix=prefix + "_maps"),
    })
    return g
