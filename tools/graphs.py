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
                level="auto", layers="auto"),
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


def ksampler_graph(source: dict, prompt: str, subjects: str, attributes: str = "", seed: int = 0,
                   steps: int = 20, cfg: float = 7.5, size: int = 512, sampler: str = "euler",
                   scheduler: str = "normal", method: str = "AI-T2I", prefix: str = "ai_t2i",
                   strength: float = 1.0, batch: int = 1) -> dict:
    """The one-node form: subject prompt -> KSampler (AI-T2I) -> decode, save; also saves its maps.
    (Ids 5, 7 and 9 are left for the vanilla branch that comparison_graph adds.)"""
    g = model_source(source)
    g.update({
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=prompt, subjects=subjects, attributes=attributes),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=""),
        "4": _n("EmptyLatentImage", width=size, height=size, batch_size=batch),
        "6": _n("AIT2IKSampler", model=["1", 0], seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                scheduler=scheduler, positive=["2", 0], negative=["3", 0], latent_image=["4", 0], denoise=1.0,
                method=method, strength=strength, start_percent=0.0, end_percent=0.5),
        "8": _n("VAEDecode", samples=["6", 0], vae=["1", 2]),
        "10": _n("SaveImage", images=["8", 0], filename_prefix=prefix),
        "11": _n("SaveImage", images=["6", 1], filename_prefix=prefix + "_maps"),
    })
    return g


def comparison_graph(source: dict, prompt: str, subjects: str, attributes: str = "", seed: int = 0,
                     steps: int = 20, cfg: float = 7.5, size: int = 512, sampler: str = "euler",
                     scheduler: str = "normal", method: str = "AI-T2I", prefix: str = "compare",
                     strength: float = 1.0, batch: int = 1) -> dict:
    """Vanilla KSampler and KSampler (AI-T2I) from the same seed, side by side (vanilla's batch first)."""
    g = ksampler_graph(source, prompt, subjects, attributes, seed=seed, steps=steps, cfg=cfg, size=size,
                       sampler=sampler, scheduler=scheduler, method=method, prefix=prefix, strength=strength,
                       batch=batch)
    guided = g["6"]["inputs"]
    g["5"] = _n("KSampler", **{k: v for k, v in guided.items() if k not in GUIDANCE_WIDGETS})
    g["7"] = _n("VAEDecode", samples=["5", 0], vae=["1", 2])
    g["9"] = _n("ImageBatch", image1=["7", 0], image2=["8", 0])
    g["10"]["inputs"]["images"] = ["9", 0]
    return dict(sorted(g.items(), key=lambda item: int(item[0])))


GUIDANCE_WIDGETS = ("method", "strength", "start_percent", "end_percent")


def _new_id(graph: dict) -> str:
    return str(max(int(k) for k in graph) + 1)


def _rewire(graph: dict, old: list, new: list, where=lambda node: True) -> None:
    """Every input linked to output `old` ([node id, slot]) takes `new` instead (in the nodes
    `where` accepts)."""
    for node in filter(where, graph.values()):
        for name, value in node["inputs"].items():
            if value == old:
                node["inputs"][name] = list(new)


def with_layout(graph: dict, boxes: str, weight: float = 1.0) -> dict:
    """An 'AI-T2I Subject Layout' (typed boxes) after the subject prompt "2", feeding the guided
    samplers (AI-T2I nodes and CFGGuider); a vanilla KSampler keeps the plain prompt."""
    key = _new_id(graph)
    _rewire(graph, ["2", 0], [key, 0], where=lambda n: n["class_type"].startswith("AIT2I") or
            n["class_type"] == "CFGGuider")
    graph[key] = _n("AIT2ISubjectLayout", conditioning=["2", 0], boxes=boxes, weight=weight)
    return graph


def with_lora(graph: dict, lora_name: str, strength: float = 1.0) -> dict:
    """A LoraLoader right after the model source "1": every node that took its MODEL or CLIP (the
    attention patch and the subject prompt included) takes the LoRA-patched ones."""
    key = _new_id(graph)
    _rewire(graph, ["1", 0], [key, 0])
    _rewire(graph, ["1", 1], [key, 1])
    graph[key] = _n("LoraLoader", model=["1", 0], clip=["1", 1], lora_name=lora_name, strength_model=strength,
                    strength_clip=strength)
    return graph


def with_controlnet(graph: dict, controlnet_name: str, image: str, strength: float = 1.0) -> dict:
    """ControlNetApplyAdvanced on the samplers' conditioning (the subject prompt stays the positive),
    with the control image from LoadImage."""
    pairs = {(tuple(n["inputs"]["positive"]), tuple(n["inputs"]["negative"])) for n in graph.values()
             if isinstance(n["inputs"].get("positive"), list) and isinstance(n["inputs"].get("negative"), list)}
    if len(pairs) != 1:
        raise ValueError(f"with_controlnet needs one positive/negative pair in the graph, found {len(pairs)}")
    (positive, negative), = pairs
    loader, load_image, apply = (str(int(_new_id(graph)) + i) for i in range(3))
    _rewire(graph, list(positive), [apply, 0])
    _rewire(graph, list(negative), [apply, 1])
    graph[loader] = _n("ControlNetLoader", control_net_name=controlnet_name)
    graph[load_image] = _n("LoadImage", image=image)
    graph[apply] = _n("ControlNetApplyAdvanced", positive=list(positive), negative=list(negative),
                      control_net=[loader, 0], image=[load_image, 0], strength=strength, start_percent=0.0,
                      end_percent=1.0)
    return graph
