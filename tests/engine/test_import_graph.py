"""The pack's import graph, read from the source with `ast` (nothing is imported): no two of
its modules need each other, by any path, and the engine imports nothing of the host.

Every relative import counts, wherever it stands: at the top, under TYPE_CHECKING (a circle
hidden there still ties the modules together) and inside functions (a deferred import is a
circle waiting for the first call). The engine (ai_t2i_attention/) is pure torch: it must
not import ComfyUI's modules (comfy, folder_paths, ...) nor the nodes, so it can be tested
and used without a host."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("ai_t2i_attention", "nodes")  # the pack's code: the engine and the nodes with their host adapter
ENGINE = "ai_t2i_attention"
# Top-level modules of the ComfyUI host (and the pack's own nodes package, by its absolute name).
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "nodes",
                "node_helpers", "latent_preview", "server", "execution", "app", "utils"}


def module_files(root: pathlib.Path, packages=PACKAGES) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module under the given package folders of root
    (a package is named by its folder and stands for its __init__.py)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _package_of(name: str, path: pathlib.Path) -> list[str]:
    """The package a module's relative imports start from: itself for an __init__.py."""
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def relative_imports(name: str, path: pathlib.Path, source: str, modules: set[str]) -> dict[str, int]:
    """The modules a module imports by relative imports anywhere in its source -> the first line
    doing so. `from .x import a` imports x (the package x stands for its __init__) and x.a where
    that is a module; `from . import a` imports the module a, else the package's __init__.
    Targets outside `modules` are kept too (they name where an import leaves the graph)."""
    found: dict[str, int] = {}
    package = _package_of(name, path)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[:len(package) - (node.level - 1)]
        target = ".".join(base + (node.module.split(".") if node.module else []))
        if node.module:
            found.setdefault(target, node.lineno)
        for alias in node.names:
            sub = f"{target}.{alias.name}" if target else alias.name
            if sub in modules:
                found.setdefault(sub, node.lineno)
            elif not node.module:
                found.setdefault(target, node.lineno)
    return found


def absolute_imports(source: str) -> dict[str, int]:
    """Top-level names of a module's absolute imports anywhere in its source -> first line."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], node.lineno)
    return found


def import_graph(root: pathlib.Path, packages=PACKAGES) -> dict[str, dict[str, int]]:
    """Module -> {module of the graph it imports: line}, for every module under packages."""
    files = module_files(root, packages)
    graph = {}
    for name, path in files.items():
        imports = relative_imports(name, path, path.read_text(), set(files))
        graph[name] = {m: line for m, line in imports.items() if m in files and m != name}
    return graph


def find_cycle(graph) -> list[str] | None:
    """A circle of imports in graph (module -> modules it imports), as its modules with the
    first one repeated at the end; None: there is none."""
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def describe_cycle(graph, cycle: list[str], root: pathlib.Path) -> str:
    """'a -> b (a.py:3) -> a (b.py:7)': each step with the file and line that make it."""
    files = module_files(root)
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:]):
        steps.append(f"{b} ({files[a].relative_to(root).as_posix()}:{graph[a][b]})")
    return " -> ".join(steps)


def engine_host_imports(root: pathlib.Path) -> list[str]:
    """Every import of an engine module that reaches the host or the nodes: 'file:line name'."""
    files = module_files(root, (ENGINE,))
    found = []
    for name, path in files.items():
        source = path.read_text()
        where = path.relative_to(root)
        for top, line in absolute_imports(source).items():
            if top in HOST_MODULES:
                found.append(f"{where}:{line} {top}")
        for target, line in relative_imports(name, path, source, set(files)).items():
            if target != ENGINE and not target.startswith(ENGINE + "."):
                found.append(f"{where}:{line} {target or '(the pack)'}")
    return found


# ---------------------------------------------------------------- the pack

def test_no_module_of_the_pack_imports_another_in_a_circle():
    graph = import_graph(ROOT)
    assert {"ai_t2i_attention.losses", "nodes.host.families", "nodes.host.guidance_pass"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {describe_cycle(graph, cycle, ROOT)}; move what both need into a leaf module"


def test_the_engine_imports_nothing_of_the_host_or_the_nodes():
    found = engine_host_imports(ROOT)
    assert not found, ("the engine (ai_t2i_attention/) must stay pure torch, but imports: " + "; ".join(found)
                       + ". Put what touches ComfyUI in nodes/host/")


def test_engine_leaves_stay_leaves():
    graph = import_graph(ROOT, (ENGINE,))
    assert set(graph["ai_t2i_attention.weights"]) == set(), "weights.py is a leaf"
    layout_terms = set(graph["ai_t2i_attention.layout_terms"])
    assert "ai_t2i_attention.weights" in layout_terms and "ai_t2i_attention.losses" not in layout_terms
    assert set(import_graph(ROOT, ("nodes",))["nodes.host.keys"]) == set(), "nodes/host/keys.py is a leaf"


# ---------------------------------------------------------------- the reader itself, on made-up packages

def _write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_every_kind_of_relative_import_is_read(tmp_path):
    root = _write(tmp_path, {
        "ai_t2i_attention/__init__.py": "from .maps import X\n",
        "ai_t2i_attention/maps.py": "",
        "ai_t2i_attention/losses.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .maps import X\n",
        "nodes/__init__.py": "from . import ksampler, NAME\n",
        "nodes/ksampler.py": "def run():\n    from .host.sampling import go\n",
        "nodes/host/__init__.py": "",
        "nodes/host/sampling.py": "from ...ai_t2i_attention import losses\nfrom .. import ksampler\n",
    })
    graph = import_graph(root)
    assert set(graph["ai_t2i_attention.losses"]) == {"ai_t2i_attention.maps"}  # under TYPE_CHECKING
    assert set(graph["nodes"]) == {"nodes.ksampler"}  # `from . import NAME`: the package's own __init__, not an edge
    assert set(graph["nodes.ksampler"]) == {"nodes.host.sampling"}  # inside a function
    # three dots climb to the pack: the engine package's __init__ and its module; two dots: the nodes package
    assert set(graph["nodes.host.sampling"]) == {"ai_t2i_attention", "ai_t2i_attention.losses", "nodes.ksampler"}


def test_a_circle_is_found_and_named_with_its_lines(tmp_path):
    """A circle closed by an import inside a function, across two packages."""
    root = _write(tmp_path, {
        "ai_t2i_attention/__init__.py": "",
        "ai_t2i_attention/maps.py": "",
        "nodes/__init__.py": "",
        "nodes/host/__init__.py": "",
        "nodes/host/guided_run.py": "from .guidance_pass import GuidancePass\n",
        "nodes/host/guidance_pass.py": "from ...ai_t2i_attention import maps\nfrom .families import family_of\n",
        "nodes/host/families.py": "import torch\n\n\ndef family_of(m):\n    from .guided_run import prepare\n",
    })
    graph = import_graph(root)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"nodes.host.guided_run", "nodes.host.guidance_pass", "nodes.host.families"}
    text = describe_cycle(graph, cycle, root)
    assert "nodes.host.guided_run (nodes/host/families.py:5)" in text
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None


def test_an_engine_import_of_the_host_is_named(tmp_path):
    root = _write(tmp_path, {
        "ai_t2i_attention/__init__.py": "from .maps import X\n",
        "ai_t2i_attention/maps.py": "import torch\n\n\ndef f():\n    import comfy.samplers\n",
        "ai_t2i_attention/tokens.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..nodes.host import x\n",
        "ai_t2i_attention/record.py": "import folder_paths\n",
    })
    assert sorted(engine_host_imports(root)) == ["ai_t2i_attention/maps.py:5 comfy",
                                                 "ai_t2i_attention/record.py:1 folder_paths",
                                                 "ai_t2i_attention/tokens.py:3 nodes.host"]
