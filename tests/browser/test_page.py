"""The pack in the real ComfyUI page: a ComfyUI server started with THIS checkout as its only
custom node folder, its page opened in headless Chromium (Playwright for Python, driving the
system's Chromium; no browser download).

Every example workflow is loaded the way a user opens a template (fetched from the server's
template route, given to the page's app), then checked: every node type is registered, no node
is flagged with errors, no missing-nodes dialog, and the page turns it into the API graph its
builder makes (so the widget order the page reads matches the UI file). Each embedded-model
example (the UNet-shaped and the Flux-shaped tiny model) is then opened again and queued from the
page as the Queue button does, and its images are awaited.
Screenshots (one per example, and the page after the run), the saved images and the server's
log go to out/browser/.

Needs /usr/bin/chromium and the `playwright` package (tools/setup.sh installs both). Without
them the test fails; it skips only when AI_T2I_NO_BROWSER=1 is set outside CI.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time

import pytest
from comfy_server import PACK_FOLDER, ROOT, comfy_server
from comfy_server import get_json as _get

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "out" / "browser"
TINY_EXAMPLES = ("ai_t2i_tiny_model_comparison", "ai_t2i_tiny_flux_comparison")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 300


def _browser_missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing"
    return None


def _require_browser():
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("AI_T2I_NO_BROWSER") == "1" and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"{missing} and AI_T2I_NO_BROWSER=1")
    pytest.fail(f"{missing}: run tools/setup.sh (it installs chromium with apt-get and playwright into .venv), "
                "or set AI_T2I_NO_BROWSER=1 to skip this test outside CI")


@pytest.fixture(scope="module")
def server():
    """A ComfyUI server whose custom_nodes/ holds only a link to this checkout (tests/comfy_server.py),
    with the first-run tutorial marked done so no templates dialog covers the page."""
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with comfy_server(ARTIFACTS / "server.log", settings={"Comfy.TutorialCompleted": True},
                      prefix="ai_t2i_page_") as running:
        yield running


@contextlib.contextmanager
def _open_page(browser, url: str):
    """The server's page in a new tab, once its app has registered the node types;
    ``page.page_errors`` collects the page's uncaught errors."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # an ad over the canvas
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph"
                               " && Object.keys(window.LiteGraph.registered_node_types).length > 100",
                               timeout=120_000)
        page.page_errors = errors
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            with _open_page(browser, server.url) as page:
                yield page
        finally:
            browser.close()


def _bare_host_errors(browser) -> list[str]:
    """The uncaught errors of the host's own page with no custom nodes at all, after the same
    settle time. Some host frontends raise one at start-up by themselves (ComfyUI 0.3.64's
    frontend 1.27.10, in its settings store); the pack must add none of its own."""
    with comfy_server(ARTIFACTS / "bare_server.log", {}, settings={"Comfy.TutorialCompleted": True},
                      prefix="ai_t2i_bare_page_") as bare:
        with _open_page(browser, bare.url) as page:
            page.wait_for_timeout(3000)
            return list(page.page_errors)


def _expected_api(graph: dict) -> dict:
    """The builder's API graph with the UI node ids the UI file gives its nodes (in graph order)."""
    ids = {k: str(i + 1) for i, k in enumerate(graph)}
    return {ids[k]: {"class_type": n["class_type"],
                     "inputs": {name: [ids[v[0]], v[1]] if isinstance(v, list) else v for name, v in n["inputs"].items()}}
            for k, n in graph.items()}


LOAD_AND_INSPECT = """async ([folder, name]) => {
    const wf = await (await fetch(`api/workflow_templates/${folder}/${name}.json`)).json();
    await window.app.loadGraphData(wf, true, true, name);
    await new Promise(r => setTimeout(r, 300));
    const graph = window.app.graph;
    const nodes = (graph.nodes ?? graph._nodes).map(n => ({
        id: n.id, type: n.type, registered: n.type in window.LiteGraph.registered_node_types,
        has_errors: !!n.has_errors, color: n.color ?? null}));
    const dialogs = [...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent !== null)
        .map(d => d.innerText.slice(0, 300));
    const prompt = await window.app.graphToPrompt();
    return {file_nodes: wf.nodes.length, nodes, dialogs, api: prompt.output};
}"""


def _queue_and_wait(page, server, finished_before: int) -> dict:
    """Queue the graph open in the page, as the Queue button does; the history entry of that
    prompt once it has finished (successfully or not)."""
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        history = _get(f"{server.url}/history")
        done = [h for h in history.values() if h.get("status", {}).get("completed") or
                h.get("status", {}).get("status_str") == "error"]
        if len(done) > finished_before:
            return done[-1]
        if time.monotonic() > deadline:
            pytest.fail(f"no finished prompt in /history after {RUN_TIMEOUT_S} s; see {ARTIFACTS / 'server.log'}")
        time.sleep(1)


def test_examples_load_in_the_page_and_the_tiny_ones_run(server, page):
    from tools.make_example_workflows import EXAMPLES

    t0 = time.monotonic()
    info = server.object_info
    ours = [k for k, v in info.items() if k.startswith("AIT2I")]
    assert ours and all(info[k]["python_module"] == f"custom_nodes.{PACK_FOLDER}" for k in ours)
    templates = _get(f"{server.url}/api/workflow_templates")
    assert sorted(templates.get(PACK_FOLDER, [])) == sorted(EXAMPLES), templates  # offered as templates

    for name in sorted(EXAMPLES):
        make = EXAMPLES[name]
        seen = page.evaluate(LOAD_AND_INSPECT, [PACK_FOLDER, name])
        assert len(seen["nodes"]) == seen["file_nodes"], name
        bad = [n for n in seen["nodes"] if not n["registered"] or n["has_errors"]]
        assert bad == [], f"{name}: nodes missing or flagged in the page: {bad}"
        assert not [d for d in seen["dialogs"] if "missing" in d.lower()], f"{name}: {seen['dialogs']}"
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        expected = _expected_api(make())
        api = seen["api"]
        assert sorted(api, key=int) == sorted(expected, key=int), name
        for key, node in expected.items():
            got = api[key]
            assert got["class_type"] == node["class_type"]
            diff = {k: (v, got["inputs"].get(k)) for k, v in node["inputs"].items() if got["inputs"].get(k) != v}
            assert diff == {}, f"{name}: the page reads node {key} ({node['class_type']}) as {diff} (builder, page)"
    loaded_s = time.monotonic() - t0

    # Open each embedded-model example again and queue it from the page.
    for i, name in enumerate(TINY_EXAMPLES):
        page.evaluate(LOAD_AND_INSPECT, [PACK_FOLDER, name])
        entry = _queue_and_wait(page, server, finished_before=i)
        assert entry["status"]["status_str"] == "success", (name, entry["status"])
        images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
        assert len(images) == 2 + 2 * 2, name  # vanilla + AI-T2I, and 2 subjects x 2 steps of maps
        for img in images:  # kept next to the screenshot
            shutil.copy(server.base / "output" / img["subfolder"] / img["filename"], ARTIFACTS / img["filename"])
        # ... and the page shows it: the Save Image nodes hold their previews.
        page.wait_for_function("""() => (window.app.graph.nodes ?? window.app.graph._nodes)
            .filter(n => n.type === 'SaveImage').every(n => n.imgs && n.imgs.length && n.imgs[0].complete
                                                         && n.imgs[0].naturalWidth > 0)""", timeout=60_000)
        page.wait_for_timeout(500)
        shot = ARTIFACTS / f"{name}_after_run.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    if page.page_errors:  # only then is the bare host's page opened, to tell its errors from ours
        bare = _bare_host_errors(page.context.browser)
        ours = [e for e in page.page_errors if e not in bare]
        assert ours == [], f"page errors with the pack: {page.page_errors}; the host's page alone: {bare}"
    print(f"\nexamples checked in {loaded_s:.1f} s, run + screenshot in {time.monotonic() - t0 - loaded_s:.1f} s: {shot}")
