"""What a user reads before installing: the README is a short front page that keeps the set-up
commands and points into docs/, every relative link of the README and docs/ reaches a file (and
a heading, where it names one), docs/nodes.md's node reference matches the node definitions, and
pyproject.toml carries Comfy Registry metadata that the registry accepts."""
import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NODES_DOC = ROOT / "docs" / "nodes.md"
# The two set-up commands (the main job and the tests), exactly as the README gives them; .ci/run
# runs the second one's test command.
SETUP_COMMANDS = ("bash tools/setup.sh && .venv/bin/python tools/demo.py",
                  "bash tools/setup.sh && .venv/bin/python -m pytest -q")
FRONT_PAGE_LINES = 200
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def documents() -> list[pathlib.Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The link targets of markdown text that point into the repository (not URLs or mail)."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped but
    hyphens, spaces to hyphens; repeats get -1, -2, ..."""
    anchors, seen = set(), {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} +(.*?) *#*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        anchors.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return anchors


@pytest.fixture(scope="module")
def host():
    from tools.comfy_runner import Host
    return Host()


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_node_reference_matches_the_nodes(host):
    from tools.node_reference import generated_block, render
    block = generated_block(NODES_DOC.read_text())
    assert block is not None, "docs/nodes.md lost its node reference markers"
    table = render(host.nodes.NODE_CLASS_MAPPINGS, host.nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert block == table, "docs/nodes.md's node reference is stale: run tools/node_reference.py --write"
    pack = [k for k in host.nodes.NODE_CLASS_MAPPINGS if k.startswith("AIT2I")]
    assert len(pack) >= 6 and all(f"`{k}`" in block for k in pack)


def test_render_lists_inputs_and_outputs():
    from tools.node_reference import render

    class Node:
        CATEGORY = "sampling/AI-T2I"
        RETURN_TYPES = ("LATENT", "IMAGE")
        RETURN_NAMES = ("LATENT", "attention_maps")

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",), "steps": ("INT", {"default": 50}),
                                 "metric": (["euclidean", "cosine"], {"default": "euclidean"})},
                    "optional": {"images": ("IMAGE",)}}

    row = render({"AIT2IExample": Node, "KSampler": Node}, {"AIT2IExample": "Example"}).splitlines()[3:-1]
    assert row == ["| **Example**<br>`AIT2IExample`, sampling/AI-T2I | `model` MODEL<br>`steps` INT = 50<br>"
                   "`metric` one of euclidean / cosine, default euclidean<br>`images` IMAGE (optional) | "
                   "`LATENT`<br>`attention_maps` IMAGE |"]  # only the pack's nodes


def test_readme_is_a_front_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= FRONT_PAGE_LINES, f"README.md has {len(lines)} lines; keep it to {FRONT_PAGE_LINES} and move detail to docs/"
    for command in SETUP_COMMANDS:
        assert any(line.startswith(command) for line in lines), f"README.md lost the set-up command {command!r}"
    assert "docs/nodes.md" in relative_links(text), "README.md must link the full node reference, docs/nodes.md"
    ci = (ROOT / ".ci" / "run").read_text()
    assert SETUP_COMMANDS[1].split("&& ")[1] in ci, "CI must run the README's test command"


def test_every_relative_link_reaches_a_file_and_heading():
    broken = []
    for doc in documents():
        for target in relative_links(doc.read_text()):
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_and_anchor_helpers():
    text = "See ![fig](docs/a.png), [b](b.md#two-words) and [web](https://x.org/y) or [m](mailto:a@b)."
    assert relative_links(text) == ["docs/a.png", "b.md#two-words"]
    doc = "# Title\n## Two words: here\n```\n# not a heading\n```\n## Two words: here\n"
    assert heading_anchors(doc) == {"title", "two-words-here", "two-words-here-1"}


def test_every_doc_opens_with_a_summary():
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "CHANGELOG.md"]:
        lines = doc.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and lines[2] and not lines[2].startswith(("#", "|", "-", "`")) \
            and (len(lines) < 4 or lines[3] == ""), f"{doc.relative_to(ROOT)}: start with a title and a one-line summary"


def test_registry_metadata(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    # node id: letters, digits, - _ . ; no leading digit or special character, no two special in a row
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"] and ("text" in project["license"] or (ROOT / project["license"]["file"]).is_file())
    assert "urls" in project and "Repository" in project["urls"]
    # ComfyUI brings torch, numpy and einops: a registry install must not pull or replace them
    assert not any(re.match(r"(torch|numpy)\b", d) for d in project.get("dependencies", []))
    assert comfy["PublisherId"] and comfy["DisplayName"]
    for path in comfy.get("includes", []):
        assert (ROOT / path).exists(), f"[tool.comfy] includes {path!r}, which is not in the repository"


def test_readme_install_names_the_registry_id(pyproject):
    text = README.read_text()
    install = text[text.index("## Install"):]
    install = install[:install.index("\n## ", 1)]
    name = pyproject["project"]["name"]
    assert f"comfy node install {name}`" in install
    assert "Custom Nodes Manager" in install and "git clone" in install
