"""What a user reads before installing: the README's node reference matches the node
definitions, and pyproject.toml carries Comfy Registry metadata that the registry accepts."""
import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def host():
    from tools.comfy_runner import Host
    return Host()


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_readme_node_reference_matches_the_nodes(host):
    from tools.node_reference import readme_block, render
    block = readme_block(README.read_text())
    assert block is not None, "README.md lost its node reference markers"
    table = render(host.nodes.NODE_CLASS_MAPPINGS, host.nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert block == table, "README.md's node reference is stale: run tools/node_reference.py --write"
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
