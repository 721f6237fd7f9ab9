"""Host fixtures (real ComfyUI, random-weight model files)."""
from host_fixtures import *  # noqa: F401,F403
