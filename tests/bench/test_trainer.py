"""tools/train_tiny_model.py: the --profile table of the UNet stage's phases (on the CPU, a
few steps fine-tuning the committed model), and the grounding loss batched over examples and
subjects against the per-example loop it replaces."""
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after the host: never shadow its `nodes`

import pytest
import torch

from tools import train_tiny_model as trainer

MODEL = ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"


@pytest.mark.skipif(not MODEL.exists(), reason="the embedded model is not exported")
def test_profile_prints_each_phase_per_step_and_saves_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    trainer.main(["--stage", "unet", "--device", "cpu", "--threads", "1", "--batch", "4", "--fresh", "2",
                  "--profile", "3", "--work", str(work), "--init-from", str(MODEL),
                  "--grounding-weight", "0.01", "--content-free-end", "--log-every", "100"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| step |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["step", *trainer.PROFILE_PHASES, "total s"]
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| step |")}
    assert set(rows) == {"fill", "1", "2", "3", "mean of 2"}
    for label, line in rows.items():
        cells = [c.strip() for c in line.strip().strip("|").split("|")[1:]]
        seconds = [float(re.match(r"([0-9.]+) \((\d+)%\)", c).group(1)) for c in cells[:-1]]
        assert abs(sum(seconds) - float(cells[-1])) < 1e-3 * len(seconds)
        if label != "fill":  # a step runs every phase that does work on the CPU
            named = dict(zip(trainer.PROFILE_PHASES, seconds))
            assert all(named[p] > 0 for p in ("data", "encode", "forward", "grounding", "backward", "optimizer"))
    assert not (work / "unet.pt").exists()  # a profile is a measurement: no checkpoint written


def loop_grounding_loss(layers, masks, cols, use, floor=0.2):
    """The grounding loss as first written, one example and one object at a time: the
    definition the batched grounding_loss must reproduce."""
    token, share, separate = [], [], []
    for probs in layers:
        for b in torch.nonzero(use).flatten().tolist():
            objects = [(m, list(c)) for m, c in zip(masks[b], cols[b]) if c]
            if not objects:
                continue
            a = torch.stack([probs[b][:, c].mean(dim=-1) for _, c in objects])
            s = torch.stack([probs[b][:, c].sum(dim=-1) for _, c in objects])
            m = torch.stack([m.to(probs) for m, _ in objects])
            token.append(1.0 - (a * m).sum(-1) / a.sum(-1).clamp_min(1e-8))
            inside = (s * m).sum(-1) / m.sum(-1).clamp_min(1e-8)
            share.append((floor - inside).clamp_min(0.0) / floor)
            if len(objects) > 1:
                own = a / a.sum(0, keepdim=True).clamp_min(1e-8)
                separate.append(-((own.clamp_min(1e-6).log() * m).sum(-1) / m.sum(-1).clamp_min(1e-8)))
    zero = layers[0].sum() * 0.0
    mean = lambda xs: torch.cat(xs).mean() if xs else zero
    return {"token": mean(token), "share": mean(share), "separate": mean(separate)}


def _random_batch(g, batch=7, layers=3, pixels=16, tokens=12):
    """Random attention maps (rows sum to 1) and 0-3 objects per example with random coverage;
    some objects have no word columns (not grounded), one or two columns otherwise."""
    maps = [torch.rand(batch, pixels, tokens, generator=g, dtype=torch.float64).softmax(-1).requires_grad_(True)
            for _ in range(layers)]
    masks, cols = [], []
    for b in range(batch):
        n = int(torch.randint(0, 4, (1,), generator=g))
        masks.append(torch.rand(n, pixels, generator=g) * (torch.rand(n, pixels, generator=g) < 0.4))  # float32, as stored
        cols.append([tuple(torch.randperm(tokens - 2, generator=g)[:int(k)].add(1).tolist())
                     for k in torch.randint(0, 3, (n,), generator=g)])
    use = torch.rand(batch, generator=g) < 0.8
    return maps, masks, cols, use


@pytest.mark.parametrize("seed", range(6))
def test_batched_grounding_loss_equals_the_per_example_loop(seed):
    g = torch.Generator().manual_seed(seed)
    maps, masks, cols, use = _random_batch(g)
    mask, onehot = trainer.object_rows(masks, cols, n_tokens=maps[0].shape[-1])
    batched = trainer.grounding_loss(maps, mask, onehot, use, floor=0.3)
    looped = loop_grounding_loss(maps, masks, cols, use, floor=0.3)
    assert set(batched) == set(looped) == {"token", "share", "separate"}
    for k in looped:
        torch.testing.assert_close(batched[k], looped[k], rtol=1e-9, atol=1e-12)
        # the same gradients reach the maps
        gb = torch.autograd.grad(batched[k], maps, allow_unused=True, retain_graph=True)
        gl = torch.autograd.grad(looped[k], maps, allow_unused=True, retain_graph=True)
        for x, y in zip(gb, gl):
            torch.testing.assert_close(x if x is not None else torch.zeros_like(maps[0]),
                                       y if y is not None else torch.zeros_like(maps[0]), rtol=1e-9, atol=1e-12)


def test_batched_grounding_loss_with_nothing_to_ground_is_zero():
    g = torch.Generator().manual_seed(0)
    maps, masks, cols, _ = _random_batch(g)
    mask, onehot = trainer.object_rows(masks, cols, n_tokens=maps[0].shape[-1])
    terms = trainer.grounding_loss(maps, mask, onehot, torch.zeros(len(masks), dtype=torch.bool))
    assert all(float(v.detach()) == 0.0 for v in terms.values())
    assert all(torch.isfinite(x).all() for x in torch.autograd.grad(sum(terms.values()), maps))


def test_render_workers_hand_over_the_in_process_examples():
    """Chunks rendered by two workers (tasks of 10 examples, read ahead) are the examples the
    in-process path renders, in order; ready() says when a request would not wait."""
    local = trainer.ExampleSource(5, 0, 20)
    pool = trainer.ExampleSource(5, 2, 20)
    try:
        assert pool.piece == 10 and pool.ahead >= 4
        for start in (0, 20, 60):  # 60: a jump restarts the read-ahead
            want = local.get(start, 20)
            while not pool.ready(start, 20):
                pass
            got = pool.get(start, 20)
            assert got[0].dtype == want[0].dtype == "uint8" and (got[0] == want[0]).all()
            assert got[1] == want[1] and got[3] == want[3]
            assert all((a == b).all() for a, b in zip(got[2], want[2]))
    finally:
        pool.close()


def test_checkpoint_masks_pack_and_unpack_to_the_same_list():
    g = torch.Generator().manual_seed(1)
    masks = [torch.randint(0, 65, (n, 256), generator=g).float() / 64 for n in (1, 3, 0, 2)]
    masks.insert(2, None)  # an example stored before masks were recorded
    packed = trainer.pack_masks(masks)
    assert packed["rows"].dtype == torch.float16 and packed["rows"].shape == (6, 256)
    back = trainer.unpack_masks(packed)
    assert back[2] is None and len(back) == len(masks)
    assert all(torch.equal(a, b) for a, b in zip(masks, back) if a is not None)  # k/64 is exact in float16
    assert trainer.unpack_masks(masks) is masks  # an older checkpoint's plain list


@pytest.mark.parametrize("content_free_end", [False, True])
def test_text_encoder_on_a_token_tensor_equals_the_hosts_lists(content_free_end):
    """batch_token_input: the encoder's outputs for a (B, T) tensor of ids are the host's own
    for the same ids as lists (embeddings, attention mask, token counts, the encoding)."""
    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    cfg = tm.TinyModelConfig(content_free_end=content_free_end)
    torch.manual_seed(0)
    text = tm.build_text_model(cfg)
    trainer.init_weights(text)
    tokenizer = tm.build_tokenizer(cfg)
    captions = ["a red circle and a blue square", "", "a star", "a green heart and a cyan cross and a purple triangle"]
    tokens = trainer.tokenize(tokenizer, captions)
    clip = text.clip_l
    with torch.no_grad():
        want_parts = clip.process_tokens(tokens, "cpu")
        want = clip(tokens)
        trainer.batch_token_input(clip)
        ids = torch.tensor(tokens)
        got_parts = clip.process_tokens(ids, "cpu")
        got = clip(ids)
        assert clip(tokens)[0].equal(want[0])  # lists still take the host's own path
    assert got_parts[0].equal(want_parts[0]) and got_parts[1].equal(want_parts[1])
    assert got_parts[2] == want_parts[2] and got_parts[3] == want_parts[3] == []
    assert got_parts[1][1].sum() < got_parts[1][0].sum()  # the empty caption is masked after its end
    assert got[0].equal(want[0])
    assert (got[1] is None and want[1] is None) or got[1].equal(want[1])  # pooled output


def test_flow_sample_as_eps_input_and_back():
    """--teacher's conversion: a flow sample (1 - s) x0 + s noise is, to an eps-prediction model,
    the input (x0 + sigma noise) / sqrt(sigma^2 + 1) at sigma = s / (1 - s); an eps equal to the
    true noise turns back into the flow target noise - x0."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 4, 6, 6, generator=g, dtype=torch.float64), torch.randn(5, 4, 6, 6, generator=g,
                                                                                         dtype=torch.float64)
    s = torch.tensor([0.02, 0.3, 0.5, 0.8, 0.97], dtype=torch.float64)
    x_t = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
    sigma, x_in = trainer.flow_to_eps_input(x_t, s)
    assert torch.allclose(sigma, s / (1 - s))
    want = (x0 + sigma.view(-1, 1, 1, 1) * noise) / (sigma.view(-1, 1, 1, 1) ** 2 + 1).sqrt()
    assert torch.allclose(x_in, want, atol=1e-12)
    assert torch.allclose(trainer.eps_to_flow(noise, x_t, s), noise - x0, atol=1e-10)
    # an eps off by d moves the velocity by d / (1 - s): errors grow toward pure noise
    d = torch.randn(5, 4, 6, 6, generator=g, dtype=torch.float64)
    assert torch.allclose(trainer.eps_to_flow(noise + d, x_t, s) - (noise - x0), d / (1 - s.view(-1, 1, 1, 1)))


@pytest.mark.skipif(not MODEL.exists() or not (ROOT / "models" / "ai_t2i_tiny_flux.safetensors").exists(),
                    reason="the embedded models are not exported")
def test_teacher_velocity_is_nearer_the_data_than_noise_and_covers_its_range():
    """UnetTeacher on the committed UNet toy: its velocity at a middle level is far nearer the
    true noise - x0 than a zero prediction is (a wrong conversion or latent space lands far off),
    and levels beyond its sigma range are reported as not covered."""
    trainer._setup_paths("cpu")
    tm = trainer._import_tiny_model()
    teacher = trainer.UnetTeacher(str(MODEL), tm, torch.device("cpu"))
    cfg, _, _, taesd = trainer.load_exported(str(MODEL), tm)
    images, caps, _, _ = trainer.ExampleSource(99, 0, 8, (0.5, 0.5, 0.6)).get(0, 8)
    ids = torch.tensor(trainer.tokenize(tm.build_tokenizer(cfg), caps))
    with torch.no_grad():
        x0 = taesd.encode(trainer.to_tensor(images, "cpu") * 2 - 1).float() * cfg.latent_scale_factor
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.5] * 6 + [0.999, 0.001])
    x_t = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
    v, covered = teacher.velocity(x_t, s, ids)
    assert covered.tolist() == [True] * 6 + [False, False]
    err = (v[:6] - (noise - x0)[:6]).square().mean()
    assert err < 0.2 * (noise - x0)[:6].square().mean(), err
