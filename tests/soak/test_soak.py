"""Soak: the pack under load in a real ComfyUI server, started as the browser test starts it
(tests/comfy_server.py), driven only through the server's HTTP and websocket API.

Two clients (two client ids, two websocket connections) queue 100 prompts on the embedded tiny
model concurrently, each keeping a few prompts in the queue: the three graph forms of
tools/graphs.py (KSampler (AI-T2I), the Guided Sampler in SamplerCustomAdvanced, and vanilla
KSampler beside KSampler (AI-T2I)), every method (AI-T2I, its two ablations, Attend-and-Excite,
Divide & Bind, A-STAR, CONFORM; vanilla in the comparison graph), eight samplers (in-place and
step-by-step ones), batches of 1 and 2. Ten prompts are cancelled mid guided step: when the
websocket reports that the guided sampler finished step k-1 of the first half (the guided steps at
the default end_percent 0.5), the client POSTs /interrupt for that prompt while step k runs.

Checked: every prompt completes, or (exactly the cancelled ones) reports execution_interrupted
from the guided sampler inside the guided range; the prompt the server ran next succeeds; prompts
re-run after the soak with the seeds of earlier ones give the same image bytes and loss logs; the
server's resident memory after the 100 prompts is within 5 % of that after the first 10 (each read
with the server idle, after its periodic garbage collection); and no AI-T2I state is left on the
model the server's cache keeps: a test-only probe node (tests/soak/state_probe) inspects the tiny
model loader's cached MODEL (and CLIP, against its fresh report) at the start and end of every
prompt, and the patched copy of every custom-sampling prompt must carry exactly what 'AI-T2I
Attention Patch' puts on a fresh copy.

AI_T2I_SOAK_PROMPTS=20 runs a short version (2 cancels) while developing. Numbers of the run go
to out/soak/soak_report.json, the server's log to out/soak/server.log. (Not in tests/workflow/:
that folder's conftest imports the host and the pack into the test process, which this test,
talking to a server only, never needs.)
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import random
import statistics
import time
import uuid
from typing import Optional

import pytest
from comfy_server import PACK_FOLDER, ROOT, comfy_server, get_json, post_json

from tools.graphs import comparison_graph, custom_sampling_graph, ksampler_graph, model_source

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (a ComfyUI requirement) drives the websocket clients")

HERE = pathlib.Path(__file__).resolve().parent
ARTIFACTS = ROOT / "out" / "soak"
PROBE_FOLDER = "ai_t2i_soak_probe"
TINY = {"tiny": "ai_t2i_tiny_shapes.safetensors"}

PROMPTS = int(os.environ.get("AI_T2I_SOAK_PROMPTS", "100"))
WARMUP = 10  # the memory baseline is read after these
CANCELS = max(1, round(PROMPTS / 10))
CLIENTS = 2
WINDOW = 3  # prompts each client keeps queued
STEPS = 8
END_PERCENT = 0.5  # the default: guidance runs the first half of the steps
GUIDED_STEPS = int(STEPS * END_PERCENT)  # steps 0..3 of 8 are guided
MEMORY_TOLERANCE = 0.05

SOAK_TIMEOUT_S = float(os.environ.get("AI_T2I_SOAK_TIMEOUT_S", "1500"))  # the whole queue of prompts
STALL_TIMEOUT_S = 180  # no websocket message at all for this long while prompts are out: the server hangs
RUN_TIMEOUT_S = 300  # one prompt run on its own (probe graphs, re-runs)
IDLE_TIMEOUT_S = 120
GC_SETTLE_S = 11  # the server's prompt worker collects garbage after 10 s without a prompt

KINDS = ("ksampler", "custom", "comparison")
METHODS = ("AI-T2I", "AI-T2I aggregation only", "AI-T2I isolation only", "Attend-and-Excite", "Divide & Bind",
           "A-STAR", "CONFORM")
SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "heun", "dpmpp_2m_sde", "dpmpp_sde", "lms", "uni_pc")
# The cancelled prompts cycle through these methods, the graph forms, the samplers and the clients.
# Methods with iterative refinement are cancelled in step 2, one of their refinement points at 8 steps
# (round(0.2 * 8)): CONFORM's fixed 20 updates there make the interrupt land inside the guidance's
# own loop; the others are cancelled in step 1, where it lands in the step's guided update or the
# step's end.
CANCEL_METHODS = ("CONFORM", "AI-T2I", "Attend-and-Excite", "A-STAR", "Divide & Bind", "AI-T2I isolation only",
                  "AI-T2I aggregation only")
REFINING = {"Attend-and-Excite", "Divide & Bind", "CONFORM"}
SCENES = (("a red circle and a blue square", "circle, square", "red:circle, blue:square"),
          ("a green triangle and a yellow circle", "triangle, circle", "green:triangle"),
          ("a blue square and a red triangle", "square, triangle", ""),
          ("a yellow circle and a green square", "circle, square", "yellow:circle, green:square"))
# The node whose progress a cancel watches and which must report the interrupt, and its LATENT.
GUIDED_NODE = {"ksampler": "6", "custom": "11", "comparison": "6"}
START_PROBE, END_PROBE, PATCHED_PROBE = "90", "91", "92"
PATCH_NODE = "4"  # 'AI-T2I Attention Patch' in the custom-sampling graph


# -- the prompts ----------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    index: int
    kind: str
    method: str
    sampler: str
    seed: int
    batch: int
    scene: int
    cancel_at: Optional[int] = None  # cancel in this step: when the guided sampler reports this many done
    client: int = 0
    prompt_id: str = ""
    number: Optional[int] = None
    status: Optional[str] = None  # success, interrupted, error
    message: dict = dataclasses.field(default_factory=dict)
    progress: list = dataclasses.field(default_factory=list)  # values the guided node reported
    interrupt_sent_after: Optional[int] = None
    interrupt_sent_at: Optional[float] = None
    queued_at: float = 0.0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None

    def label(self) -> str:
        cancel = f", cancelled in step {self.cancel_at}" if self.cancel_at is not None else ""
        return (f"prompt {self.index} (#{self.number}, client {self.client}, {self.kind}, {self.method}, {self.sampler}, "
                f"seed {self.seed}, batch {self.batch}{cancel})")

    def graph(self) -> dict:
        text, subjects, attributes = SCENES[self.scene]
        common = dict(seed=self.seed, steps=STEPS, cfg=5.0, size=128, sampler=self.sampler, method=self.method,
                      batch=self.batch, prefix=f"soak_{self.index}")
        if self.kind == "ksampler":
            g = ksampler_graph(TINY, text, subjects, attributes, **common)
        elif self.kind == "comparison":
            g = comparison_graph(TINY, text, subjects, attributes, **common)
        else:
            g = custom_sampling_graph(TINY, text, subjects, attributes, end_percent=END_PERCENT, **common)
        return with_probes(g, latent=[GUIDED_NODE[self.kind], 0], patched=self.kind == "custom")


def with_probes(graph: dict, latent: list, patched: bool) -> dict:
    """The probe in the model chain right after the loader (it hands the same MODEL on, so it
    reports what the previous prompts left on the cached model before this one samples), a probe on
    the loader's model after the guided sampler, and (patched) one on the patched copy after it."""
    for node in graph.values():
        for name, value in node["inputs"].items():
            if value == ["1", 0]:
                node["inputs"][name] = [START_PROBE, 0]
    graph[START_PROBE] = {"class_type": "SoakStateProbe", "inputs": {"model": ["1", 0], "label": "start",
                                                                     "clip": ["1", 1]}}
    graph[END_PROBE] = {"class_type": "SoakStateProbe",
                        "inputs": {"model": [START_PROBE, 0], "label": "end", "after": latent, "clip": ["1", 1]}}
    if patched:
        graph[PATCHED_PROBE] = {"class_type": "SoakStateProbe",
                                "inputs": {"model": [PATCH_NODE, 0], "label": "patched", "after": latent}}
    return graph


def plan(n: int) -> list[Job]:
    """n jobs: the first WARMUP cover every graph form, method and sampler (and a batch of 2), the
    rest are drawn; CANCELS of those after the warm-up are cancelled, spread over the run, never
    the last one (the one after a cancel must run), each a different mix (CANCEL_METHODS)."""
    rng = random.Random(20260525)
    jobs = []
    for i in range(n):
        if i < WARMUP:
            kind, method, sampler = KINDS[i % 3], METHODS[i % len(METHODS)], SAMPLERS[i % len(SAMPLERS)]
            batch = 2 if i in (4, 9) else 1
        else:
            kind, method, sampler = rng.choice(KINDS), rng.choice(METHODS), rng.choice(SAMPLERS)
            batch = 2 if rng.random() < 0.2 else 1
        jobs.append(Job(i, kind, method, sampler, seed=rng.randrange(2 ** 32), batch=batch, scene=i % len(SCENES),
                        client=i % CLIENTS))
    if n > WARMUP + 1:
        span = n - 1 - WARMUP
        for k in range(CANCELS):
            job = jobs[WARMUP + (k * span) // CANCELS]
            job.kind, job.sampler, job.client = KINDS[k % len(KINDS)], SAMPLERS[k % len(SAMPLERS)], k % CLIENTS
            job.method = CANCEL_METHODS[k % len(CANCEL_METHODS)]
            job.cancel_at = 2 if job.method in REFINING else 1  # the step underway when it is cancelled
    return jobs


# -- the clients ----------------------------------------------------------------------------

class Client:
    """One browser-like client: its own client id and websocket; it queues its jobs, keeping up
    to WINDOW of them in the server's queue, and cancels those marked to be cancelled."""

    def __init__(self, session, url: str, index: int, jobs: list[Job], log: list):
        self.session, self.url, self.index, self.jobs, self.log = session, url, index, jobs, log
        self.client_id = f"soak-{index}-{uuid.uuid4().hex[:8]}"
        self.by_id = {j.prompt_id: j for j in jobs}
        self.done = {j.prompt_id: asyncio.Event() for j in jobs}
        self.window = asyncio.Semaphore(WINDOW)
        self.last_message = time.monotonic()
        self.ws = None
        self.interrupts: list = []

    async def connect(self):
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self.ws = await self.session.ws_connect(ws_url, heartbeat=30, timeout=aiohttp.ClientWSTimeout(ws_close=10))

    async def read(self):
        async for msg in self.ws:
            self.last_message = time.monotonic()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue  # binary previews
            event = json.loads(msg.data)
            kind, data = event.get("type"), event.get("data") or {}
            job = self.by_id.get(data.get("prompt_id"))
            if job is None:
                continue
            if kind == "execution_start":
                job.started_at = time.monotonic()
            elif kind == "progress" and data.get("node") == GUIDED_NODE[job.kind]:
                job.progress.append(data["value"])
                if job.cancel_at is not None and job.interrupt_sent_after is None and data["value"] >= job.cancel_at:
                    job.interrupt_sent_after = data["value"]
                    job.interrupt_sent_at = time.monotonic()
                    self.interrupts.append(asyncio.ensure_future(self.interrupt(job)))
            elif kind in ("execution_success", "execution_interrupted", "execution_error"):
                job.status = {"execution_success": "success", "execution_interrupted": "interrupted",
                              "execution_error": "error"}[kind]
                job.message = data
                job.finished_at = time.monotonic()
                self.log.append(job)
                self.done[job.prompt_id].set()
                self.window.release()

    async def interrupt(self, job: Job):
        async with self.session.post(f"{self.url}/interrupt", json={"prompt_id": job.prompt_id}) as r:
            assert r.status == 200, f"POST /interrupt for {job.label()} answered {r.status}"

    async def queue(self, jobs: list[Job]):
        for job in jobs:
            await self.window.acquire()
            job.queued_at = time.monotonic()
            body = {"prompt": job.graph(), "client_id": self.client_id, "prompt_id": job.prompt_id}
            async with self.session.post(f"{self.url}/prompt", json=body) as r:
                answer = await r.json(content_type=None)
                assert r.status == 200, f"the server refused {job.label()}: {r.status} {answer}"
            job.number = answer["number"]

    async def wait(self, jobs: list[Job]):
        await asyncio.gather(*(self.done[j.prompt_id].wait() for j in jobs))


async def run_jobs(url: str, clients_jobs: list[list[Job]], phases: list[set[int]], between) -> list[Job]:
    """Run the jobs phase by phase (each phase: the job indices in it), both clients queueing
    concurrently; between(phase_number) runs after each phase with the server idle. Returns the
    jobs in the order they finished."""
    log: list[Job] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [Client(session, url, i, jobs, log) for i, jobs in enumerate(clients_jobs)]
        for c in clients:
            await c.connect()
        readers = [asyncio.ensure_future(c.read()) for c in clients]
        try:
            deadline = time.monotonic() + SOAK_TIMEOUT_S
            for p, phase in enumerate(phases):
                work = asyncio.gather(*(c.queue([j for j in c.jobs if j.index in phase]) for c in clients),
                                      *(c.wait([j for j in c.jobs if j.index in phase]) for c in clients))
                while not work.done():
                    await asyncio.wait([work, *readers], timeout=5, return_when=asyncio.FIRST_COMPLETED)
                    dead = [r for r in readers if r.done()]
                    if dead and not work.done():
                        work.cancel()
                        error = dead[0].exception() if not dead[0].cancelled() else None
                        pytest.fail(f"a websocket closed while prompts were still out ({error!r}); "
                                    f"see {ARTIFACTS / 'server.log'}")
                    quiet = time.monotonic() - max(c.last_message for c in clients)
                    left = [j.label() for c in clients for j in c.jobs if j.index in phase and j.status is None]
                    if not work.done() and (quiet > STALL_TIMEOUT_S or time.monotonic() > deadline):
                        work.cancel()
                        why = (f"no websocket message for {quiet:.0f} s" if quiet > STALL_TIMEOUT_S
                               else f"the soak ran past {SOAK_TIMEOUT_S:.0f} s")
                        pytest.fail(f"{why} with {len(left)} prompts unfinished (first: {left[:3]}); "
                                    f"see {ARTIFACTS / 'server.log'}")
                work.result()  # a refused prompt fails here with its message
                for c in clients:
                    await asyncio.gather(*c.interrupts)  # a refused interrupt fails here
                await asyncio.get_running_loop().run_in_executor(None, between, p)
        finally:
            for r in readers:
                r.cancel()
            for c in clients:
                await c.ws.close()
    return log


# -- reading the server ---------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    psutil = pytest.importorskip("psutil", reason="no /proc and no psutil: the server's memory cannot be read")
    return psutil.Process(pid).memory_info().rss


def wait_idle(url: str) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        q = get_json(f"{url}/queue", timeout=10)
        if not q["queue_running"] and not q["queue_pending"]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the server's queue is not empty {IDLE_TIMEOUT_S} s after the last prompt finished: {q}")
        time.sleep(0.2)


def idle_rss(server) -> int:
    """The server's resident memory once its queue is empty and its periodic collection ran: the
    median of five reads over a second."""
    wait_idle(server.url)
    time.sleep(GC_SETTLE_S)
    reads = []
    for _ in range(5):
        reads.append(rss_bytes(server.pid))
        time.sleep(0.2)
    return int(statistics.median(reads))


def history(url: str, prompt_id: str) -> dict:
    entry = get_json(f"{url}/history/{prompt_id}", timeout=30).get(prompt_id)
    assert entry is not None, f"prompt {prompt_id} finished but is not in the server's /history"
    return entry


def run_one(server, graph: dict, what: str) -> dict:
    """Queue one graph and wait for it (HTTP only); its /history entry, which must be a success."""
    prompt_id = str(uuid.uuid4())
    answer = post_json(f"{server.url}/prompt", {"prompt": graph, "client_id": "soak-single", "prompt_id": prompt_id})
    assert answer and answer.get("prompt_id") == prompt_id, f"the server refused {what}: {answer}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        entry = get_json(f"{server.url}/history/{prompt_id}", timeout=30).get(prompt_id)
        status = (entry or {}).get("status") or {}
        if status.get("completed") or status.get("status_str") == "error":
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not finish in {RUN_TIMEOUT_S} s; see {server.log_path}")
        time.sleep(0.1)
    assert status.get("status_str") == "success", f"{what} failed: {status.get('messages')}"
    return entry


def probe_report(entry: dict, node: str) -> dict:
    out = entry["outputs"].get(node)
    assert out and out.get("text"), f"probe node {node} gave no report (outputs: {sorted(entry['outputs'])})"
    return json.loads(out["text"][0])


def describe(findings: list[dict]) -> str:
    return "; ".join(f"{f['kind']} at {f['where']}: {f['what']}" for f in findings[:8]) + (
        f" (and {len(findings) - 8} more)" if len(findings) > 8 else "")


def saved_images(server, entry: dict) -> dict[str, bytes]:
    """node id -> the bytes of the images it saved, in order, for every SaveImage output."""
    files = {}
    for node, out in sorted(entry["outputs"].items()):
        for i, img in enumerate(out.get("images", [])):
            if img.get("type") == "output":
                files[f"{node}/{i}"] = (server.base / "output" / img["subfolder"] / img["filename"]).read_bytes()
    return files


def texts(entry: dict) -> dict[str, list]:
    """The text outputs (loss logs, map legends) of every node but the probes."""
    return {node: out["text"] for node, out in entry["outputs"].items()
            if "text" in out and node not in (START_PROBE, END_PROBE, PATCHED_PROBE)}


# -- fixtures ---------------------------------------------------------------------------------

def probe_graph() -> dict:
    """The loader's model (and CLIP) and a patched copy of the model, each probed (no sampling)."""
    g = model_source(TINY)
    g.update({"2": {"class_type": "SoakStateProbe", "inputs": {"model": ["1", 0], "label": "loader",
                                                               "clip": ["1", 1]}},
              "3": {"class_type": "AIT2IAttentionPatch", "inputs": {"model": ["1", 0]}},
              "4": {"class_type": "SoakStateProbe", "inputs": {"model": ["3", 0], "label": "patched"}}})
    return g


@pytest.fixture(scope="module")
def server():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with comfy_server(ARTIFACTS / "server.log", {PACK_FOLDER: ROOT, PROBE_FOLDER: HERE / "state_probe"},
                      prefix="ai_t2i_soak_") as running:
        info = running.object_info
        missing = [n for n in ("SoakStateProbe", "SoakStateLeaver", "AIT2ITinyModelLoader", "AIT2IKSampler")
                   if n not in info]
        assert not missing, f"the server did not register {missing}; see {running.log_path}"
        kind, *opts = info["AIT2ITinyModelLoader"]["input"]["required"]["model_name"]
        # A V1 combo lists its options in place of the type; a V3 one says COMBO and lists them after.
        choices = opts[0].get("options", []) if kind == "COMBO" else kind
        assert TINY["tiny"] in choices, (f"the tiny model loader does not list {TINY['tiny']} from the pack's "
                                         f"models/ folder (it lists {choices})")
        # Before anything has sampled: what the fresh cached model and a patched copy look like.
        running.fresh = run_one(running, probe_graph(), "the probe graph on the fresh server")
        yield running


def legitimate_patch_findings(report: dict) -> tuple[list, list]:
    """(what 'AI-T2I Attention Patch' may put on its copy: its marker key and one unwrapped
    cross-attention hook per attn2 slot; everything else)."""
    ok, other = [], []
    for f in report["findings"]:
        if f["kind"] == "key" and f["where"] == "model_options['ai_t2i_patch']":
            ok.append(f)
        elif (f["kind"] == "pack_object" and f["where"].startswith("model_options['transformer_options']"
                                                                    "['patches_replace']['attn2']")
              and "CrossAttentionHook" in f["what"] and "wrapped=None" in f["what"]):
            ok.append(f)
        else:
            other.append(f)
    return ok, other


# -- the tests --------------------------------------------------------------------------------

def test_probe_finds_the_patch_on_a_patched_copy_and_nothing_on_the_loaders_model(server):
    """The probe can fail: on the patched copy it must find the patch's marker and its hooks
    (and nothing else), while the loader's own output, which the cache keeps, is clean."""
    loader, patched = probe_report(server.fresh, "2"), probe_report(server.fresh, "4")
    assert loader["findings"] == [], f"the tiny model loader's fresh output already carries state: {describe(loader['findings'])}"
    ok, other = legitimate_patch_findings(patched)
    hooks = [f for f in ok if f["kind"] == "pack_object"]
    assert other == [], f"the patched copy carries more than the attention patch: {describe(other)}"
    assert any(f["kind"] == "key" for f in ok), "the probe did not see the attention patch's marker on the patched copy"
    assert len(hooks) >= 2, f"the probe saw {len(hooks)} cross-attention hooks on the patched copy; the tiny UNet has several"
    assert patched["module_id"] == loader["module_id"] and patched["model_id"] != loader["model_id"], (
        "the patched copy should be a new patcher around the loader's own UNet")


def test_soak(server):
    assert PROMPTS > WARMUP + 1, (f"AI_T2I_SOAK_PROMPTS={PROMPTS}: the soak needs more than {WARMUP + 1} prompts "
                                  f"(the memory baseline is read after {WARMUP}, and a cancel needs a prompt after it)")
    jobs = plan(PROMPTS)
    for j in jobs:
        j.prompt_id = str(uuid.uuid4())
    per_client = [[j for j in jobs if j.client == c] for c in range(CLIENTS)]
    phases = [set(range(min(WARMUP, PROMPTS))), set(range(WARMUP, PROMPTS))]
    rss: dict[int, int] = {}
    t0 = time.monotonic()
    log = asyncio.run(asyncio.wait_for(
        run_jobs(server.url, per_client, [p for p in phases if p],
                 lambda p: rss.__setitem__(p, idle_rss(server))),
        SOAK_TIMEOUT_S + 4 * (IDLE_TIMEOUT_S + GC_SETTLE_S + 10)))
    wall_s = time.monotonic() - t0
    by_number = sorted(jobs, key=lambda j: j.number)
    problems = []

    # Every prompt completes, or (exactly the cancelled ones) reports the interrupt from inside a guided step.
    for j in jobs:
        if j.status == "error":
            problems.append(f"{j.label()} failed: {j.message.get('exception_type')}: {j.message.get('exception_message')}")
        elif j.cancel_at is None and j.status != "success":
            problems.append(f"{j.label()} was not cancelled but ended {j.status}")
        elif j.cancel_at is not None and j.status != "interrupted":
            sent = (f"the interrupt was sent when {j.interrupt_sent_after} steps were done"
                    if j.interrupt_sent_after is not None else "no interrupt was sent: the guided sampler never "
                    f"reported {j.cancel_at} steps done")
            problems.append(f"{j.label()} ended {j.status}, not interrupted; {sent} (progress seen: {j.progress})")
        elif j.status == "interrupted":
            running = max(j.progress, default=0)  # steps done when it stopped: step `running` was underway
            if j.message.get("node_id") != GUIDED_NODE[j.kind]:
                problems.append(f"{j.label()} reported the interrupt from node {j.message.get('node_id')} "
                                f"({j.message.get('node_type')}), not from its guided sampler {GUIDED_NODE[j.kind]}")
            if not running < GUIDED_STEPS:
                problems.append(f"{j.label()} was interrupted in step {running}, past the guided steps 0..{GUIDED_STEPS - 1}")
            messages = [m[0] for m in history(server.url, j.prompt_id)["status"].get("messages", [])]
            if "execution_interrupted" not in messages:
                problems.append(f"{j.label()}: /history does not record the interrupt (messages: {messages})")

    # The prompt the server ran right after each interrupted one succeeds.
    after_cancel = []
    for a, b in zip(by_number, by_number[1:]):
        if a.status == "interrupted":
            after_cancel.append(b)
            if b.status != "success":
                problems.append(f"{b.label()}, run right after the interrupted {a.label()}, ended {b.status}")

    # No AI-T2I state on the cached model, before and after each prompt's sampling; the patched copy exact.
    fresh_loader, fresh_patched = probe_report(server.fresh, "2"), probe_report(server.fresh, "4")
    model_ids, clip_ids = set(), set()
    for j in jobs:
        if j.status != "success":
            continue
        entry = history(server.url, j.prompt_id)
        for node, when in ((START_PROBE, "before its sampling"), (END_PROBE, "after its sampling")):
            report = probe_report(entry, node)
            model_ids.add((report["model_id"], report["module_id"]))
            if report["findings"]:
                problems.append(f"{j.label()}: the cached tiny model carries AI-T2I state {when}: "
                                f"{describe(report['findings'])}")
            clip_ids.add(report["clip_id"])
            if report["clip_findings"] != fresh_loader["clip_findings"]:
                problems.append(f"{j.label()}: the cached CLIP differs from the fresh one {when}: "
                                f"{describe(report['clip_findings'])}")
        if j.kind == "custom":
            report = probe_report(entry, PATCHED_PROBE)
            if report["findings"] != fresh_patched["findings"]:
                ok, other = legitimate_patch_findings(report)
                problems.append(f"{j.label()}: after guided sampling its patched copy differs from a fresh patched "
                                f"copy: {describe(other) or describe(ok)}")
    if model_ids != {(fresh_loader["model_id"], fresh_loader["module_id"])}:
        problems.append(f"the loader's model was not the one object the cache keeps throughout "
                        f"({len(model_ids)} different models seen), so the state check saw fresh models")
    if clip_ids != {fresh_loader["clip_id"]}:
        problems.append(f"the loader's CLIP was not the one object the cache keeps throughout ({len(clip_ids)} seen)")

    # Re-runs after the soak give what the same prompts gave before it.
    reruns = [j for j in (next((j for j in jobs if j.kind == k and j.status == "success"), None) for k in KINDS) if j]
    reruns += [j for j in after_cancel[:1] if j.status == "success" and j not in reruns]
    for j in reruns:
        before = history(server.url, j.prompt_id)
        again = run_one(server, j.graph(), f"the re-run of {j.label()}")
        a, b = saved_images(server, before), saved_images(server, again)
        if not a or sorted(a) != sorted(b) or any(a[k] != b[k] for k in a):
            problems.append(f"re-running {j.label()} after the soak saved different images "
                            f"({[k for k in a if a.get(k) != b.get(k)] or (sorted(a), sorted(b))})")
        if texts(before) != texts(again):
            problems.append(f"re-running {j.label()} after the soak gave a different loss log")

    # Memory: after all prompts, within 5 % of after the first WARMUP.
    growth = (rss[1] - rss[0]) / rss[0] if len(rss) == 2 else None
    interrupted = [j for j in jobs if j.status == "interrupted"]
    report = {
        "prompts": PROMPTS, "clients": CLIENTS, "steps": STEPS, "guided_steps": GUIDED_STEPS,
        "wall_s": round(wall_s, 1), "soak_without_idle_waits_s": round(wall_s - len(rss) * (GC_SETTLE_S + 1), 1),
        "rss_after_warmup_mb": round(rss.get(0, 0) / 2 ** 20, 1),
        "rss_after_all_mb": round(rss.get(1, 0) / 2 ** 20, 1),
        "rss_growth": None if growth is None else round(growth, 4),
        "succeeded": sum(j.status == "success" for j in jobs), "interrupted": len(interrupted),
        "cancels": [{"prompt": j.index, "kind": j.kind, "method": j.method, "sampler": j.sampler,
                     "step": max(j.progress, default=0),
                     "interrupt_to_stop_ms": round(1000 * (j.finished_at - j.interrupt_sent_at))} for j in interrupted],
        "mean_prompt_s": round(statistics.mean(j.finished_at - j.started_at for j in jobs
                                               if j.status == "success" and j.started_at), 2),
        "by_kind": {k: sum(j.kind == k for j in jobs) for k in KINDS},
        "by_method": {m: sum(j.method == m for j in jobs) for m in METHODS},
        "by_sampler": {s: sum(j.sampler == s for j in jobs) for s in SAMPLERS},
        "clients_interleaved": sum(a.client != b.client for a, b in zip(by_number, by_number[1:])),
        "reruns_compared": len(reruns), "finished_in_order": [j.number for j in log] == sorted(j.number for j in log),
        "problems": problems,
    }
    (ARTIFACTS / "soak_report.json").write_text(json.dumps(report, indent=1))
    print(f"\nsoak: {json.dumps({k: v for k, v in report.items() if k != 'problems'})}")

    assert not problems, f"{len(problems)} problems in the soak (report: {ARTIFACTS / 'soak_report.json'}):\n" + "\n".join(problems)
    assert len(interrupted) == CANCELS, f"{len(interrupted)} prompts were interrupted, {CANCELS} were cancelled"
    assert growth is not None and growth <= MEMORY_TOLERANCE, (
        f"the server's resident memory grew by {100 * growth:.1f} % between the first {WARMUP} prompts "
        f"({report['rss_after_warmup_mb']} MB) and all {PROMPTS} ({report['rss_after_all_mb']} MB): more than "
        f"{100 * MEMORY_TOLERANCE:.0f} %, so something is kept per prompt")


def test_probe_reports_hooks_and_gradients_left_on_the_shared_unet(server):
    """The probe can fail on the module side too: a forward hook, an autograd-capable parameter and a
    .grad left on the cached model's UNet (through a clone: the UNet is shared) are reported; once
    removed, the cached model is clean again. Runs last: it dirties the cached model on purpose."""
    def graph(mode):
        g = model_source(TINY)
        g.update({"2": {"class_type": "SoakStateLeaver", "inputs": {"model": ["1", 0], "mode": mode}},
                  # the leaver hands the loader's model on unchanged: this probes the cached model after it
                  "3": {"class_type": "SoakStateProbe", "inputs": {"model": ["2", 0], "label": mode}}})
        return g

    left = probe_report(run_one(server, graph("leave"), "the leaver graph"), "3")
    kinds = {f["kind"] for f in left["findings"]}
    assert {"hook", "requires_grad", "grad"} <= kinds, (
        f"the probe missed state deliberately left on the cached model's UNet; it reported: {describe(left['findings'])}")
    undone = run_one(server, graph("undo"), "the undo graph")
    assert probe_report(undone, "3")["findings"] == [], (
        f"after the leaver removed its state the probe still reports: {describe(probe_report(undone, '3')['findings'])}")
