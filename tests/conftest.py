"""Makes tests/ importable (comfy_host.py) and the repository root (the engine)."""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
# Appended, not prepended: the pack's own `nodes/` folder must never shadow the host's
# `nodes` module, so the host (inserted first by comfy_host) wins that name.
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.append(str(p))
