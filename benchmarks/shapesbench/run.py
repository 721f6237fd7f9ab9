"""ShapesBench runner: vanilla vs AI-T2I (and its ablations, and Attend-and-Excite) on the tiny shapes model.

For every evaluation prompt x seed x method it queues an API-format ComfyUI graph

    AIT2ITinyModelLoader -> AIT2ISubjectPrompt (subject words, colour:shape pairs)
      -> KSampler (vanilla) or AIT2IKSampler (method preset) -> VAEDecode -> SaveImage

through ComfyUI's real executor, in this process (tools.comfy_runner.Host) or, with
--servers, on running ComfyUI servers over HTTP. Every image is scored by the exact
ShapesBench evaluator, one JSON line per (prompt, seed, method) is appended to
results.jsonl (flushed and fsynced after each job), and summary.md and grid.png are
written at the end.

    .venv/bin/python benchmarks/shapesbench/run.py --out results/shapesbench \\
        --methods vanilla,attend_and_excite,ai_t2i,aggregation_only,isolation_only \\
        --seeds 8 --steps 20 [--prompts 20 | --prompts 0-9,15-24,30-33] [--servers http://127.0.0.1:8188,...]

Jobs. With --job batch (the default) one job is one prompt x one method with all seeds as
one batch: EmptyLatentImage(batch_size=seeds) and one noise seed (--noise-seed), so
"seed i" is image i of that batch. With --job seed every seed is its own graph with
noise seed (--noise-seed + i). The two give different (equally random) images. Every
method of a prompt starts from the same noise, so methods are compared image by image.

Order. The core methods (vanilla, attend_and_excite, ai_t2i, those of them requested)
run for every prompt first; the other requested methods follow in a second pass, so a
run stopped early still has a complete core comparison.

Resuming. A restart with the same --out skips every (prompt, seed, method) already in
results.jsonl; a batch job with some seeds done reruns the batch and writes only the
missing lines. A results.jsonl made with other settings (steps, cfg, sampler, job
kind, noise seed, model) is refused rather than mixed.

The model. --model names the tiny model file (default: the pack's
models/ai_t2i_tiny_shapes.safetensors). The loader node lists the pack's models/
folder only; for a file elsewhere, in-process runs point that node's folder at the
file's folder (the host is this process, so this changes nothing outside the run).
A server has its own pack: the file, by its name, must be in that pack's models/.

--single instead runs one-object prompts ('a red circle', ...), to check that the model
draws a single requested shape (the 'correct' rate of vanilla is the figure to read).
--summary-only rewrites summary.md and grid.png from results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.shapesbench.evaluate import PromptSpec, score, summarize  # noqa: E402
from benchmarks.shapesbench.prompts import EVAL_PROMPTS, subject_prompt_inputs  # noqa: E402
from benchmarks.shapesbench import scenes  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"

# Benchmark name -> AIT2IKSampler `method` preset (None: the host's own KSampler).
METHODS: dict[str, str | None] = {
    "vanilla": None,
    "attend_and_excite": "Attend-and-Excite",
    "ai_t2i": "AI-T2I",
    "aggregation_only": "AI-T2I aggregation only",
    "isolation_only": "AI-T2I isolation only",
    "divide_and_bind": "Divide & Bind",
    "a_star": "A-STAR",
    "conform": "CONFORM",
}
CORE = ("vanilla", "attend_and_excite", "ai_t2i")
KEYS = ("present", "bound", "no_extra", "correct")

# One object each, one per shape, none of them a held-out (shape, colour) pair.
SINGLE_PROMPTS: list[PromptSpec] = [
    PromptSpec(f"a {color} {shape}", ((shape, color),))
    for color, shape in (("red", "circle"), ("blue", "square"), ("green", "triangle"),
                         ("yellow", "star"), ("purple", "heart"), ("cyan", "cross"))
]

# Every seen (shape, colour) pair as a one-object prompt: what vanilla must draw right.
SINGLE_GRID: list[PromptSpec] = [
    PromptSpec(f"a {color} {shape}", ((shape, color),))
    for shape in scenes.SHAPES for color in scenes.COLORS if (shape, color) not in scenes.HELD_OUT_PAIRS
]

# Settings that must match for lines of one results.jsonl to be comparable.
RUN_KEYS = ("steps", "cfg", "sampler", "scheduler", "job", "noise_seed", "model", "model_sha256", "strength",
            "start_percent", "end_percent", "layers", "joint_map")
# Rows written before a setting existed were made with its value then; the model's digest
# was not kept, so such rows never match a run that knows it (two models can share a name).
LEGACY_VALUES = {"layers": "down+up", "model_sha256": None, "joint_map": "joint softmax", "start_percent": 0.0}


def run_settings(args) -> dict:
    """The settings a row is made under, as RUN_KEYS names them (the model by file name)."""
    return {k: args.model.name if k == "model" else getattr(args, k) for k in RUN_KEYS}


def model_digest(path: pathlib.Path) -> str:
    """The first 12 hex digits of the file's SHA-256: tells apart models that share a name."""
    import hashlib
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------


def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def build_graph(spec: PromptSpec, method: str, model_name: str, noise_seed: int, batch: int, steps: int,
                cfg: float, sampler: str, scheduler: str, strength: float, end_percent: float,
                prefix: str, layers: str = "auto", joint_map: str = "joint softmax", start_percent: float = 0.0) -> dict:
    """The API-format graph of one job. The saved images are node "7"'s output."""
    node_method = METHODS[method]
    g = {
        "1": _n("AIT2ITinyModelLoader", model_name=model_name),
        "2": _n("AIT2ISubjectPrompt", clip=["1", 1], text=spec.text, **subject_prompt_inputs(spec)),
        "3": _n("CLIPTextEncode", clip=["1", 1], text=""),
        "4": _n("EmptyLatentImage", width=128, height=128, batch_size=batch),
    }
    common = dict(model=["1", 0], seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                  positive=["2", 0], negative=["3", 0], latent_image=["4", 0], denoise=1.0)
    if node_method is None:
        g["5"] = _n("KSampler", **common)
    else:
        g["5"] = _n("AIT2IKSampler", method=node_method, strength=strength, start_percent=start_percent,
                    end_percent=end_percent, layers=layers, joint_map=joint_map, **common)
    g["6"] = _n("VAEDecode", samples=["5", 0], vae=["1", 2])
    g["7"] = _n("SaveImage", images=["6", 0], filename_prefix=prefix)
    return g


# ---------------------------------------------------------------------------
# Executors: in-process host, or ComfyUI servers over HTTP
# ---------------------------------------------------------------------------


def load_from_folder_of(model: pathlib.Path) -> None:
    """Point the in-process tiny model loader node at the model file's folder (after Host()
    started the host), so a graph names the file by its name. The loader lists and loads
    from a module-level folder; see the module docstring."""
    import nodes  # the host's, loaded by Host

    loader = nodes.NODE_CLASS_MAPPINGS["AIT2ITinyModelLoader"]
    module = sys.modules[loader.__module__]
    if pathlib.Path(module.MODELS_DIR).resolve() != model.parent.resolve():
        module.MODELS_DIR = str(model.parent.resolve())


class LocalExecutor:
    """ComfyUI's executor in this process; images are read back from its output folder."""

    def __init__(self, model: pathlib.Path):
        from tools.comfy_runner import Host

        # SaveImage writes here; each image is moved to the run's images/ under a fixed name.
        self.output_dir = pathlib.Path(tempfile.mkdtemp(prefix="shapesbench_"))
        self.host = Host(output_dir=str(self.output_dir))
        load_from_folder_of(model)

    def run(self, graph: dict) -> list[bytes]:
        outputs = self.host.run(graph)
        images = []
        for item in outputs["7"]["images"]:
            path = self.output_dir / item.get("subfolder", "") / item["filename"]
            images.append(path.read_bytes())
            path.unlink()
        return images

    def close(self) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)


class ServerExecutor:
    """One running ComfyUI server: POST /prompt, poll /history/<id>, fetch images from /view."""

    def __init__(self, url: str, poll: float = 0.25, timeout: float = 3600.0):
        self.url = url.rstrip("/")
        self.poll, self.timeout = poll, timeout
        self.client_id = str(uuid.uuid4())

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.read()

    def run(self, graph: dict) -> list[bytes]:
        body = json.dumps({"prompt": graph, "client_id": self.client_id}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                prompt_id = json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.url} refused the graph: {e.read().decode(errors='replace')}") from e
        deadline = time.monotonic() + self.timeout
        while True:
            history = json.loads(self._get(f"/history/{prompt_id}"))
            entry = history.get(prompt_id)
            if entry:  # a prompt enters the history when it has finished (or failed)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url}: prompt {prompt_id} did not finish in {self.timeout:.0f} s")
            time.sleep(self.poll)
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
            detail = errors[0].get("exception_message") if errors else status.get("messages")
            raise RuntimeError(f"{self.url}: graph failed: {detail}")
        images = []
        for item in entry["outputs"]["7"]["images"]:
            query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                            "type": item.get("type", "output")})
            images.append(self._get("/view?" + query))
        return images


# ---------------------------------------------------------------------------
# Results file
# ---------------------------------------------------------------------------


def read_results(path: pathlib.Path, repair: bool = False) -> list[dict]:
    """Lines of results.jsonl, without a torn last line (a kill mid-write, or a run still
    writing). repair=True (a run about to append) also cuts that line off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as f:
                f.truncate(keep)
        data = data[:keep]
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


class ResultsWriter:
    def __init__(self, path: pathlib.Path):
        self.path = path
        self.lock = threading.Lock()

    def append(self, rows: list[dict]) -> None:
        with self.lock, open(self.path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _key(row: dict) -> tuple[str, int, str]:
    return row["prompt"], int(row["seed"]), row["method"]


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def parse_prompt_selection(text: str | None, n_prompts: int) -> list[int]:
    """'20' -> the first 20; '0-9,15,30-33' -> those indices; None -> all."""
    if not text:
        return list(range(n_prompts))
    if text.isdigit():
        return list(range(min(int(text), n_prompts)))
    picked: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            if not 0 <= i < n_prompts:
                raise SystemExit(f"--prompts: index {i} is outside 0..{n_prompts - 1}")
            if i not in picked:
                picked.append(i)
    return picked


def plan_jobs(prompt_ids: list[int], methods: list[str], seeds: int, job: str) -> list[tuple[int, str, list[int]]]:
    """(prompt index, method, seed indices) per job, core methods first (see the docstring)."""
    passes = [[m for m in methods if m in CORE], [m for m in methods if m not in CORE]]
    seed_groups = [list(range(seeds))] if job == "batch" else [[s] for s in range(seeds)]
    return [(p, m, group) for ms in passes for p in prompt_ids for m in ms for group in seed_groups]


def run_job(executor, spec: PromptSpec, p: int, method: str, seed_ids: list[int], done: set, args,
            images_dir: pathlib.Path) -> list[dict]:
    from io import BytesIO

    import numpy as np
    from PIL import Image

    noise_seed = args.noise_seed if args.job == "batch" else args.noise_seed + seed_ids[0]
    batch = len(seed_ids) if args.job == "seed" else args.seeds
    graph = build_graph(spec, method, args.model.name, noise_seed, batch, args.steps, args.cfg, args.sampler,
                        args.scheduler, args.strength, args.end_percent, prefix=f"shapesbench_p{p:02d}_{method}",
                        layers=args.layers, joint_map=args.joint_map, start_percent=args.start_percent)
    t0 = time.perf_counter()
    images = executor.run(graph)
    seconds = time.perf_counter() - t0
    if len(images) != batch:
        raise RuntimeError(f"expected {batch} images, got {len(images)}")
    rows = []
    for i, s in enumerate(seed_ids):
        if (spec.text, s, method) in done:
            continue
        png = images[i if args.job == "batch" else 0]
        name = f"p{p:02d}_s{s}_{method}.png"
        (images_dir / name).write_bytes(png)
        image = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
        result = score(image, spec)
        rows.append({
            "prompt_index": p, "prompt": spec.text, "held_out": spec.held_out,
            "subjects": [list(x) for x in spec.subjects], "method": method,
            "node_method": METHODS[method] or "KSampler", "seed": s,
            "batch_index": i if args.job == "batch" else 0, "image": f"images/{name}",
            **run_settings(args),
            "job_seconds": round(seconds, 3), "seconds_per_image": round(seconds / batch, 3),
            **{k: v for k, v in result.items()},
        })
    return rows


def run(args) -> None:
    out = pathlib.Path(args.out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    prompts = SINGLE_GRID if args.single_grid else SINGLE_PROMPTS if args.single else EVAL_PROMPTS
    prompt_ids = parse_prompt_selection(args.prompts, len(prompts))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")

    existing = read_results(results_path, repair=True)
    mine = run_settings(args)
    for row in existing:
        other = {k: row.get(k, LEGACY_VALUES.get(k)) for k in RUN_KEYS}
        if other != mine:
            raise SystemExit(f"{results_path} was made with other settings {other} (this run: {mine}); "
                             "use another --out")
    done = {_key(r) for r in existing}
    jobs = [(p, m, seeds) for p, m, seeds in plan_jobs(prompt_ids, methods, args.seeds, args.job)
            if any((prompts[p].text, s, m) not in done for s in seeds)]
    total_images = sum(len(s) for _, _, s in jobs)
    print(f"{len(done)} results already in {results_path}; {len(jobs)} jobs to run "
          f"({len(prompt_ids)} prompts x {args.seeds} seeds x {len(methods)} methods, job={args.job})", flush=True)

    writer = ResultsWriter(results_path)
    started = time.perf_counter()
    progress = {"jobs": 0, "images": 0}
    lock = threading.Lock()

    def work(executor, my_jobs):
        for p, m, seeds in my_jobs:
            rows = run_job(executor, prompts[p], p, m, seeds, done, args, images_dir)
            writer.append(rows)
            with lock:
                progress["jobs"] += 1
                progress["images"] += len(seeds)
                elapsed = time.perf_counter() - started
                ok = sum(r["correct"] for r in rows)
                print(f"[{progress['jobs']}/{len(jobs)}] p{p:02d} {m:<18} {len(rows)} new, {ok} correct, "
                      f"{rows[0]['job_seconds'] if rows else 0:.1f} s; {elapsed:.0f} s elapsed, "
                      f"{elapsed / progress['images'] * (total_images - progress['images']):.0f} s to go",
                      flush=True)

    if jobs:
        if args.servers:
            urls = [u.strip() for u in args.servers.split(",") if u.strip()]
            executors = [ServerExecutor(u) for u in urls]
            # Round-robin: job i goes to server i mod n; each server works through its share in order.
            shares = [jobs[i::len(executors)] for i in range(len(executors))]
            errors: list[BaseException] = []

            def guarded(ex, share):
                try:
                    work(ex, share)
                except BaseException as e:  # reported after the other servers finish
                    errors.append(e)

            threads = [threading.Thread(target=guarded, args=(ex, share)) for ex, share in zip(executors, shares)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        else:
            executor = LocalExecutor(args.model)
            try:
                work(executor, jobs)
            finally:
                executor.close()
    wall = time.perf_counter() - started
    print(f"ran {len(jobs)} jobs ({total_images} images) in {wall:.1f} s", flush=True)
    write_reports(out, methods_order=methods)


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _fmt(rate: tuple[float, float, float]) -> str:
    mean, lo, hi = rate
    return "n/a" if math.isnan(mean) else f"{mean:.3f} [{lo:.2f}, {hi:.2f}]"


def _rate_table(rows: list[dict], methods: list[str]) -> list[str]:
    if not rows:
        return ["(none in this run)"]
    lines = ["| method | n | " + " | ".join(KEYS) + " |", "|---|---:|" + "---|" * len(KEYS)]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        rates = summarize(sel, KEYS)
        lines.append(f"| {m} | {len(sel)} | " + " | ".join(_fmt(rates[k]) for k in KEYS) + " |")
    return lines


# The intervals a gain line gives: "present" is the rate the method is meant to raise (every
# subject drawn), "correct" the strictest.
GAIN_CI_KEYS = ("present", "correct")
GAIN_HEADER = ("| comparison | pairs | " + " | ".join(KEYS) + " | "
               + " | ".join(f"{k}, 95% CI (prompt bootstrap)" for k in GAIN_CI_KEYS)
               + " | correct: only first / only second |")


def _paired(rows: list[dict], a: str, b: str) -> tuple[dict, dict]:
    """Rows of methods a and b on the (prompt, seed) pairs both have."""
    ra = {(r["prompt"], r["seed"]): r for r in rows if r["method"] == a}
    rb = {(r["prompt"], r["seed"]): r for r in rows if r["method"] == b}
    # Sorted: a set's order follows the process's string hashing, and the bootstrap's resampling
    # would follow it, so the same rows would give other intervals in another run.
    common = sorted(ra.keys() & rb.keys())
    return {k: ra[k] for k in common}, {k: rb[k] for k in common}


def _gain_lines(rows: list[dict], a: str, b: str, label: str) -> list[str]:
    ra, rb = _paired(rows, a, b)
    if not ra:
        return [f"| {label} | 0 | " + " | ".join("n/a" for _ in KEYS) + " | n/a | n/a |"]
    diffs = []
    for k in KEYS:
        da = sum(bool(r[k]) for r in ra.values()) / len(ra)
        db = sum(bool(r[k]) for r in rb.values()) / len(rb)
        diffs.append(f"{da - db:+.3f}")
    wins = sum(ra[k]["correct"] and not rb[k]["correct"] for k in ra)
    losses = sum(rb[k]["correct"] and not ra[k]["correct"] for k in ra)
    cis = [_prompt_bootstrap(ra, rb, key=key) for key in GAIN_CI_KEYS]
    return [f"| {label} | {len(ra)} | " + " | ".join(diffs) + " | "
            + " | ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in cis) + f" | {wins} / {losses} |"]


def _prompt_bootstrap(ra: dict, rb: dict, n_boot: int = 2000, key: str = "correct") -> tuple[float, float]:
    """95% interval of the difference of `key` rates, for rows keyed (prompt, seed), resampling
    whole prompts (the seeds of one prompt are not independent of each other)."""
    import numpy as np

    per_prompt: dict[str, list[int]] = {}
    for k in ra:
        per_prompt.setdefault(k[0], []).append(int(ra[k][key]) - int(rb[k][key]))
    sums = np.array([sum(v) for v in per_prompt.values()], dtype=float)
    counts = np.array([len(v) for v in per_prompt.values()], dtype=float)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    diffs = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


FAILURE_KINDS = ("neglected", "merged", "colour leaked", "extra object")


def failure_kinds(rows: list[dict]) -> dict[str, float]:
    """Share of images with each failure kind (FAILURE_KINDS)."""
    n = max(len(rows), 1)
    return {"neglected": sum(bool(r["missing"]) and not r["merged"] for r in rows) / n,
            "merged": sum(bool(r["missing"]) and bool(r["merged"]) for r in rows) / n,
            "colour leaked": sum(r["present"] and not r["bound"] for r in rows) / n,
            "extra object": sum(not r["no_extra"] for r in rows) / n}


def summary_markdown(rows: list[dict], methods: list[str]) -> str:
    two = [r for r in rows if len(r["subjects"]) == 2]
    held = [r for r in rows if r["held_out"]]
    colored = [r for r in rows if any(c is not None for _, c in r["subjects"])]
    settings = rows[0] if rows else {}
    n_prompts = len({r["prompt"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# ShapesBench results",
        "",
        f"Model `{settings.get('model')}`, {settings.get('steps')} steps, {settings.get('sampler')} / "
        f"{settings.get('scheduler')}, cfg {settings.get('cfg')}, guidance strength {settings.get('strength')} "
        f"from {settings.get('start_percent', 0.0)} up to {settings.get('end_percent')} of the steps; job kind `{settings.get('job')}`, noise seed "
        f"{settings.get('noise_seed')}. {n_prompts} prompts x {len(seeds)} seeds; {len(rows)} images scored.",
        "",
        "Rates with 95% Wilson intervals. present: every subject's shape found as its own object; "
        "bound: present and each coloured subject has its colour; no_extra: no more objects than subjects; "
        "correct: all three.",
        "",
        f"## All prompts ({len({r['prompt'] for r in rows})})",
        "",
        *_rate_table(rows, methods),
        "",
        f"## Held-out prompts ({len({r['prompt'] for r in held})}: unseen shape combination or shape-colour pair)",
        "",
        *_rate_table(held, methods),
        "",
        f"## Prompts with colours ({len({r['prompt'] for r in colored})})",
        "",
        *_rate_table(colored, methods),
        "",
    ]
    van = [r for r in two if r["method"] == "vanilla"]
    if van:
        failed = [r for r in van if r["missing"] or r["merged"]]
        missing = sum(bool(r["missing"]) for r in van)
        merged = sum(bool(r["merged"]) for r in van)
        rate = summarize([{"failed": bool(r["missing"] or r["merged"])} for r in van], ("failed",))["failed"]
        lines += [
            "## Vanilla failures on two-subject prompts",
            "",
            f"Missing or merged subject: {len(failed)} / {len(van)} = {_fmt(rate)} "
            f"(a subject missing: {missing}; merged blob: {merged}).",
            "",
        ]
    lines += ["## Failures by type (two-subject prompts; an image can fail several ways)", "",
              "neglected: a subject not found and no merged blob; merged: a subject not found and a blob the size of "
              "two objects; colour leaked: every subject found but a coloured one has the wrong colour; extra "
              "object: more objects than subjects.", "",
              "| method | n | neglected | merged | colour leaked | extra object |", "|---|---:|---:|---:|---:|---:|"]
    for m in methods:
        sel = [r for r in two if r["method"] == m]
        if sel:
            kinds = failure_kinds(sel)
            lines.append(f"| {m} | {len(sel)} | " + " | ".join(f"{kinds[k]:.3f}" for k in FAILURE_KINDS) + " |")
    lines.append("")
    if "ai_t2i" in methods:
        lines += [
            "## Gain of ai_t2i (difference of rates on the same prompts and seeds)",
            "",
            GAIN_HEADER,
            "|---|---:|" + "---|" * (len(KEYS) + len(GAIN_CI_KEYS) + 1),
        ]
        for other in ("vanilla", "attend_and_excite"):
            if other in methods:
                lines += _gain_lines(rows, "ai_t2i", other, f"ai_t2i - {other} (all)")
                lines += _gain_lines(held, "ai_t2i", other, f"ai_t2i - {other} (held-out)")
        lines.append("")
    lines += ["## Correct per prompt (of the seeds run)", "",
              "| # | prompt | held-out | " + " | ".join(methods) + " |", "|---:|---|---|" + "---:|" * len(methods)]
    for p in sorted({r["prompt_index"] for r in rows}):
        sel = [r for r in rows if r["prompt_index"] == p]
        cells = []
        for m in methods:
            sm = [r for r in sel if r["method"] == m]
            cells.append(f"{sum(r['correct'] for r in sm)}/{len(sm)}" if sm else "-")
        held_out = "yes" if sel[0]["held_out"] else ""
        lines.append(f"| {p} | {sel[0]['prompt']} | {held_out} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def image_grid(row_labels: list[str], col_labels: list[str], tile, cell: int = 128, label_w: int = 230,
               head_h: int = 20):
    """A white PIL image: column labels on top, a label left of each row, and tile(i, j)
    (a (cell, cell) RGB image, or None for an empty cell) at row i, column j."""
    from PIL import Image, ImageDraw

    grid = Image.new("RGB", (label_w + cell * len(col_labels), head_h + cell * len(row_labels)), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(col_labels):
        draw.text((label_w + j * cell + 4, 4), label, fill="black")
    for i, label in enumerate(row_labels):
        y = head_h + i * cell
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        for j in range(len(col_labels)):
            im = tile(i, j)
            if im is not None:
                grid.paste(im, (label_w + j * cell, y))
    return grid


def write_grid(out: pathlib.Path, rows: list[dict], methods: list[str], max_rows: int = 8) -> None:
    """Rows: a few prompts (shape-only, coloured, held-out mixed); columns: methods; the first seed."""
    from PIL import Image, ImageDraw

    first = min((r["seed"] for r in rows), default=None)
    by = {(r["prompt_index"], r["method"]): r for r in rows if r["seed"] == first}
    prompts = sorted({p for p, _ in by})
    if not prompts:
        return
    if len(prompts) > max_rows:  # spread the rows over the prompt list
        prompts = [prompts[round(i * (len(prompts) - 1) / (max_rows - 1))] for i in range(max_rows)]
    cell = 128

    def label(p):
        any_row = next(by[(p, m)] for m in methods if (p, m) in by)
        return any_row["prompt"] + (" (held-out)" if any_row["held_out"] else "")

    def tile(i, j):
        r = by.get((prompts[i], methods[j]))
        if r is None or not (out / r["image"]).exists():
            return None
        im = Image.open(out / r["image"]).convert("RGB").resize((cell, cell))
        ImageDraw.Draw(im).text((3, cell - 13), "ok" if r["correct"] else "x",
                                fill=(0, 140, 0) if r["correct"] else (200, 0, 0))
        return im

    image_grid([label(p) for p in prompts], methods, tile, cell=cell).save(out / "grid.png")


def write_reports(out: pathlib.Path, methods_order: list[str] | None = None) -> None:
    rows = read_results(out / "results.jsonl")
    present = {r["method"] for r in rows}
    methods = [m for m in (methods_order or []) if m in present] + [m for m in METHODS if m in present
                                                                    and m not in (methods_order or [])]
    (out / "summary.md").write_text(summary_markdown(rows, methods))
    write_grid(out, rows, methods)
    print(f"wrote {out / 'summary.md'} and {out / 'grid.png'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "results" / "shapesbench"))
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma separated, of: {', '.join(METHODS)}")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", default=None, help="N (the first N prompts) or indices like 0-9,15,30-33")
    ap.add_argument("--servers", default=None, help="comma separated ComfyUI server URLs; default: in-process")
    ap.add_argument("--job", choices=("batch", "seed"), default="batch",
                    help="one job per prompt x method with the seeds as a batch, or one job per seed")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance (the trainer previews at 5)")
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--scheduler", default="normal")
    ap.add_argument("--strength", type=float, default=1.0, help="AI-T2I / A&E step size multiplier")
    ap.add_argument("--start-percent", type=float, default=0.0, help="guidance starts at this fraction of the steps")
    ap.add_argument("--end-percent", type=float, default=0.5, help="guidance stops at this fraction of the steps")
    ap.add_argument("--layers", default="auto", help="layer set the guided methods read (rows made before 'auto' "
                                                     "existed read down+up)")
    ap.add_argument("--joint-map", default="joint softmax",
                    help="how a joint-attention (DiT) model's maps are read: a JOINT_MAP_RULES name "
                         "(joint softmax, text softmax, sharpened joint softmax); a UNet ignores it")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="the tiny model file (see the docstring)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (in-process runs)")
    ap.add_argument("--single", action="store_true", help="run the one-object prompts instead of EVAL_PROMPTS")
    ap.add_argument("--single-grid", action="store_true",
                    help="run every seen (shape, colour) pair as a one-object prompt instead of EVAL_PROMPTS")
    ap.add_argument("--summary-only", action="store_true", help="only rewrite summary.md and grid.png")
    args = ap.parse_args(argv)
    args.model = pathlib.Path(args.model)
    if args.summary_only:
        write_reports(pathlib.Path(args.out), [m.strip() for m in args.methods.split(",") if m.strip()])
        return
    if not args.servers and not args.model.is_file():
        raise SystemExit(f"no tiny model at {args.model}: train one with tools/train_tiny_model.py or pass --model")
    # Servers load the model by name from their own folders; a local copy, when there is one, is the same file.
    args.model_sha256 = model_digest(args.model) if args.model.is_file() else None
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
