"""Host fixtures (real ComfyUI, random-weight model files). Importing host_fixtures loads the
pack the way ComfyUI does, as the package `ai_t2i_pack` (comfy_host.PACK_NAME), before any test
module here is collected: test modules import the pack's modules by that name
(`from ai_t2i_pack.nodes.host import families`)."""
import pytest

from host_fixtures import *  # noqa: F401,F403
from dit_models import KINDS  # noqa: E402  (after host_fixtures: it imports the pack's modules)
from runner import encode, patch, plain


@pytest.fixture(scope="module")
def sd15_prompt(pack, sd15_small):
    """(patched MODEL, the MODEL unpatched, positive with subjects 'cat, dog', empty negative)
    on the reduced-width SD1.5 UNet."""
    model, clip = sd15_small
    return patch(pack, model), model, encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip)


@pytest.fixture(scope="module", params=list(KINDS))
def dit_model(request):
    """(kind, MODEL, width of its pooled text vector): a tiny random-weight DiT of each kind in
    dit_models.KINDS; a test taking it runs once per kind."""
    from tools import random_models as builders
    model, pooled = KINDS[request.param](builders)
    return request.param, model, pooled
