"""Subjects that are textual-inversion embeddings or LoRA trigger words."""
import torch

from ai_t2i_pack import ai_t2i_attention as engine
from ai_t2i_pack.nodes.host import guided_run
from runner import encode, guided_sampler, patch, plain, run


def spy_on_maps(pack, monkeypatch):
    """Record, at every guidance pass, the averaged maps (B, H, W, T), the subjects'
    columns, and the gradient with respect to every token column of the loss terms that
    read the subjects' raw maps (isolation and aggregation: presence and attribute set
    to 0, since presence re-normalises over all text columns and so touches them all)."""
    real, seen = guided_run.subject_maps, []

    def spy(avg, groups, *args, **kw):
        probe = avg.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            maps = real(probe, groups, *args, **kw)
            preset = engine.configured_preset("AI-T2I", presence=0.0, attribute=0.0)
            total = engine.LOSSES[preset.loss](maps, preset.weights)["total"]
            grad, = torch.autograd.grad(total.sum(), probe)
        seen.append({"avg": avg.detach(), "groups": groups, "grad": grad})
        return real(avg, groups, *args, **kw)

    monkeypatch.setattr(guided_run, "subject_maps", spy)
    return seen


def assert_acts_on_all_columns(seen, record, subject: int, cols):
    """The subject's raw map is the mean over all its columns, and the loss has a
    gradient on every one of them (no column is dropped or stands for the others)."""
    assert seen and all(s["groups"].subjects[subject] == tuple(cols) for s in seen)
    first = seen[0]
    raw = record.maps[min(record.maps)][:, subject]
    torch.testing.assert_close(raw, first["avg"][..., list(cols)].mean(-1))
    grads = first["grad"][..., list(cols)]  # (B, H, W, len(cols))
    assert grads.abs().sum() > 0
    for i, c in enumerate(cols):  # every column gets the same share of the gradient
        torch.testing.assert_close(grads[..., i], grads[..., 0], msg=f"column {c} of the subject is not read like the others")
    others = set().union(*first["groups"].subjects)
    assert first["grad"][..., 1].abs().sum() == 0 and 1 not in others  # 'a': not a subject, no gradient


def test_textual_inversion_subject_spans_its_vectors(pack, sd15_small, tmp_path, monkeypatch):
    import comfy.utils
    from tools import random_models
    g = torch.Generator().manual_seed(0)
    comfy.utils.save_torch_file({"emb_params": torch.randn(3, 768, generator=g)}, str(tmp_path / "shapetoken.safetensors"))
    clip = random_models.sd1_clip(embedding_directory=str(tmp_path))
    pos = encode(pack, clip, "a photo of embedding:shapetoken and a dog", "embedding:shapetoken, dog")
    groups = pos[0][1]["ai_t2i_subjects"].groups
    assert len(groups.subjects[0]) == 3 and len(groups.subjects[1]) == 1  # 3 vectors, one token
    assert groups.subjects[0] == (4, 5, 6)  # start, a, photo, of -> the embedding's 3 columns
    seen = spy_on_maps(pack, monkeypatch)
    sampler = guided_sampler(pack)
    run(patch(pack, sd15_small[0]), sampler, pos, plain(clip), size=16, steps=2)
    assert sampler.runs.latest().maps[0].shape[1] == 2 and not sampler.runs.latest().reports[0].skipped
    assert_acts_on_all_columns(seen, sampler.runs.latest(), 0, (4, 5, 6))


def test_rare_trigger_word_split_into_tokens(pack, sd15_small):
    _, clip = sd15_small
    pos = encode(pack, clip, "a photo of sks zxqvdog next to a cat", "sks zxqvdog, cat")
    cols = pos[0][1]["ai_t2i_subjects"].groups.subjects[0]
    assert len(cols) >= 3 and list(cols) == list(range(cols[0], cols[0] + len(cols)))


def test_lora_trigger_word_through_lora_loader(pack, sd15_small, tmp_path, monkeypatch):
    """A LoRA loaded by the host's own LoraLoader node (UNet and CLIP patched), its
    trigger word as a subject: the guided run goes end to end on the LoRA-patched
    weights and the loss reads every token of the trigger word."""
    import folder_paths
    import nodes
    from tools import random_models
    model, clip = sd15_small
    (tmp_path / "loras").mkdir()
    random_models.write_random_lora(tmp_path / "loras" / "sks_subject.safetensors", model, clip)
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))
    with torch.inference_mode():
        lora_model, lora_clip = nodes.LoraLoader().load_lora(model, clip, "sks_subject.safetensors", 1.0, 1.0)
    assert lora_model.patches and lora_clip.patcher.patches  # both halves of the LoRA applied

    text, subjects = "a photo of sks zxqvdog next to a cat", "sks zxqvdog, cat"
    pos = encode(pack, lora_clip, text, subjects)
    cols = pos[0][1]["ai_t2i_subjects"].groups.subjects[0]
    assert len(cols) >= 3  # 'sks' and the rare word are split into several tokens
    with torch.inference_mode():  # the LoRA changes the trigger word's context
        assert not torch.allclose(pos[0][0], clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0])

    seen = spy_on_maps(pack, monkeypatch)
    sampler = guided_sampler(pack)
    guided = run(patch(pack, lora_model), sampler, pos, plain(lora_clip), size=16, steps=2)
    record = sampler.runs.latest()
    assert record.reports and not any(r.skipped for r in record.reports)
    assert record.subjects == ["sks zxqvdog", "cat"]
    assert_acts_on_all_columns(seen, record, 0, cols)
    vanilla = run(patch(pack, lora_model), guided_sampler(pack, strength=0.0), pos, plain(lora_clip), size=16, steps=2)
    assert torch.isfinite(guided).all() and not torch.equal(guided, vanilla)  # the update reached the image


def test_learned_embedding_through_the_loaders_embeddings_folder(pack, tmp_path, monkeypatch):
    """The pack's learned shape embedding, found by the tiny model loader node through the
    host's 'embeddings' folder list and typed as `embedding:name`: both its vectors are the
    subject, and the guided run reads both."""
    import shutil

    import folder_paths
    from comfy_host import ROOT
    src = ROOT / "models" / "embeddings" / "learned_star.safetensors"
    shutil.copy(src, tmp_path / "learned_shape.safetensors")
    folder_paths.add_model_folder_path("embeddings", str(tmp_path))
    with torch.inference_mode():
        model, clip, _ = pack.nodes.AIT2ITinyModelLoader.execute(
            model_name="ai_t2i_tiny_shapes.safetensors").result
    pos = encode(pack, clip, "a red embedding:learned_shape and a blue circle", "embedding:learned_shape, circle")
    cols = pos[0][1]["ai_t2i_subjects"].groups.subjects[0]
    assert cols == (3, 4)  # start, a, red -> the embedding's two vectors
    seen = spy_on_maps(pack, monkeypatch)
    sampler = guided_sampler(pack)
    run(patch(pack, model), sampler, pos, plain(clip), size=16, steps=4)
    assert sampler.runs.latest().map_size == (16, 16) and not any(r.skipped for r in sampler.runs.latest().reports)
    assert_acts_on_all_columns(seen, sampler.runs.latest(), 0, cols)


def test_learn_embedding_writes_a_host_loadable_file(pack, tmp_path):
    """A few steps of tools/learn_embedding.py: the vectors move away from their start
    word and the file is a standard embedding the host's CLIP loads by name."""
    import safetensors.torch
    from tools import learn_embedding
    out = tmp_path / "few_steps.safetensors"
    learn_embedding.main(["--shape", "diamond", "--steps", "3", "--images", "4", "--batch", "2", "--lr", "0.05",
                          "--check-seeds", "0", "--log-every", "1", "--out", str(out)])
    vectors = safetensors.torch.load_file(str(out))["emb_params"]
    assert vectors.shape == (2, 64) and torch.isfinite(vectors).all()
    with torch.inference_mode():
        model, clip, _ = pack.nodes.AIT2ITinyModelLoader.execute(
            model_name="ai_t2i_tiny_shapes.safetensors").result
    tokens = clip.tokenizer.tokenize_with_weights("a embedding:few_steps", tokenizer_options={})
    assert not any(torch.is_tensor(t) for t, *_ in tokens["l"][0])  # not in the loader's folders yet
    clip.tokenizer.clip_l.embedding_directory = [str(tmp_path)]
    embedded = [t for t, *_ in clip.tokenizer.tokenize_with_weights("a embedding:few_steps")["l"][0] if torch.is_tensor(t)]
    assert len(embedded) == 2 and torch.equal(torch.stack(embedded), vectors)
    square = clip.tokenizer.tokenize_with_weights("square")["l"][0][1][0]
    start = clip.cond_stage_model.clip_l.transformer.get_input_embeddings().weight[square].float()
    assert (vectors - start).norm(dim=1).min() > 0.05  # the optimiser moved both vectors
