"""API-format graphs (what ComfyUI's page queues), built in code for the demo, tests and
benchmark. Each node: {"class_type": ..., "inputs": {...}}; links are [node id, output]."""
from __future__ import annotations


def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def model_source(source: dict) -> dict:
    """source: {"checkpoint": name} or {"tiny": filename} -> node "1" giving MODEL, CLIP, VAE;
    {"unet": name}: node "1" is a UNETLoader giving MODEL only (add with_text_encoders and
    with_vae for its CLIP and VAE)."""
    if "checkpoint" in source:
        return {"1": _n("CheckpointLoaderSimple", ckpt_name=source["checkpoint"])}
    if "unet" in source:
        return {"1": _n("UNETLoader", unet_name=source["unet"], weight_dtype="default")}
    return {"1": _n("AIT2ITinyModelLoader", model_name=source["tiny"])}


def custom_sampling_graph(source: dict, prompt: str, subjects: str, attributes: str = "", seed: int = 0,
                          steps: int = 20, cfg: float = 7.5, size: int = 512, batch: int = 1, sampler: str = "euler",
                          method: str = "AI-T2I", strength: float = 1.0, end_percent: float = 0.5,
                          prefix: str = "ai_t2i", negative: str = "", scheduler: str = "normal",
                          latent: str = "EmptyLatentImage") -> dict:
    """Subject prompt -> patch -> guided sampler in SamplerCustomAdvanced -> decode, save, maps.
    latent: the empty-latent node (EmptySD3LatentImage for the 16-channel SD3/Flux latent)."""
    g = model_source(source)
    g.update({
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=prompt, subjects=subjects, attributes=attributes),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=negative),
        "4": _n("AIT2IAttentionPatch", model=["1", 0]),
        "5": _n("KSamplerSelect", sampler_name=sampler),
        "6": _n("AIT2IGuidedSampler", sampler=["5", 0], method=method, strength=strength, start_percent=0.0,
                end_percent=end_percent, scale_factor=20.0, isolation_metric="euclidean", refinement="preset",
                level="auto", layers="auto"),
        "7": _n("BasicScheduler", model=["4", 0], scheduler=scheduler, steps=steps, denoise=1.0),
        "8": _n("RandomNoise", noise_seed=seed),
        "9": _n("CFGGuider", model=["4", 0], positive=["2", 0], negative=["3", 0], cfg=cfg),
        "10": _n(latent, width=size, height=size, batch_size=batch),
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


def _links(graph: dict):
    """(node id, input name, [source id, slot]) of every link in the graph."""
    return [(k, name, v) for k, n in graph.items() for name, v in n["inputs"].items() if isinstance(v, list)]


def _checked(graph: dict) -> dict:
    """The graph, ids in number order, after checking that every link names a node of it."""
    dangling = [f"{graph[k]['class_type']}.{name} <- node {v[0]}" for k, name, v in _links(graph) if v[0] not in graph]
    if dangling:
        raise ValueError(f"links to nodes that are not in the graph: {', '.join(dangling)}")
    return dict(sorted(graph.items(), key=lambda item: int(item[0])))


def _drop_unused(graph: dict, keys) -> None:
    """Remove the nodes among keys whose outputs no node takes any more."""
    used = {v[0] for _, _, v in _links(graph)}
    for key in keys:
        if key in graph and key not in used:
            del graph[key]


def with_text_encoders(graph: dict, names: list, clip_type: str = "sd3") -> dict:
    """The CLIP from separate text-encoder files instead of node "1"'s: TripleCLIPLoader for
    three (SD3/SD3.5: CLIP-L, CLIP-G, T5-XXL), DualCLIPLoader of `clip_type` for two (Flux:
    CLIP-L, T5-XXL). Every node that took node "1"'s CLIP (the subject prompt too) takes it."""
    key = _new_id(graph)
    _rewire(graph, ["1", 1], [key, 0])
    if len(names) == 3:
        graph[key] = _n("TripleCLIPLoader", clip_name1=names[0], clip_name2=names[1], clip_name3=names[2])
    elif len(names) == 2:
        graph[key] = _n("DualCLIPLoader", clip_name1=names[0], clip_name2=names[1], type=clip_type, device="default")
    else:
        raise ValueError(f"with_text_encoders takes 2 (DualCLIPLoader) or 3 (TripleCLIPLoader) file names, got "
                         f"{len(names)}")
    return graph


def with_vae(graph: dict, vae_name: str) -> dict:
    """The VAE from its own file (VAELoader) instead of node "1"'s."""
    key = _new_id(graph)
    _rewire(graph, ["1", 2], [key, 0])
    graph[key] = _n("VAELoader", vae_name=vae_name)
    return graph


def with_model_sampling(graph: dict, class_type: str, **widgets) -> dict:
    """A model-sampling node (ModelSamplingSD3, ModelSamplingFlux) right after the model
    source "1": every node that took its MODEL (the attention patch first) takes the
    node's, so the patch stays last on the MODEL chain."""
    key = _new_id(graph)
    _rewire(graph, ["1", 0], [key, 0])
    graph[key] = _n(class_type, model=["1", 0], **widgets)
    return graph


def with_flux_guidance(graph: dict, guidance: float = 3.5) -> dict:
    """Flux.1 dev's way of sampling: FluxGuidance on the positive (the distilled guidance
    the model reads) and a BasicGuider, which runs the positive only (no CFG), in place of
    every CFGGuider; negative prompts nobody takes any more are removed."""
    guiders = [k for k, n in graph.items() if n["class_type"] == "CFGGuider"]
    if not guiders:
        raise ValueError("with_flux_guidance needs a graph with a CFGGuider (custom_sampling_graph makes one)")
    flux = {}  # positive link -> its FluxGuidance node
    negatives = []
    for k in guiders:
        inputs = graph[k]["inputs"]
        positive = tuple(inputs["positive"])
        if positive not in flux:
            flux[positive] = _new_id(graph)
            graph[flux[positive]] = _n("FluxGuidance", conditioning=list(positive), guidance=guidance)
        negatives.append(inputs["negative"][0])
        graph[k] = _n("BasicGuider", model=inputs["model"], conditioning=[flux[positive], 0])
    _drop_unused(graph, negatives)
    return graph


def with_vanilla_sampler(graph: dict) -> dict:
    """Beside the guided SamplerCustomAdvanced, the same sampling without AI-T2I: the same
    noise, sigmas, latent and conditioning, the base sampler unwrapped and the guider on the
    model before the attention patch. Its image goes first into the guided one's SaveImage
    (an ImageBatch, as comparison_graph does), so the two are side by side from one seed."""
    guided = [k for k, n in graph.items() if n["class_type"] == "SamplerCustomAdvanced"
              and graph[n["inputs"]["sampler"][0]]["class_type"] == "AIT2IGuidedSampler"]
    if len(guided) != 1:
        raise ValueError(f"with_vanilla_sampler needs one SamplerCustomAdvanced with an 'AI-T2I Guided Sampler', "
                         f"found {len(guided)}")
    key = guided[0]
    sampling = graph[key]["inputs"]
    guider = graph[sampling["guider"][0]]
    patch = graph[guider["inputs"]["model"][0]]
    if patch["class_type"] != "AIT2IAttentionPatch":
        raise ValueError(f"the guided sampler's guider takes its model from {patch['class_type']}, not from 'AI-T2I "
                         "Attention Patch'")
    decode = next(k for k, n in graph.items() if n["class_type"] == "VAEDecode" and n["inputs"]["samples"] == [key, 0])
    save = next(k for k, n in graph.items() if n["class_type"] == "SaveImage" and n["inputs"]["images"] == [decode, 0])
    new_guider, new_sampling, new_decode, batch = (str(int(_new_id(graph)) + i) for i in range(4))
    graph[new_guider] = _n(guider["class_type"], **{**guider["inputs"], "model": patch["inputs"]["model"]})
    graph[new_sampling] = _n("SamplerCustomAdvanced", **{**sampling, "guider": [new_guider, 0],
                                                          "sampler": graph[sampling["sampler"][0]]["inputs"]["sampler"]})
    graph[new_decode] = _n("VAEDecode", samples=[new_sampling, 0], vae=graph[decode]["inputs"]["vae"])
    graph[batch] = _n("ImageBatch", image1=[new_decode, 0], image2=[decode, 0])
    graph[save]["inputs"]["images"] = [batch, 0]
    return graph


def sd35_custom_sampling_graph(checkpoint: str, text_encoders: list | None, prompt: str, subjects: str,
                               attributes: str = "", negative: str = "", seed: int = 0, steps: int = 28,
                               cfg: float = 4.5, size: int = 1024, shift: float = 3.0, sampler: str = "euler",
                               scheduler: str = "sgm_uniform", vanilla: bool = True,
                               prefix: str = "ai_t2i_sd35") -> dict:
    """SD3/SD3.5: the checkpoint's MODEL and VAE, the CLIP from text_encoders (CLIP-L, CLIP-G,
    T5-XXL files; None: the checkpoint's own), the 16-channel SD3 latent, ModelSamplingSD3,
    CFG with a negative prompt; with vanilla, the unguided run beside it."""
    g = custom_sampling_graph({"checkpoint": checkpoint}, prompt, subjects, attributes, seed=seed, steps=steps,
                              cfg=cfg, size=size, sampler=sampler, prefix=prefix, negative=negative,
                              scheduler=scheduler, latent="EmptySD3LatentImage")
    if text_encoders:
        with_text_encoders(g, text_encoders)
    with_model_sampling(g, "ModelSamplingSD3", shift=shift)
    return _checked(with_vanilla_sampler(g) if vanilla else g)


def flux_custom_sampling_graph(unet: str, text_encoders: list, vae: str, prompt: str, subjects: str,
                               attributes: str = "", seed: int = 0, steps: int = 20, guidance: float = 3.5,
                               size: int = 1024, max_shift: float = 1.15, base_shift: float = 0.5,
                               sampler: str = "euler", scheduler: str = "simple", vanilla: bool = True,
                               prefix: str = "ai_t2i_flux") -> dict:
    """Flux.1 dev: the diffusion model (UNETLoader), CLIP-L + T5-XXL (DualCLIPLoader, flux),
    the VAE (VAELoader), the 16-channel SD3 latent, ModelSamplingFlux at the image size,
    FluxGuidance on the positive and a BasicGuider; with vanilla, the unguided run beside it."""
    g = custom_sampling_graph({"unet": unet}, prompt, subjects, attributes, seed=seed, steps=steps, cfg=1.0,
                              size=size, sampler=sampler, prefix=prefix, scheduler=scheduler,
                              latent="EmptySD3LatentImage")
    with_text_encoders(g, text_encoders, clip_type="flux")
    with_vae(g, vae)
    with_model_sampling(g, "ModelSamplingFlux", max_shift=max_shift, base_shift=base_shift, width=size, height=size)
    with_flux_guidance(g, guidance)
    left = [f"{g[k]['class_type']}.{name}" for k, name, v in _links(g) if v[0] == "1" and v[1] != 0]
    if left:
        raise ValueError(f"{', '.join(left)} still take a CLIP or VAE from the UNETLoader, which gives only MODEL")
    return _checked(with_vanilla_sampler(g) if vanilla else g)
