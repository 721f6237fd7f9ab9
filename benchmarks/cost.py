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

--breakdown samples every row under torch.profiler (its times include the profiler's) and
prints, for each guided row, where a guided step's time goes, from the pack's
record_function labels (ai_t2i.<part>): the guidance forward up to the last layer read
(forward), the maps' share of it (maps), the subject maps and loss terms (loss), the backward,
the update, the record keeping (record), the waits on the device inside guided steps (CUDA:
the time and count of cudaStreamSynchronize / cudaDeviceSynchronize / device-to-host copies; the
CPU has none to wait on, so it counts the reads of a value to the host that would wait there),
and the refinement (its passes and time) -- as seconds per guided step and as a share of the
guided step -- next to a plain CFG step. On the CPU a part is the wall time of its labelled
windows; on CUDA the device time of the kernels launched inside them (the backward's kernels
are launched from autograd's device thread, so a window counts every thread's launches). It
also prints the floor the structure sets:

    floor = 1 + (passes / steps) x 3 x pass_work / cfg_batch     (x plain sampling)

passes: guidance passes in the run (one per guided step, more at refinement steps);
3: a forward and its backward (about twice the forward); pass_work: the share of the
network a pass runs (GuidancePass.work_share, the run record's pass_work); cfg_batch: a
plain step is a batch-2 forward with CFG (batch 1 for Flux at cfg 1), a pass is batch 1.

    python benchmarks/cost.py --models flux,sd35 --steps 4 --breakdown --methods plain,ai_t2i,attend_and_excite
    python benchmarks/cost.py --models sd15:128 --unet-width 64 --steps 2 --breakdown   # a quick check
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import pathlib
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Optional

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
# The parts of a guided step, as labelled in the pack (record_function "ai_t2i.<part>").
PARTS = ("forward", "maps", "loss", "backward", "update", "record", "refinement")
# CUDA runtime calls that wait for the device, and the device-to-host copy's event prefix.
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
COPY_TO_HOST = "Memcpy DtoH"
# CPU ops that read a tensor's value or size to the host: each waits for the device on CUDA.
HOST_READS = ("aten::_local_scalar_dense", "aten::nonzero")
UNET_ONLY = ("ai_t2i_down_up", "ai_t2i_down", "ai_t2i_straightforward")


def build(name, device, dtype, full=False, unet_width=320):
    """(model, clip) for a UNet model; (model, None) for a DiT (its conditioning is made as
    tensors, dit_conditioning)."""
    from tools import random_models as rm
    if name in DITS:
        args = DITS[name]["full" if full else "reduced"]
        make = rm.flux_model if name == "flux" else rm.sd3_model
        return make(**args, dtype=dtype, device=device), None
    if name == "sd15":
        return rm.sd15_model(width=unet_width, dtype=dtype, device=device), rm.sd1_clip()
    if name == "sdxl":
        return rm.sdxl_model(width=unet_width, dtype=dtype, device=device), rm.sdxl_clip()
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
    """The cost table's rows: (model, method, s, CPU s, MiB, time x plain, CPU time x plain, memory x plain)."""
    return collect(argv)[0]


def collect(argv=None):
    """(rows, breakdowns): the cost table's rows (see main) and, with --breakdown, a
    Breakdown per guided row."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl,tiny:128",
                    help="comma separated; name:size overrides --size for that model (tiny is a 128 px model); "
                         "DiT models (" + ", ".join(DITS) + ") default to 1024 px")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels of the UNet models (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--dit-width", choices=["full", "reduced"],
                    help="DiT models at their real width or at 2 heads of 64 (default: full on a GPU, reduced on the CPU)")
    ap.add_argument("--unet-width", type=int, default=320,
                    help="model channels of the SD1.5 / SDXL UNets (320: the real ones; 64: a quick check)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--breakdown", action="store_true",
                    help="sample every row under torch.profiler and print where a guided step's time goes, "
                         "with the floor the structure sets (see above)")
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
    rows, breakdowns = [], []
    for spec in args.models.split(","):
        name, _, size = spec.partition(":")
        dit = name in DITS
        size = int(size or (1024 if dit else args.size))
        methods = [m for m in args.methods.split(",") if m not in (UNET_ONLY if dit else DIT_ONLY)]
        model, clip = build(name, device, dtype, full_dits, args.unet_width)
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

        def sample(method, sigmas, profiled=False):
            """(wall s, CPU s, peak MiB, the guided run's record or None, profiler events or None)."""
            settings = variants[method]
            sampler, m = comfy.samplers.sampler_object("euler"), model
            if settings is not None:
                sampler, m = sampling.GuidedSampler(sampler, settings), patched
            map_path = joint_maps.explicit_joint_maps() if method == "ai_t2i_explicit_map" else contextlib.nullcontext()
            profiler = profile_run(device) if profiled else contextlib.nullcontext()
            with torch.inference_mode(), map_path, PeakMemory(device) as mem:
                with profiler as prof:
                    t0, c0 = time.perf_counter(), time.process_time()
                    comfy.sample.sample_custom(m, noise, cfg, sampler, sigmas, pos, neg, latent, seed=0,
                                               disable_pbar=True)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            record = sampler.runs.latest() if settings is not None else None
            return dt, cpu, mem.mib, record, (prof.profiler.kineto_results.events() if profiled else None)

        # Warm-up (loading, allocator, kernels): one step plain and one guided step; with --breakdown
        # under the profiler too, whose first start is slow (the first row would pay for it).
        one_step = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, 1)
        for method in ("plain", "ai_t2i"):
            sample(method, one_step, profiled=args.breakdown)
        label = f"{name} {size}px" + ((" full" if full_dits else " reduced") if dit else "")
        cfg_batch = 1 if cfg == 1.0 else 2  # a plain step's batch: the host skips the unconditional pass at cfg 1
        plain_s, printed = None, False  # the plain row's wall time (profiled), and whether a breakdown was printed
        for rep in range(args.repeats):
            for method in methods:  # interleaved, so drift of the machine hits every method alike
                dt, cpu, mib, record, events = sample(method, sigmas, profiled=args.breakdown)
                print(f"  {label} round {rep} {method}: {dt:.2f} s, cpu {cpu:.2f} s, {mib:.0f} MiB", flush=True)
                r = results.setdefault(method, {"s": [], "cpu": [], "mib": []})
                r["s"].append(dt)
                r["cpu"].append(cpu)
                r["mib"].append(mib)
                if events is not None and record is None:
                    plain_s = dt
                elif events is not None:  # printed at once: a run cut short by a time limit keeps what it had
                    t0 = time.perf_counter()
                    try:
                        breakdowns.append(breakdown(label, method, events, device, record, args.steps, dt, plain_s,
                                                    cfg_batch))
                    except Exception:  # a profile this code cannot read (another torch's events) loses one row only
                        traceback.print_exc()
                    else:
                        print_breakdown(breakdowns[-1:], head=not printed)
                        printed = True
                    print(f"  ({label} {method}: profile read in {time.perf_counter() - t0:.1f} s)", flush=True)
                    del events
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
    if breakdowns:
        print_breakdown(breakdowns)
    return rows, breakdowns


def profile_run(device):
    """A torch.profiler context for one sampling run: CPU ops (the pack's labels among them)
    and, on CUDA, the device's kernels and copies."""
    import torch
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities)


@dataclass
class Breakdown:
    """Where one guided run's time went, per guided step (seconds; on CUDA device seconds).

    parts:        part -> seconds per guided step (PARTS; "maps" lies within "forward", and
                  "refinement" holds whole passes of its own)
    step_s:       a guided step's guidance (forward, loss, backward, update, record, refinement)
    plain_step_s: a plain CFG step (the plain row's wall time / steps); None without a plain row
    waits:        (seconds, count) of waits on the device inside guided steps (CUDA); None on the CPU
    host_reads:   reads of a value to the host inside guided steps (each a wait on CUDA)
    test_reads:   those of them that are refinement tests (the only ones a step needs)
    passes:       guidance passes per guided step (mean), and at the steps that refined
    pass_work:    the share of the network a pass runs (the run record's)
    measured:     the run's wall time x the plain row's (both profiled)
    floor:        1 + (passes / steps) x 3 x pass_work / cfg_batch
    """

    label: str
    method: str
    device: str
    guided_steps: int
    steps: int
    parts: dict
    step_s: float
    plain_step_s: Optional[float]
    waits: Optional[tuple[float, int]]
    host_reads: int
    test_reads: int
    passes: float
    refined_passes: list
    pass_work: float
    cfg_batch: int
    measured: Optional[float]
    floor: float


def _windows(events, prefix="ai_t2i."):
    """label -> sorted (start_ns, end_ns) of the pack's record_function ranges on the CPU side."""
    from torch.autograd import DeviceType
    out = {}
    for e in events:
        name = e.name()
        if name.startswith(prefix) and e.device_type() == DeviceType.CPU:
            out.setdefault(name[len(prefix):], []).append((e.start_ns(), e.end_ns()))
    return {k: sorted(v) for k, v in out.items()}


def _inside(t: int, windows) -> bool:
    """Whether time t lies in one of `windows` (sorted, non-overlapping (start, end))."""
    i = bisect.bisect_right(windows, (t, float("inf"))) - 1
    return i >= 0 and windows[i][0] <= t <= windows[i][1]


def breakdown(label, method, events, device, record, steps, run_s, plain_s, cfg_batch) -> Breakdown:
    """A Breakdown of one profiled guided run from its profiler events (kineto events), its
    run record (pass_work, the passes per step) and the run's and the plain run's wall time."""
    from torch.autograd import DeviceType
    windows = _windows(events)
    step_windows = windows.get("step", [])
    guided = len(record.reports)
    if len(step_windows) != guided:
        raise RuntimeError(f"{label} {method}: {len(step_windows)} labelled guided steps, {guided} in the run record")
    cuda = device.type == "cuda"
    if cuda:
        # A device event's launch: the CPU op its linked correlation id names (any thread).
        launch = {e.correlation_id(): e.start_ns() for e in events
                  if e.device_type() == DeviceType.CPU and e.linked_correlation_id() == 0}
        work = sorted((launch[e.linked_correlation_id()], e.duration_ns()) for e in events
                      if e.device_type() == DeviceType.CUDA and not e.is_user_annotation()
                      and not e.name().startswith("ai_t2i.") and e.linked_correlation_id() in launch)
        starts = [t for t, _ in work]
        total = list(itertools.accumulate((d for _, d in work), initial=0))  # total[i]: the first i events' ns

        def seconds(part):
            """Device seconds of the kernels and copies launched inside the part's windows."""
            ns = 0
            for a, b in windows.get(part, []):
                ns += total[bisect.bisect_right(starts, b)] - total[bisect.bisect_left(starts, a)]
            return ns / 1e9
    else:
        def seconds(part):
            return sum(b - a for a, b in windows.get(part, [])) / 1e9
    parts = {part: seconds(part) / guided for part in PARTS}
    step_s = seconds("step") / guided

    tests = windows.get("refinement_test", [])
    reads = [e for e in events if e.name() in HOST_READS and e.device_type() == DeviceType.CPU
             and _inside(e.start_ns(), step_windows)]
    waits = None
    if cuda:
        copies = {e.linked_correlation_id() for e in events if e.name().startswith(COPY_TO_HOST)}
        calls = [e for e in events if e.device_type() == DeviceType.CPU and _inside(e.start_ns(), step_windows)
                 and (e.name() in SYNC_CALLS
                      or (e.name().startswith("cudaMemcpy") and e.linked_correlation_id() in copies))]
        waits = (sum(e.duration_ns() for e in calls) / 1e9, len(calls))
    iterations = [r.iterations for r in record.reports]
    passes = sum(iterations)
    floor = 1 + passes / steps * 3 * record.pass_work / cfg_batch
    return Breakdown(label, method, device.type, guided, steps, parts, step_s, plain_s / steps if plain_s else None,
                     waits, len(reads), sum(_inside(e.start_ns(), tests) for e in reads), passes / guided,
                     [n for n in iterations if n > 1], record.pass_work, cfg_batch,
                     run_s / plain_s if plain_s else None, floor)


def print_breakdown(breakdowns, head=True):
    """Per guided row: each part as seconds per guided step and its share of the guided step,
    the waits on the device, the passes, and measured x plain against the floor."""
    if head:
        print("floor = 1 + passes / steps x 3 x pass_work / CFG batch (a pass: forward + backward, batch 1)")
        print("| model | method | plain CFG step s | guided step s | " + " | ".join(PARTS) +
              " | device waits | passes / guided step | measured x plain | floor x plain (pass work, CFG batch) |")
        print("|---|---|---:|---:|" + "---:|" * len(PARTS) + "---|---|---:|---|")
    for b in breakdowns:
        share = lambda s: f"{s:.3f} ({s / b.step_s:.0%})" if b.step_s > 0 else f"{s:.3f}"  # noqa: E731
        if b.waits is None:
            waits = f"n/a (CPU; {b.host_reads} host reads, {b.test_reads} of them refinement tests)"
        else:
            waits = (f"{b.waits[0] / b.guided_steps:.3f} s, {b.waits[1]} waits ({b.host_reads} host reads, "
                     f"{b.test_reads} refinement tests)")
        refined = f"; refined steps: {', '.join(map(str, b.refined_passes))}" if b.refined_passes else ""
        plain = f"{b.plain_step_s:.3f}" if b.plain_step_s else "-"
        measured = f"{b.measured:.2f}" if b.measured else "-"
        print(f"| {b.label} | {b.method} | {plain} | {b.step_s:.3f} | " + " | ".join(share(b.parts[p]) for p in PARTS) +
              f" | {waits} | {b.passes:.1f} over {b.guided_steps} of {b.steps} steps{refined} | {measured} | "
              f"{b.floor:.2f} ({b.pass_work:.0%}, batch {b.cfg_batch}) |", flush=True)


def print_table(rows):
    """Wall seconds per image, process CPU seconds (less disturbed by other load on the
    machine), peak memory, and each as a ratio to plain sampling of the same run."""
    print("| model | method | s/image | CPU s | peak MiB | time x plain | CPU time x plain | memory x plain |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, method, s, cpu, mib, rt, rc, rm in rows:
        print(f"| {name} | {method} | {s:.2f} | {cpu:.2f} | {mib:.0f} | {rt:.2f} | {rc:.2f} | {rm:.2f} |", flush=True)


if __name__ == "__main__":
    main()
