"""A fixed set of guided runs whose results are kept as a fixture, so that a rework of the
pack's structure can be proven to change nothing, bit for bit.

Every method, the in-place and the step-by-step sampler drivers, a layout, maps after the
update, batch 2, the one-node KSampler, SD1.5- and SDXL-shaped UNets and SD3-, SD3.5- and
Flux-shaped DiTs (random weights, tiny widths, the hosts' own classes). Each run gives its
output latent and its run record (maps before and after each guided step, per-step losses,
the run log). The runs reach the pack through its nodes only, so they survive a rework of
everything behind them.

    python tests/host/equivalence.py --write     # record the fixture (before a rework)
    pytest tests/host/test_equivalence.py        # compare every run with it
"""
from __future__ import annotations

import pathlib
import platform
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "equivalence_runs.pt"

# name -> (model, prompt, options); model names the builder below.
UNET_PROMPT = ("a red cat and a blue dog", "cat, dog", "red:cat, blue:dog")
DIT_SUBJECTS = ((2,), (5, 6))  # context columns of the DiT runs' two subjects (the second spans two)
DIT_TOKENS = 12
RUNS: dict[str, dict] = {
    "sd15_ai_t2i_euler": dict(model="sd15"),
    "sd15_aggregation_only": dict(model="sd15", method="AI-T2I aggregation only"),
    "sd15_isolation_only": dict(model="sd15", method="AI-T2I isolation only", isolation_metric="cosine"),
    "sd15_attend_and_excite": dict(model="sd15", method="Attend-and-Excite"),
    "sd15_divide_and_bind": dict(model="sd15", method="Divide & Bind"),
    "sd15_a_star": dict(model="sd15", method="A-STAR"),
    "sd15_conform": dict(model="sd15", method="CONFORM"),
    "sd15_ai_t2i_refined_down_up": dict(model="sd15", refinement="on", layers="down+up", level="1/2"),
    "sd15_stepwise_dpmpp_sde": dict(model="sd15", base="dpmpp_sde", steps=6),
    "sd15_stepwise_heun": dict(model="sd15", base="heun", start_percent=0.2, end_percent=0.7, steps=6),
    "sd15_layout": dict(model="sd15", boxes="cat: 0.05 0.1 0.45 0.9; dog: 0.55 0.1 0.95 0.9"),
    "sd15_maps_after_batch2_ancestral": dict(model="sd15", base="euler_ancestral", maps_after=True, batch=2),
    "sd15_ksampler_node": dict(model="sd15", ksampler=True, base="dpmpp_2m", strength=0.5),
    "sdxl_ai_t2i_euler": dict(model="sdxl", size=32),
    "sdxl_attend_and_excite_down": dict(model="sdxl", method="Attend-and-Excite", layers="down", size=32),
    "sd3_ai_t2i_euler": dict(model="sd3", size=32),
    "sd35m_attend_and_excite": dict(model="sd35m", method="Attend-and-Excite", size=32),
    "flux_ai_t2i_joint_single": dict(model="flux", layers="joint+single", size=32),
    "flux_ai_t2i_dpmpp_2m_batch2": dict(model="flux", base="dpmpp_2m", batch=2, size=32, maps_after=True),
}


def _models(pack):
    """name -> (MODEL, positive, negative, latent channels), built once."""
    from tools import random_models as builders
    engine = __import__(pack.__name__ + ".ai_t2i_attention", fromlist=["x"])
    conditioning = __import__(pack.__name__ + ".nodes.host.conditioning", fromlist=["x"])
    out = {}
    for name, (model, clip) in (("sd15", (builders.sd15_model(width=64), builders.sd1_clip())),
                                ("sdxl", (builders.sdxl_model(width=64), builders.sdxl_clip()))):
        with torch.inference_mode():
            pos = pack.nodes.AIT2ISubjectPrompt.execute(clip=clip, text=UNET_PROMPT[0], subjects=UNET_PROMPT[1],
                                                        attributes=UNET_PROMPT[2]).result[0]
            neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        out[name] = (model, pos, neg, 4)
    dits = {"sd3": (lambda: builders.sd3_model(depth=2, blocks=3), 2048),
            "sd35m": (lambda: builders.sd3_model(depth=2, blocks=3, qk_norm="rms", x_block_self_attn_layers=(0, 1)), 2048),
            "flux": (lambda: builders.flux_model(width=64, heads=2, double=2, single=2), 768)}
    for name, (build, pooled) in dits.items():
        g = torch.Generator().manual_seed(0)
        groups = engine.TokenGroups(DIT_SUBJECTS, (), tuple(range(DIT_TOKENS)))
        spec = engine.ResolvedSubjects("a cat and a teddy bear", ("cat", "teddy bear"), (), groups)
        pos = [[torch.randn(1, DIT_TOKENS, 4096, generator=g),
                {"pooled_output": torch.randn(1, pooled, generator=g), conditioning.SUBJECTS_KEY: spec}]]
        neg = [[torch.randn(1, DIT_TOKENS, 4096, generator=g) * 0.1, {"pooled_output": torch.zeros(1, pooled)}]]
        out[name] = (build(), pos, neg, 16)
    return out


def _record(sampler, samples):
    """The run record of the guided sampler's run that produced `samples` (recorded at 8f45cd5
    through the sampler's former `last_run`)."""
    return sampler.runs.run_for(samples)


def _record_tensors(record, prefix: str) -> dict[str, object]:
    out = {f"{prefix}log": record.log_text()}
    for step, maps in record.maps.items():
        out[f"{prefix}maps/{step}"] = maps
    for step, maps in record.maps_after.items():
        out[f"{prefix}maps_after/{step}"] = maps
    for i, r in enumerate(record.reports):
        out[f"{prefix}report/{i}"] = (r.step, r.step_size, r.iterations, dict(r.losses), r.final_total, list(r.skipped))
    return out


def run_one(pack, models, name: str) -> dict[str, object]:
    """Run RUNS[name]; returns its output latent and run record as a flat dict."""
    import comfy.sample
    import comfy.samplers
    spec = dict(RUNS[name])
    model, pos, neg, channels = models[spec.pop("model")]
    size, steps, batch = spec.pop("size", 16), spec.pop("steps", 4), spec.pop("batch", 1)
    base, boxes = spec.pop("base", "euler"), spec.pop("boxes", None)
    maps_after, ksampler = spec.pop("maps_after", False), spec.pop("ksampler", False)
    widgets = dict(method="AI-T2I", strength=1.0, start_percent=0.0, end_percent=0.5, scale_factor=20.0,
                   isolation_metric="euclidean", refinement="preset", level="auto", layers="auto")
    widgets.update(spec)
    cfg = 5.0 if channels == 4 else 3.0
    with torch.inference_mode():
        patched = pack.nodes.AIT2IAttentionPatch.execute(model=model).result[0]
        if boxes is not None:
            pos = pack.nodes.AIT2ISubjectLayout.execute(conditioning=pos, boxes=boxes, weight=1.0).result[0]
    latent = torch.zeros(batch, channels, size, size)
    if ksampler:
        keep = ("method", "strength", "start_percent", "end_percent", "layers")
        with torch.inference_mode():
            out = pack.nodes.AIT2IKSampler.execute(
                model=patched, seed=7, steps=steps, cfg=cfg, sampler_name=base, scheduler="normal", positive=pos,
                negative=neg, latent_image={"samples": latent}, denoise=1.0, **{k: widgets[k] for k in keep})
        return {"latent": out.result[0]["samples"], "log": out.result[2]}
    sampler = pack.nodes.AIT2IGuidedSampler.execute(sampler=comfy.samplers.sampler_object(base), **widgets).result[0]
    if maps_after:
        sampler = pack.nodes.AIT2IRecordMapsAfter.execute(sampler=sampler).result[0]
    scheduler = "normal" if channels == 4 else "simple"
    sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), scheduler, steps)
    noise = comfy.sample.prepare_noise(latent, 7)
    with torch.inference_mode():
        samples = comfy.sample.sample_custom(patched, noise, cfg, sampler, sigmas, pos, neg, latent, seed=7,
                                             disable_pbar=True)
    return {"latent": samples, **_record_tensors(_record(sampler, samples), "")}


def environment() -> dict[str, str]:
    """What bit-for-bit equality depends on besides the pack's code: the torch build, the CPU's
    kernels and the host's version (its model code: Flux's layers were rewritten between 0.3.64
    and 0.3.75, which rounds the same sums differently)."""
    import comfyui_version
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "comfyui": comfyui_version.__version__}


THREADS = 2  # CPU reductions may split differently with another thread count


def run_all(pack, only=None) -> dict[str, dict[str, object]]:
    """Every run of RUNS (or those named in `only`), on models built once (seeded: the same every time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        models = _models(pack)
        return {name: run_one(pack, models, name) for name in (only or RUNS)}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.path.append(str(HERE.parents[1]))
    from comfy_host import import_pack
    pack = import_pack()
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/host/equivalence.py --write")
    results = run_all(pack)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"environment": environment(), "runs": results}, FIXTURE)
    print(f"wrote {len(results)} runs to {FIXTURE.name}; environment {environment()}")
