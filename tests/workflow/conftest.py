"""Host fixtures (real ComfyUI, random-weight model files). Importing host_fixtures loads the
pack the way ComfyUI does, as the package `ai_t2i_pack` (comfy_host.PACK_NAME), before any test
module here is collected: test modules import the pack's modules by that name."""
from host_fixtures import *  # noqa: F401,F403
