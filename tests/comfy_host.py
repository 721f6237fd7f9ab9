"""The real ComfyUI host (COMFYUI_PATH or the one tools/setup.sh installs) and this
pack imported the way ComfyUI imports a custom node folder."""
import importlib.util
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = pathlib.Path(os.environ.get("COMFYUI_PATH", ROOT / ".host" / "ComfyUI")).resolve()
PACK_NAME = "ai_t2i_pack"



def _import_host():
    if not (HOST / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {HOST}: run tools/setup.sh or set COMFYUI_PATH")
    if str(HOST) not in sys.path:
        sys.path.insert(0, str(HOST))
    # The host parses its command line at import; keep pytest's arguments away from it.
    import torch
    # The tests run on the CPU; the benchmark uses a GPU where there is one.
    argv, sys.argv = sys.argv, [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import utils.install_util  # noqa: F401  (before `nodes` puts comfy/ on sys.path)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = argv


def import_pack():
    """The pack as a package (relative imports work), as ComfyUI loads custom_nodes/<pack>."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    _import_host()
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
