"""Run API-format graphs through the real ComfyUI executor, in this process.

Used by the demo, the workflow tests and the benchmark: the same code path a ComfyUI
server takes for a queued prompt (validation, node execution under inference mode,
caching), without the HTTP server.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]


def host_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("COMFYUI_PATH", ROOT / ".host" / "ComfyUI")).resolve()


class _Server:
    """The executor reports progress and results to a server; this one keeps them."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))


def _cache_options(executor_class) -> dict:
    """The executor's cache settings as its signature asks for them: recent hosts take
    cache_args (LRU size and RAM headroom), older ones (0.3.64) a cache_size."""
    import inspect

    from comfy.cli_args import args
    params = inspect.signature(executor_class).parameters
    if "cache_args" in params:
        return {"cache_args": {"lru": args.cache_lru, "ram": getattr(args, "cache_ram", 0)}}
    return {"cache_size": args.cache_lru}


class GraphError(RuntimeError):
    pass


class Host:
    """A started host with this pack loaded as a custom node."""

    def __init__(self, output_dir: str | None = None, extra_model_dirs: dict | None = None):
        host = host_path()
        if not (host / "comfy").is_dir():
            raise RuntimeError(f"no ComfyUI at {host}: run tools/setup.sh or set COMFYUI_PATH")
        if str(host) not in sys.path:
            sys.path.insert(0, str(host))
        argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"] + (["--output-directory", output_dir] if output_dir else [])
        try:
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.cli_args  # noqa: F401
            # As main.py does, import the host's `utils` package before `nodes`, which puts
            # comfy/ on sys.path (where a plain `utils` module would shadow the package).
            import utils.install_util  # noqa: F401
            import execution
            import folder_paths
            import nodes
        finally:
            sys.argv = argv
        self.output_dir = output_dir
        if output_dir:
            folder_paths.set_output_directory(output_dir)
        for kind, path in (extra_model_dirs or {}).items():
            folder_paths.add_model_folder_path(kind, str(path))
        self.nodes, self.execution = nodes, execution
        if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
            # The host's own extra nodes (custom sampling, latent tools ...), not other packs.
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if not any(k.startswith("AIT2I") for k in nodes.NODE_CLASS_MAPPINGS):
            if not asyncio.run(nodes.load_custom_node(str(ROOT))):
                raise RuntimeError("the AI-T2I pack failed to load as a custom node (see the log above)")
        self.server = _Server()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC,
                                                 **_cache_options(execution.PromptExecutor))

    def run(self, prompt: dict) -> dict:
        """Validate and execute an API-format graph. Returns {node id: ui output}."""
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            raise GraphError(f"invalid graph: {error.get('message')} {error.get('details', '')} {node_errors}")
        self.server.messages.clear()
        self.executor.execute(prompt, prompt_id, {}, outputs)
        if not self.executor.success:
            errors = [d for e, d in self.executor.status_messages if e == "execution_error"]
            detail = errors[0] if errors else self.executor.status_messages
            raise GraphError(f"graph failed: {detail.get('exception_message', detail) if isinstance(detail, dict) else detail}")
        return self.executor.history_result["outputs"]
