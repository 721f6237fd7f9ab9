"""Grounding: does a subject word's cross-attention map light up where that subject is?

Every attention-guidance method acts on that property, so it is measured on its own,
for any tiny model file (the SD1-shaped UNet or the Flux-shaped DiT) and any layer set the
loss can read, on two kinds of scenes:

- renders: two-object scenes "a {colour} {shape} and a {colour} {shape}" from scenes.py
  (the training distribution), with their exact object masks, encoded by the model's
  autoencoder and noised to each noise level (fixed noise per scene) the way the host's
  sampler noises a latent (model_sampling.noise_scaling: x0 + sigma * noise for the UNet,
  (1 - sigma) * x0 + sigma * noise for the flow-matching DiT);
- own images: the model's own vanilla images of the same captions (20 euler steps, cfg
  5), where the evaluator found both subjects; masks from the evaluator's detections;
  also reported apart where both subjects have their caption's colours and where not
  (see colours_bound). With ``--methods vanilla,ai_t2i`` the same captions and seeds are
  also sampled with a guidance method (KSampler (AI-T2I), the benchmark's settings), so
  the table shows grounding before and after guidance.

Noise levels (--timesteps / --steps-at; the default follows the model's sampling):
- the UNet (eps, SD's discrete schedule): timesteps t 500, 700 and 900;
- the flow-matching DiT: the sigmas of steps 3, 6 and 9 of the 20-step "normal" schedule
  the benchmark samples with (the model's own ModelSamplingFlux sigmas: 0.898, 0.781 and
  0.647 at shift 0.5). Guidance runs over steps 0-9 of those 20; step 0 is sigma 1, where
  the noised render is the noise alone and no map can find it, so the levels are spread
  over steps 3-9. Their signal-to-noise ratios ((1 - s) / s)^2, 0.013 / 0.078 / 0.30, are
  those of the UNet's t 900 / 700 / 500 (1 / sigma^2: 0.014 / 0.090 / 0.38).

Per noise level, maps as the loss reads them (head- and layer-averaged probabilities of the
chosen layers, each subject the mean of its token columns; a DiT's joint blocks through the
pack's own recorder: the image queries' joint-attention probabilities on the text keys,
softmax over all keys, as the guidance pass reads them):
- share: mean attention of a pixel to the start token / the prompt's words / the end
  token and padding; for a DiT also to the image tokens (the rest of the joint softmax);
- own/other: a subject's mean map density inside its own object over that inside the
  other subject's object (1 = no grounding);
- pointing: the map's arg-max cell lies on its own object (coverage > 0 there and more
  than the other object's);
- cosine: cosine similarity of the two subjects' maps (1 = the same map).

On renders also ``x0 finds``: how often the model's own denoised estimate at that noise
level (the conditional prediction of the clean image, the host's calculate_denoised of the
model's output, decoded) has the pixels nearest a subject's caption colour on that
subject's object. It reads no attention: it says how much of the layout the noisy latent
still holds for this model, a yardstick for the maps' pointing.

    .venv/bin/python benchmarks/shapesbench/grounding.py --scenes 48 --layers down,down+up
    .venv/bin/python benchmarks/shapesbench/grounding.py --methods vanilla,ai_t2i --layers auto
    .venv/bin/python benchmarks/shapesbench/grounding.py --model models/ai_t2i_tiny_flux.safetensors \
        --scenes 48 --layers joint,joint+single [--steps-at 3,6,9]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))

TIMESTEPS = (500, 700, 900)  # the UNet's levels (SD's discrete schedule)
FLOW_STEPS = (3, 6, 9)  # the flow-matching DiT's levels: steps of the benchmark's schedule
SCHEDULE_STEPS = 20  # the benchmark samples 20 steps (run.py), guided over the first half
SCHEDULER = "normal"


@dataclass(frozen=True)
class NoiseLevel:
    """Where the maps are read: timestep t of an eps model's discrete schedule (its sigma
    model_sampling.sigmas[t]), or step `step` of the `of`-step schedule the benchmark
    samples with (the host's calculate_sigmas with SCHEDULER: the model's own sigmas)."""

    t: Optional[int] = None
    step: Optional[int] = None
    of: int = SCHEDULE_STEPS

    @property
    def label(self) -> str:
        """The level's key in grounding.json's rows ("renders t=500", "renders step=3")."""
        return f"t={self.t}" if self.t is not None else f"step={self.step}"

    def column(self, sigma: float) -> str:
        """The level as the table's noise column shows it."""
        return str(self.t) if self.t is not None else f"{self.step} of {self.of} (σ {sigma:.3f})"

    def sigma(self, model_sampling):
        """(1,) the level's sigma under the model's own model_sampling."""
        import comfy.model_sampling
        import comfy.samplers
        if self.t is not None:
            if not isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete):
                raise SystemExit(f"timestep {self.t}: this model's sampling ({type(model_sampling).__mro__[1].__name__}) "
                                 "has no discrete timesteps; read it at steps of its schedule (--steps-at)")
            return model_sampling.sigmas[self.t].reshape(1)
        sigmas = comfy.samplers.calculate_sigmas(model_sampling, SCHEDULER, self.of)
        if not 0 <= self.step < self.of:
            raise SystemExit(f"step {self.step} is not a step of a {self.of}-step schedule")
        return sigmas[self.step].reshape(1).float()


UNET_LEVELS = tuple(NoiseLevel(t=t) for t in TIMESTEPS)
FLOW_LEVELS = tuple(NoiseLevel(step=k) for k in FLOW_STEPS)
UNET_SETS = ("down", "down+up")  # the layer sets measured by default, per family
DIT_SETS = ("joint", "joint+single")


def split_reading(reading: str) -> tuple[str, str]:
    """A measured reading, "layer set" or "layer set@joint map rule" (a JOINT_MAP_RULES name,
    e.g. "joint@text softmax"), as (layer set, rule); the rule defaults to the pack's."""
    layer_set, _, rule = reading.partition("@")
    return layer_set, rule or "joint softmax"


def default_levels(model_sampling) -> tuple:
    """The levels of the model's sampling: flow matching (CONST: the DiT) or SD's discrete schedule."""
    import comfy.model_sampling
    return FLOW_LEVELS if isinstance(model_sampling, comfy.model_sampling.CONST) else UNET_LEVELS


def _pack_module(suffix: str):
    """A module of the pack as the host loaded it (its package name is the pack folder's)."""
    return next(m for n, m in sys.modules.items() if n.endswith(suffix) and m is not None)


def scenes_and_captions(n: int, seed: int):
    """n two-object scenes (never held-out pairs), their captions with colours, and
    the (shape, colour) subjects in caption order."""
    from benchmarks.shapesbench import scenes
    rng = np.random.default_rng([seed, 2])
    out = []
    for _ in range(n):
        scene = scenes.sample_scene(rng, 2)
        out.append((scene, scenes.caption(scene, with_colors=True), [(o.shape, o.color) for o in scene.objects]))
    return out


class Probe:
    """Attention maps of one model at chosen layers, for latents at a given sigma. The model's
    family (families.py: UNet or DiT) says where its maps are and what a pass costs; the
    recorder, hooks and pass options are the guidance pass's own."""

    def __init__(self, model_path: str | None):
        self.tiny = _pack_module("nodes.host.tiny_model")
        self.families = _pack_module("nodes.host.families")
        self.keys = _pack_module("nodes.host.keys")
        self.guidance_pass = _pack_module("nodes.host.guidance_pass")
        self.tokens = _pack_module("nodes.host.tokens")
        self.engine = _pack_module("ai_t2i_attention.tokens")
        self.recorders = _pack_module("ai_t2i_attention.maps")
        self.structure = _pack_module("nodes.host.structure")
        self.policy = _pack_module("ai_t2i_attention.layers")
        self.model, self.clip, self.vae = self.tiny.load_tiny_model(model_path)
        self.patched = self.families.install_hooks(self.model)
        self.family = self.families.family_of(self.patched.model)
        self.joint = self.family.patch_kind == "dit"  # a joint-attention model: maps over text and image keys
        self.model_sampling = self.patched.get_model_object("model_sampling")
        self.layers: dict = {}  # layer set -> the layers it reads (for this model's latent size)
        self.shares: dict = {}  # layer set -> the share of the forward a guidance pass reading them runs

    def groups(self, caption: str, subjects: list[str]):
        prompt, tokenize_word, _ = self.tokens.tokenization(self.clip, caption)
        g = self.engine.resolve(caption, prompt, tokenize_word, subjects)
        return g, prompt.text_columns()

    def cond(self, caption: str) -> dict:
        """The model's inputs for the caption beside x and sigma, as the host's sampler makes
        them from the encoded conditioning (model.extra_conds): c_crossattn (1, 77, C) and,
        for the DiT, its pooled vector y and guidance value."""
        cond, extra = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(caption))[0]
        made = self.patched.model.extra_conds(cross_attn=cond, device=cond.device, **extra)
        return {name: c.cond for name, c in made.items()}

    def latent(self, image_u8: np.ndarray):
        import torch
        img = torch.from_numpy(image_u8).float()[None] / 255.0
        return self.patched.model.process_latent_in(self.vae.encode(img))

    def noised(self, x0, noise, sigma):
        """(1, C, h, w): clean latent x0 noised to sigma as the host's sampler noises one."""
        return self.model_sampling.noise_scaling(sigma, noise, x0)

    def layers_of(self, reading: str, hw: tuple[int, int]) -> list:
        layer_set, _ = split_reading(reading)
        if reading not in self.layers:
            work = self.family.work(hw, 77)
            share = lambda ls: self.structure.work_until(work, [l.key for l in ls])  # noqa: E731
            self.layers[reading] = self.policy.choose_layers(
                self.families.hooked_layers(self.patched.model_options), hw, "auto", layer_set, share)
            self.shares[reading] = share(self.layers[reading])
        return self.layers[reading]

    def rule(self, reading: str):
        """The JointMapRule of a reading (split_reading)."""
        return _pack_module("ai_t2i_attention.joint_maps").JOINT_MAP_RULES[split_reading(reading)[1]]

    def denoised_image(self, x0, cond: dict, sigma, noise):
        """(H, W, 3) float in [0, 1]: the conditional denoised estimate at sigma, decoded."""
        import comfy.model_management
        comfy.model_management.load_models_gpu([self.patched])
        den = self.patched.model.apply_model(self.noised(x0, noise, sigma), sigma, **cond)
        return self.vae.decode(self.patched.model.process_latent_out(den))[0].clamp(0, 1).double()

    def maps(self, x0, cond: dict, sigma, noise, layer_set: str):
        """(1, h, w, T) averaged probabilities of the reading `layer_set` (split_reading) at
        sigma for clean latent x0."""
        import torch
        import comfy.model_management
        hw = tuple(x0.shape[-2:])
        layers = self.layers_of(layer_set, hw)
        recorder = self.recorders.AttentionRecorder(frozenset(l.key for l in layers))
        text = cond["c_crossattn"]
        mo = self.guidance_pass.pass_options(self.patched.model_options, recorder, self.family,
                                             self.families.hooked_layers(self.patched.model_options),
                                             hw, text.shape[1], fused_attention=True,
                                             joint_keys=self.rule(layer_set).keys)
        comfy.model_management.load_models_gpu([self.patched])
        with torch.no_grad():
            try:
                self.patched.model.apply_model(self.noised(x0, noise, sigma), sigma, **cond,
                                               transformer_options=mo["transformer_options"])
            except self.keys.StopGuidanceForward:
                pass
        return self.family.maps(recorder.average(), layers)


def measure(avg, groups, text_columns, masks, joint: bool = False, sharpen: bool = False):
    """Metrics of one (1, h, w, T) map stack against two object masks (2, H, W) bool.
    joint: the maps are a joint attention's text columns (softmax over text and image keys),
    so the shares also give the image keys' part, the rest of each pixel's attention.
    sharpen: the subject maps are measured as the loss reads them under a sharpening rule
    (maps.sharpened)."""
    import torch
    import torch.nn.functional as F
    h, w, t = avg.shape[1:]
    a = avg[0].double()
    words = list(text_columns)
    rest = [c for c in range(1, t) if c not in set(words)]
    share = {"start": float(a[..., 0].mean()), "words": float(a[..., words].sum(-1).mean()),
             "end+padding": float(a[..., rest].sum(-1).mean())}
    if joint:
        share["image"] = float(1 - a.sum(-1).mean())
    cover = F.interpolate(torch.from_numpy(masks.astype(np.float64))[None], size=(h, w), mode="area")[0]  # (2, h, w)
    subj = torch.stack([a[..., list(c)].mean(-1) for c in groups.subjects])  # (2, h, w)
    if sharpen:
        subj = _pack_module("ai_t2i_attention.maps").sharpened(subj[None])[0]
    out = {"share": share, "ratio": [], "pointing": [], "cosine": None}
    for s in range(2):
        o = 1 - s
        dens = lambda m: float((subj[s] * m).sum() / m.sum().clamp_min(1e-12))  # noqa: E731
        out["ratio"].append(dens(cover[s]) / max(dens(cover[o]), 1e-12))
        idx = int(subj[s].flatten().argmax())
        y, x = divmod(idx, w)
        out["pointing"].append(bool(cover[s, y, x] > 0 and cover[s, y, x] > cover[o, y, x]))
    out["cosine"] = float(F.cosine_similarity(subj[0].flatten(), subj[1].flatten(), dim=0))
    return out


def colour_pointing(image, colours, masks, hw) -> list:
    """Per subject: does the cell nearest its colour lie on its own object?

    image: (H, W, 3) float in [0, 1]; colours: per subject an RGB triple in 0..255; masks:
    (2, H, W) bool; hw: the grid (h, w) the maps are read at. Same rule as the maps' pointing.
    """
    import torch
    import torch.nn.functional as F
    h, w = hw
    img = torch.as_tensor(image, dtype=torch.float64).permute(2, 0, 1)[None]  # (1, 3, H, W)
    cover = F.interpolate(torch.from_numpy(masks.astype(np.float64))[None], size=(h, w), mode="area")[0]
    out = []
    for s, rgb in enumerate(colours):
        c = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1) / 255.0
        near = -F.interpolate((img - c).square().sum(1, keepdim=True).sqrt(), size=(h, w), mode="area")[0, 0]
        y, x = divmod(int(near.flatten().argmax()), w)
        out.append(bool(cover[s, y, x] > 0 and cover[s, y, x] > cover[1 - s, y, x]))
    return out


def _sample(probe, caption: str, subjects, seed: int, method: str, layers: str, strength: float = 1.0,
            joint_map: str = "joint softmax"):
    """One image's latent (1, 4, h, w): vanilla through comfy.sample as KSampler runs it, a
    guidance method through KSampler (AI-T2I) with the benchmark's settings (run.py)."""
    import torch
    import comfy.sample
    from benchmarks.shapesbench.evaluate import PromptSpec
    from benchmarks.shapesbench.prompts import subject_prompt_inputs
    from benchmarks.shapesbench.run import METHODS

    neg = probe.clip.encode_from_tokens_scheduled(probe.clip.tokenize(""))
    latent = torch.zeros(1, 4, 16, 16)
    if method == "vanilla":
        pos = probe.clip.encode_from_tokens_scheduled(probe.clip.tokenize(caption))
        noise = comfy.sample.prepare_noise(latent, seed)
        return comfy.sample.sample(probe.model, noise, 20, 5.0, "euler", "normal", pos, neg, latent,
                                   disable_pbar=True, seed=seed)
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    prompt = _pack_module("nodes.subject_prompt").AIT2ISubjectPrompt
    sampler = _pack_module("nodes.ksampler").AIT2IKSampler
    spec = PromptSpec(caption, tuple(subjects))
    pos = prompt.execute(clip=probe.clip, text=caption, **subject_prompt_inputs(spec)).result[0]
    out = sampler.execute(model=probe.patched, seed=seed, steps=20, cfg=5.0, sampler_name="euler",
                          scheduler="normal", positive=pos, negative=neg, latent_image={"samples": latent},
                          denoise=1.0, method=METHODS[method], strength=strength, start_percent=0.0,
                          end_percent=0.5, layers=layers, joint_map=joint_map)
    return out.result[0]["samples"]


def own_images(probe, cases, seed: int, method: str = "vanilla", layers: str = "auto", strength: float = 1.0,
               joint_map: str = "joint softmax"):
    """The model's own images of each caption (case k from noise seed seed + k), with the
    evaluator's masks for the two subjects where it found both (else None)."""
    from benchmarks.shapesbench.evaluate import _assign, detect

    out = []
    for k, (_, caption, subjects) in enumerate(cases):
        samples = _sample(probe, caption, subjects, seed + k, method, layers, strength, joint_map)
        image = (probe.vae.decode(samples)[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        chosen = _assign(tuple(subjects), detect(image))
        if all(d is not None for d in chosen):
            out.append((image, np.stack([d.mask for d in chosen]), colours_bound(chosen, subjects)))
        else:
            out.append(None)
    return out


def colours_bound(chosen, subjects) -> bool:
    """Every found subject has its caption's colour. A causal text encoder puts the colour
    word into the shape word's column, so a shape word's map can follow its colour rather
    than its shape: where the model drew the colours on the wrong shapes, that map lies on
    the other subject's object. Own images are reported apart by this flag to show it."""
    return all(c is None or d.color == c for d, (_, c) in zip(chosen, subjects))


OWN_KINDS = ("own images", "own, colours right", "own, colours wrong")


def own_kinds(method: str) -> tuple:
    """Row labels of one method's own images (vanilla's are the plain ones)."""
    return OWN_KINDS if method == "vanilla" else tuple(f"{k} [{method}]" for k in OWN_KINDS)


def run(model_path, layer_sets=None, n_scenes=48, seed=0, methods=("vanilla",), sample_layers="auto",
        sample_strength: float = 1.0, sample_joint_map: str = "joint softmax",
        levels=None):
    """{layer set: {"layers", "joint", "levels", "rows"}}: rows keyed (kind, level label).
    layer_sets None: the family's (UNET_SETS / DIT_SETS); levels None: default_levels."""
    import torch
    from benchmarks.shapesbench import scenes

    cases = scenes_and_captions(n_scenes, seed)
    probe = Probe(model_path)
    layer_sets = tuple(layer_sets or (DIT_SETS if probe.joint else UNET_SETS))
    levels = tuple(levels or default_levels(probe.model_sampling))
    sigmas = {lv.label: lv.sigma(probe.model_sampling) for lv in levels}
    generated = {m: own_images(probe, cases, seed, m, sample_layers, sample_strength, sample_joint_map)
                 for m in methods}
    kinds = ("renders",) + tuple(k for m in methods for k in own_kinds(m))
    acc = {(ls, kind, lv.label): [] for ls in layer_sets for kind in kinds for lv in levels}
    for source in ("renders",) + tuple(methods):
        for k, (scene, caption, subjects) in enumerate(cases):
            if source == "renders":
                image, masks = scenes.render(scene)
                into_kinds = ("renders",)
            elif generated[source][k] is None:
                continue
            else:
                image, masks, bound = generated[source][k]
                labels = own_kinds(source)
                into_kinds = (labels[0], labels[1] if bound else labels[2])
            groups, text_cols = probe.groups(caption, [s for s, _ in subjects])
            x0, cond = probe.latent(image), probe.cond(caption)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed * 1000 + k))
            for lv in levels:
                sigma = sigmas[lv.label]
                finds = None
                if source == "renders":  # the caption's colours are the objects' colours only here
                    est = probe.denoised_image(x0, cond, sigma, noise)
                    finds = colour_pointing(est, [scenes.COLORS[c] for _, c in subjects], masks, x0.shape[-2:])
                for ls in layer_sets:
                    m = measure(probe.maps(x0, cond, sigma, noise, ls), groups, text_cols, masks, probe.joint,
                                probe.rule(ls).sharpen)
                    m["x0_pointing"] = finds
                    for into in into_kinds:
                        acc[(ls, into, lv.label)].append(m)
    described = {lv.label: {"sigma": float(sigmas[lv.label]), "column": lv.column(float(sigmas[lv.label]))}
                 for lv in levels}
    return {ls: {"layers": probe.policy.describe_layers(probe.layers[ls]), "share": probe.shares[ls],
                 "joint": probe.joint,
                 "levels": described,
                 "rows": {(kind, lv.label): _aggregate(acc[(ls, kind, lv.label)]) for kind in kinds for lv in levels}}
            for ls in layer_sets}


def _aggregate(acc):
    n = len(acc)
    if n == 0:
        return {"n": 0}
    return {"n": n,
            "start": float(np.mean([a["share"]["start"] for a in acc])),
            "words": float(np.mean([a["share"]["words"] for a in acc])),
            "end+padding": float(np.mean([a["share"]["end+padding"] for a in acc])),
            **({"image": float(np.mean([a["share"]["image"] for a in acc]))}
               if all("image" in a["share"] for a in acc) else {}),
            "ratio": float(np.median([r for a in acc for r in a["ratio"]])),
            "pointing": float(np.mean([p for a in acc for p in a["pointing"]])),
            "cosine": float(np.mean([a["cosine"] for a in acc])),
            "x0_pointing": (float(np.mean([p for a in acc for p in a["x0_pointing"]]))
                            if all(a.get("x0_pointing") is not None for a in acc) else None)}


def table(report, model_name: str) -> str:
    joint = any(r.get("joint") for r in report.values())
    steps = any("t=" not in label for r in report.values() for label in r["levels"])
    noise = "step (σ)" if steps else "t"
    lines = [f"Grounding of `{model_name}`: attention share of start token / words / end token and padding"
             + (" / image tokens (the rest of the joint attention)" if joint else "") + ", "
             "own/other density ratio (median over subjects), pointing rate, cosine of the two subjects' maps; "
             "x0 finds: how often the model's denoised estimate has a subject's colour on its object (renders "
             "only; no attention read: what the noisy latent still tells this model)."
             + (f" Noise levels: steps of the {SCHEDULE_STEPS}-step '{SCHEDULER}' schedule the benchmark samples "
                "with, at the model's own sigmas." if steps else ""), "",
             f"| layers | scenes | {noise} | n | start | words | end+pad |" + (" image |" if joint else "")
             + " own/other | pointing | cosine | x0 finds |",
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if joint else "") + "---:|---:|---:|---:|"]
    for layer_set, r in report.items():
        for (kind, label), v in r["rows"].items():
            level = r["levels"][label]["column"]
            if v["n"] == 0:
                lines.append(f"| {layer_set}: {_described(r)} | {kind} | {level} | 0 | | | |" + (" |" if joint else "")
                             + " | | | |")
                continue
            lines.append(f"| {layer_set}: {_described(r)} | {kind} | {level} | {v['n']} | {v['start']:.3f} | "
                         f"{v['words']:.3f} | {v['end+padding']:.3f} | "
                         + (f"{v['image']:.3f} | " if joint else "")
                         + f"{v['ratio']:.2f} | {v['pointing']:.2f} | "
                         f"{v['cosine']:.2f} | {'' if v['x0_pointing'] is None else format(v['x0_pointing'], '.2f')} |")
    return "\n".join(lines)


def parse_levels(timesteps: Optional[str], steps_at: Optional[str], schedule_steps: int) -> Optional[tuple]:
    """The levels the command line names (None: the model's default_levels)."""
    if timesteps and steps_at:
        raise SystemExit("give --timesteps or --steps-at, not both")
    if timesteps:
        return tuple(NoiseLevel(t=int(t)) for t in timesteps.split(","))
    if steps_at:
        return tuple(NoiseLevel(step=int(k), of=schedule_steps) for k in steps_at.split(","))
    return None


def _described(r: dict) -> str:
    """A reading's layers, with the share of the network its guidance pass runs where known."""
    return r["layers"] + (f", pass ~{r['share']:.0%}" if r.get("share") is not None else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="tiny model file (default: the pack's embedded model)")
    ap.add_argument("--layers", default=None,
                    help="comma separated layer sets (UNet: auto, down, down+up, ...; DiT: auto, joint, joint+single, "
                         "joint early/middle/late, each optionally @ a joint map rule: 'joint@text softmax'); "
                         f"default {','.join(UNET_SETS)} on a UNet, {','.join(DIT_SETS)} on a DiT")
    ap.add_argument("--timesteps", default=None,
                    help=f"comma separated timesteps t of a discrete (eps) model's schedule; the UNet's default "
                         f"{','.join(map(str, TIMESTEPS))}")
    ap.add_argument("--steps-at", default=None,
                    help=f"comma separated steps of the --schedule-steps '{SCHEDULER}' schedule, read at the model's "
                         f"own sigmas; the flow-matching DiT's default {','.join(map(str, FLOW_STEPS))}")
    ap.add_argument("--schedule-steps", type=int, default=SCHEDULE_STEPS, help="steps of the schedule --steps-at reads")
    ap.add_argument("--scenes", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="vanilla",
                    help="comma separated: whose own images are measured (vanilla, ai_t2i, attend_and_excite, ...)")
    ap.add_argument("--sample-layers", default="auto", help="layer set the guided methods read while sampling")
    ap.add_argument("--sample-strength", type=float, default=1.0, help="the guided methods' strength while sampling")
    ap.add_argument("--sample-joint-map", default="joint softmax",
                    help="the guided methods' joint map rule while sampling (a DiT's; a UNet ignores it)")
    ap.add_argument("--out", default=None, help="write the table (.md) and figures (.json) here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    levels = parse_levels(args.timesteps, args.steps_at, args.schedule_steps)

    import torch
    torch.set_num_threads(args.threads)
    from tools.comfy_runner import Host
    Host()
    with torch.no_grad():
        report = run(args.model, args.layers.split(",") if args.layers else None, args.scenes, args.seed,
                     tuple(args.methods.split(",")), args.sample_layers, args.sample_strength, args.sample_joint_map,
                     levels)
    name = pathlib.Path(args.model).name if args.model else "ai_t2i_tiny_shapes.safetensors"
    text = table(report, name)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grounding.md").write_text(text + "\n")
        (out / "grounding.json").write_text(json.dumps(
            {ls: {"layers": r["layers"], "share": r.get("share"), "joint": r["joint"], "levels": r["levels"],
                  "rows": {f"{k} {label}": v for (k, label), v in r["rows"].items()}}
             for ls, r in report.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
