"""A real ComfyUI server for the tests that talk to it over HTTP (the browser test, the soak):
started as a user starts it (main.py --cpu --listen 127.0.0.1 --port <free> ...), on a fresh
temporary base directory whose custom_nodes/ holds only links to the folders a test names
(this checkout, and for the soak a test-only probe node). So the server runs this code,
wherever the checkout is and whatever the host's own custom_nodes/ links to, and its output,
input, temp and user settings stay out of the host folder.

(Not named server.py: the host has a server.py of its own, and the host tests put the host
folder first on sys.path, so `import server` would find that one in a whole-suite run.)
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = pathlib.Path(os.environ.get("COMFYUI_PATH", ROOT / ".host" / "ComfyUI")).resolve()
PACK_FOLDER = "ai_t2i"  # the folder name under custom_nodes/, as tools/setup.sh links it
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url: str, data, timeout: float = 10.0):
    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body.strip() else None


@dataclass
class Server:
    url: str
    port: int
    base: pathlib.Path  # the --base-directory (output/ is where SaveImage writes)
    proc: subprocess.Popen
    log_path: pathlib.Path
    object_info: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def comfy_server(log_path: pathlib.Path, custom_nodes: Optional[Mapping[str, pathlib.Path]] = None,
                 settings: Optional[dict] = None, extra_args: tuple[str, ...] = (),
                 env: Optional[Mapping[str, str]] = None, prefix: str = "ai_t2i_server_",
                 start_timeout_s: float = START_TIMEOUT_S) -> Iterator[Server]:
    """A ComfyUI server on a free loopback port, answering /object_info, for the with-block.

    custom_nodes: folder name under custom_nodes/ -> the folder it links to (default: this
    checkout as PACK_FOLDER). settings: the user's comfy.settings.json. The server's stdout and
    stderr go to log_path. On exit the server is terminated (killed after STOP_TIMEOUT_S) and
    the base directory removed."""
    if not (HOST / "main.py").is_file():
        pytest.fail(f"no ComfyUI at {HOST}: run tools/setup.sh or set COMFYUI_PATH")
    custom_nodes = {PACK_FOLDER: ROOT} if custom_nodes is None else custom_nodes
    log_path = pathlib.Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    (base / "custom_nodes").mkdir()
    for name, target in custom_nodes.items():
        (base / "custom_nodes" / name).symlink_to(pathlib.Path(target).resolve(), target_is_directory=True)
    if settings is not None:
        path = base / "user" / "default" / "comfy.settings.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(settings))
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, str(HOST / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port",
                             str(port), "--disable-auto-launch", "--base-directory", str(base), *extra_args],
                            cwd=str(HOST), stdout=log, stderr=subprocess.STDOUT,
                            env=None if env is None else {**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the ComfyUI server exited with {proc.returncode} while starting; see {log_path}")
            try:
                info = get_json(f"{url}/object_info", timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the ComfyUI server did not answer in {start_timeout_s:.0f} s; see {log_path}")
                time.sleep(1)
        yield Server(url=url, port=port, base=base, proc=proc, log_path=log_path, object_info=info)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
