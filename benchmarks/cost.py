"""Cost of AI-T2I guidance next to plain sampling, measured side by side in one run.

For each model: seconds per image and peak memory of plain sampling, AI-T2I (this
pack's path, default settings), and AI-T2I with one of its savings taken away at a time
(each row says which: the reference's down+up layers where the default layer set "auto"
reads only the down blocks; the guidance forward run to the end of the UNet; the host's
own attention kernel in the guidance pass; a guidance pass at every step, as the
reference code does), and the Attend-and-Excite preset. Same model, seed, resolution, sampler and steps for every
row; ratios are to plain sampling of the same run. Targets: time <= 1.35x, memory <= 1.3x.

Joint-attention models (sd3: SD3 Medium, sd35: SD3.5 Large, sd35m: SD3.5 Medium, flux:
Flux.1 dev) are random-weight models of the real topology: full size on a GPU; on the CPU
at a reduced width (2 heads of 64, a few blocks) but the real 1024 px token count (4096
image tokens; 154 text tokens for SD3, 256 for Flux), so that a change to the guidance's
attention work can be judged without a GPU. Their rows add ai_t2i_explicit_map: AI-T2I
with the joint map's explicit path (every score in float32), the cost before the fused
map. No down/up rows for them (they have no such blocks); Flux samples at cfg 1 (one model
pass per step, as Flux dev is used), SD3 at cfg 5.

    python benchmarks/cost.py --models sd15,tiny:128 --size 512 --steps 10      # CPU
    python benchmarks/cost.py --models sd15 --size 512 --steps 50 --dtype fp16    # GPU
    python benchmarks/cost.py --models sdxl --size 1024 --steps 50 --dtype fp16   # GPU
    python benchmarks/cost.py --models flux,sd35 --steps 4                         # CPU, reduced width, 1024 px
    python benchmarks/cost.py --models flux,sd3,sd35 --steps 28 --dtype bf16       # GPU, full size
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import threading
import time
from dataclasses import replace

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.append(str(ROOT / "tests"))


class PeakMemory:
    """Peak device memory (CUDA) or peak process RSS above the start (CPU), in MiB."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            self.running = False
            self.thread.join()
            self.mib = (self.peak - self.base) / 2 ** 20 + self.base / 2 ** 20
        return False


# Joint-attention (DiT) models: builder arguments at full size (GPU) and reduced width (CPU),
# text tokens of the model's context, pooled-vector width, cfg.
DITS = {
    "sd3": dict(full=dict(depth=24, blocks=24, grid=192), reduced=dict(depth=2, blocks=4, grid=64),
                text=154, pooled=2048, cfg=5.0),
    "sd35": dict(full=dict(depth=38, blocks=38, grid=192, qk_norm="rms"),
                 reduced=dict(depth=2, blocks=4, grid=64, qk_norm="rms"), text=154, pooled=2048, cfg=5.0),
    "sd35m": dict(full=dict(depth=24, blocks=24, grid=384, qk_norm="rms", x_block_self_attn_layers=tuple(range(13))),
                  reduced=dict(depth=2, blocks=4, grid=64, qk_norm="rms", x_block_self_attn_layers=(0, 1)),
                  text=154, pooled=2048, cfg=5.0),
    "flux": dict(full=dict(width=3072, heads=24, double=19, single=38), reduced=dict(width=128, heads=2, double=2, single=4),
                 text=256, pooled=768, cfg=1.0),
}
DIT_ONLY = ("ai_t2i_explicit_map",)
UNET_ONLY = ("ai_t2i_down_up", "ai_t2i_down", "ai_t2i_straightforward")


def build(name, device, dtype, full=False):
    """(model, clip) for a UNet model; (model, None) for a DiT (its conditioning is made as
    tensors, dit_conditioning)."""
    from tools import random_models as rm
    if name in DITS:
        args = DITS[name]["full" if full else "reduced"]
        make = rm.flux_model if name == "flux" else rm.sd3_model
        return make(**args, dtype=dtype, device=device), None
    if name == "sd15":
        return rm.sd15_model(width=320, dtype=dtype, device=device), rm.sd1_clip()
    if name == "sdxl":
        return rm.sdxl_model(width=320, dtype=dtype, device=device), rm.sdxl_clip()
    if name == "tiny":
        from comfy_host import import_pack
        pack = import_pack()
        from importlib import import_module
        tiny = import_module(pack.__name__ + ".nodes.host.tiny_model")
        model, clip, _ = tiny.load_tiny_model()
        return model, clip
    raise ValueError(f"unknown model {name!r}: choose from sd15, sdxl, tiny, " + ", ".join(DITS))


def dit_conditioning(pack, name):
    """(positive carrying the subjects 'cat' and 'dog', negative) for DiT `name`, as tensors:
    context (1, text tokens, 4096) and the pooled vector, random (the model's weights are too).
    The subjects' columns are where the real tokenizers put them in "a cat and a dog": SD3's
    CLIP stream (77 columns, start token first) then its T5 stream (77, no start token);
    Flux's T5 stream alone (256)."""
    import torch
    from importlib import import_module
    engine = import_module(pack.__name__ + ".ai_t2i_attention")
    key = import_module(pack.__name__ + ".nodes.host.conditioning").SUBJECTS_KEY
    spec = DITS[name]
    if name == "flux":
        groups = engine.TokenGroups(((1,), (4,)), (), tuple(range(256)))
    else:
        groups = engine.TokenGroups(((2, 77 + 1), (5, 77 + 4)), (), tuple(range(1, 76)) + tuple(range(77, 154)))
    subjects = engine.ResolvedSubjects("a cat and a dog", ("cat", "dog"), (), groups)
    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, spec["text"], 4096, generator=g),
            {"pooled_output": torch.randn(1, spec["pooled"], generator=g), key: subjects}]]
    neg = [[torch.randn(1, spec["text"], 4096, generator=g) * 0.1, {"pooled_output": torch.zeros(1, spec["pooled"])}]]
    return pos, neg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl,tiny:128",
                    help="comma separated; name:size overrides --size for that model (tiny is a 128 px model); "
                         "DiT models (" + ", ".join(DITS) + ") default to 1024 px")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels of the UNet models (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--dit-width", choices=["full", "reduced"],
                    help="DiT models at their real width or at 2 heads of 64 (default: full on a GPU, reduced on the CPU)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--methods", default="plain,ai_t2i,ai_t2i_down_up,ai_t2i_full_pass,ai_t2i_host_attention,"
                                         "every_step,attend_and_excite,ai_t2i_explicit_map",
                    help="comma separated; a method that does not apply to a model (down/up layers on a DiT, the "
                         "joint map's path on a UNet) is left out of its rows")
    args = ap.parse_args(argv)

    from comfy_host import import_pack
    pack = import_pack()
    import torch

    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    from importlib import import_module
    from runner_common import encode_subjects
    sampling = import_module(pack.__name__ + ".nodes.host.sampling")
    options = import_module(pack.__name__ + ".nodes.options")
    joint_maps = import_module(pack.__name__ + ".ai_t2i_attention.joint_maps")

    device = comfy.model_management.get_torch_device()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    full_dits = (args.dit_width or ("full" if device.type == "cuda" else "reduced")) == "full"
    base = dict(method="AI-T2I", strength=1.0, start_percent=0.0, end_percent=0.5)
    ai_t2i = options.settings_from_inputs(**base)
    variants = {
        "plain": None,
        "ai_t2i": ai_t2i,
        "ai_t2i_full_pass": replace(ai_t2i, stop_early=False),
        "ai_t2i_host_attention": replace(ai_t2i, fused_attention=False),
        "ai_t2i_down_up": replace(ai_t2i, layers="down+up"),  # the reference's layers, where auto reads fewer
        "ai_t2i_down": replace(ai_t2i, layers="down"),  # the cheapest layer set
        # none of the savings: the reference's layers, the whole UNet, the host's attention kernel
        "ai_t2i_straightforward": replace(ai_t2i, layers="down+up", stop_early=False, fused_attention=False),
        "every_step": replace(ai_t2i, schedule=replace(ai_t2i.schedule, end=1.0)),
        "attend_and_excite": options.settings_from_inputs(**{**base, "method": "Attend-and-Excite"}),
        "ai_t2i_explicit_map": ai_t2i,  # run inside joint_maps.explicit_joint_maps()
    }
    unknown = [m for m in args.methods.split(",") if m not in variants]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    print(f"device={device} dtype={args.dtype} models={args.models} size={args.size} steps={args.steps} "
          f"sampler=euler cfg=7.5 (UNets), DiTs {'full' if full_dits else 'reduced'} width "
          f"guided steps={len(ai_t2i.schedule.guided_steps(args.steps))} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}", flush=True)
    rows = []
    for spec in args.models.split(","):
        name, _, size = spec.partition(":")
        dit = name in DITS
        size = int(size or (1024 if dit else args.size))
        methods = [m for m in args.methods.split(",") if m not in (UNET_ONLY if dit else DIT_ONLY)]
        model, clip = build(name, device, dtype, full_dits)
        patched = pack.nodes.AIT2IAttentionPatch.execute(model=model).result[0]
        if dit:
            pos, neg = dit_conditioning(pack, name)
            channels, scheduler, cfg = 16, "simple", DITS[name]["cfg"]
        else:
            pos, neg = encode_subjects(pack, clip, "a cat and a dog", "cat, dog")
            channels, scheduler, cfg = 4, "normal", 7.5
        del clip  # the text encoder is not part of sampling: free it (full SDXL is tight on a 24 GB machine)
        lat = size // 8
        latent = torch.zeros(1, channels, lat, lat)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, args.steps)
        noise = comfy.sample.prepare_noise(latent, 0)
        results = {}

        def sample(method, sigmas):
            settings = variants[method]
            sampler, m = comfy.samplers.sampler_object("euler"), model
            if settings is not None:
                sampler, m = sampling.GuidedSampler(sampler, settings), patched
            map_path = joint_maps.explicit_joint_maps() if method == "ai_t2i_explicit_map" else contextlib.nullcontext()
            with torch.inference_mode(), map_path, PeakMemory(device) as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                comfy.sample.sample_custom(m, noise, cfg, sampler, sigmas, pos, neg, latent, seed=0, disable_pbar=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            return dt, cpu, mem.mib

        # Warm-up (loading, allocator, kernels): one step plain and one guided step.
        one_step = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, 1)
        for method in ("plain", "ai_t2i"):
            sample(method, one_step)
        label = f"{name} {size}px" + ((" full" if full_dits else " reduced") if dit else "")
        for rep in range(args.repeats):
            for method in methods:  # interleaved, so drift of the machine hits every method alike
                dt, cpu, mib = sample(method, sigmas)
                print(f"  {label} round {rep} {method}: {dt:.2f} s, cpu {cpu:.2f} s, {mib:.0f} MiB", flush=True)
                r = results.setdefault(method, {"s": [], "cpu": [], "mib": []})
                r["s"].append(dt)
                r["cpu"].append(cpu)
                r["mib"].append(mib)
        base = {k: min(v) if k != "mib" else max(v) for k, v in results["plain"].items()} if "plain" in results else None
        for method in methods:
            r = results[method]
            s, cpu, mib = min(r["s"]), min(r["cpu"]), max(r["mib"])
            ratios = (s / base["s"], cpu / base["cpu"], mib / base["mib"]) if base else (float("nan"),) * 3
            rows.append((label, method, s, cpu, mib, *ratios))
        print_table(rows[-len(methods):])
        del model, patched
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
    print("all models:")
    print_table(rows)
    return rows


def print_table(rows):
    """Wall seconds per image, process CPU seconds (less disturbed by other load on the
    machine), peak memory, and each as a ratio to plain sampling of the same run."""
    print("| model | method | s/image | CPU s | peak MiB | time x plain | CPU time x plain | memory x plain |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, method, s, cpu, mib, rt, rc, rm in rows:
        print(f"| {name} | {method} | {s:.2f} | {cpu:.2f} | {mib:.0f} | {rt:.2f} | {rc:.2f} | {rm:.2f} |", flush=True)


if __name__ == "__main__":
    main()
