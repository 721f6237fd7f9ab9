"""Subjects that are textual-inversion embeddings or LoRA trigger words."""
import torch

from runner import encode, guided_sampler, patch, plain, run


def test_textual_inversion_subject_spans_its_vectors(pack, sd15_small, tmp_path):
    import comfy.utils
    from tools import random_models
    g = torch.Generator().manual_seed(0)
    comfy.utils.save_torch_file({"emb_params": torch.randn(3, 768, generator=g)}, str(tmp_path / "shapetoken.safetensors"))
    clip = random_models.sd1_clip(embedding_directory=str(tmp_path))
    pos = encode(pack, clip, "a photo of embedding:shapetoken and a dog", "embedding:shapetoken, dog")
    groups = pos[0][1]["ai_t2i_subjects"].groups
    assert len(groups.subjects[0]) == 3 and len(groups.subjects[1]) == 1  # 3 vectors, one token
    assert groups.subjects[0] == (4, 5, 6)  # start, a, photo, of -> the embedding's 3 columns
    sampler = guided_sampler(pack)
    run(patch(pack, sd15_small[0]), sampler, pos, plain(clip), size=16, steps=2)
    assert sampler.last_run.maps[0].shape[1] == 2 and not sampler.last_run.reports[0].skipped


def test_rare_trigger_word_split_into_tokens(pack, sd15_small):
    _, clip = sd15_small
    pos = encode(pack, clip, "a photo of sks zxqvdog next to a cat", "sks zxqvdog, cat")
    cols = pos[0][1]["ai_t2i_subjects"].groups.subjects[0]
    assert len(cols) >= 3 and list(cols) == list(range(cols[0], cols[0] + len(cols)))
