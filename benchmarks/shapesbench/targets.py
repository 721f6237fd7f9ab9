"""Is an embedded model fit to show an attention-guidance method? Every target, one command.

A guidance method acts on one property of Stable Diffusion: a subject word's map lies on
that subject. A candidate embedded model is chosen on the targets below, measured here on
vanilla sampling and on attention maps only, never on how a method does on it. Each
architecture of the tiny model (TinyModelConfig.architecture, read from the file) has its
own list, fixed before any method was compared on it.

The SD1-shaped UNet ("unet"):

- grounding, t = 500, 700 and 900, on renders (exact masks): pointing >= 0.90, own/other
  density ratio >= 3, cosine of the two subjects' maps <= 0.5; for the down-block layer
  (what the loss reads by default, ``auto``) and for down+up. The model's own images are
  in the grounding table beside them.
- vanilla, one subject: shape and colour correct >= 0.95 (every seen shape x colour, 8 seeds);
- vanilla, two subjects: an extra object in <= 15 % of images, a subject missing or merged
  in >= 30 % (the neglect failure the method targets), colour leakage present (> 0).

The Flux-shaped DiT ("flux"):

- grounding on renders, on the joint-attention maps of the blocks the loss reads (the layer
  set --loss-layers, default ``joint``: the double-stream blocks), over the guided range
  (the first half of the 20 sampling steps), at the sigmas of steps 3, 6 and 9 of the
  benchmark's 20-step schedule (the model's own sigmas; grounding.py says why not step 0):
  pointing >= 0.90, own/other density >= 3, cosine <= 0.5. ``joint`` and ``joint+single``
  are both measured and shown; only the loss's set counts as a target.
- vanilla, one subject: correct >= 0.90;
- vanilla, two subjects: a subject missing or merged in >= 25 % of images; an extra object
  in <= 25 %.

Candidates are ranked by the number of targets met, then by one-subject correctness; models
of different architectures are ranked in separate tables (their targets differ).

    # measure one model (the three runs resume; on one thread about 15 CPU minutes for the UNet,
    # about 25 for the Flux-shaped model)
    .venv/bin/python benchmarks/shapesbench/targets.py measure MODEL.safetensors --out DIR
    # the targets of several measured models side by side, best first
    .venv/bin/python benchmarks/shapesbench/targets.py report DIR [DIR ...]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Optional

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.shapesbench.grounding import FLOW_LEVELS, UNET_LEVELS  # noqa: E402

TIMESTEPS = (500, 700, 900)
# "down" is the layer set auto reads on the embedded model (its one 16x16 down-block layer);
# named as a fixed set so that measurements stay comparable if auto's choice changes.
GROUNDING_LAYERS = ("down", "down+up")
# The tiny model file's metadata key holding its TinyModelConfig JSON (nodes/host/tiny_model.py
# METADATA_KEY; read here without starting the host).
TINY_CONFIG_KEY = "ai_t2i_tiny_config"
SETTINGS_FILE = "targets_settings.json"


@dataclass(frozen=True)
class Targets:
    """One architecture's targets, fixed before any method was compared on a model of it.

    grounding_sets: the layer sets whose grounding is a target (the loss's);
    shown_sets: further layer sets measured and shown beside them, not counted;
    levels: grounding.NoiseLevel's the grounding targets hold at, every one;
    colour_leaked: colour leakage must exceed this (None: not a target)."""

    architecture: str = "unet"
    grounding_sets: tuple = GROUNDING_LAYERS
    shown_sets: tuple = ()
    levels: tuple = UNET_LEVELS
    pointing: float = 0.90  # at least
    ratio: float = 3.0  # own/other density, at least
    cosine: float = 0.5  # at most
    single_correct: float = 0.95  # at least
    extra_object: float = 0.15  # at most
    missing_or_merged: float = 0.30  # at least
    colour_leaked: Optional[float] = 0.0  # more than

    @property
    def measured_sets(self) -> tuple:
        return self.grounding_sets + tuple(s for s in self.shown_sets if s not in self.grounding_sets)


TARGETS = Targets()
FLUX_LOSS_LAYERS = "joint"
# The Flux-shaped model's targets (the issue that added it): grounding on the loss's joint maps
# over the guided range, one subject correct >= 0.9, neglect or merging in >= 25 % of two-subject
# images, extra objects in <= 25 %.
FLUX_TARGETS = Targets(architecture="flux", grounding_sets=(FLUX_LOSS_LAYERS,), shown_sets=("joint", "joint+single"),
                       levels=FLOW_LEVELS, pointing=0.90, ratio=3.0, cosine=0.5, single_correct=0.90,
                       extra_object=0.25, missing_or_merged=0.25, colour_leaked=None)


def targets_for(architecture: str, loss_layers: Optional[str] = None) -> Targets:
    """The targets of a model of `architecture`; loss_layers: the Flux model's loss set."""
    if architecture == "flux":
        return FLUX_TARGETS if loss_layers in (None, FLUX_LOSS_LAYERS) else replace(FLUX_TARGETS,
                                                                                    grounding_sets=(loss_layers,))
    if architecture != "unet":
        raise SystemExit(f"no targets for a tiny model of architecture {architecture!r}")
    return TARGETS


def model_architecture(model: pathlib.Path) -> str:
    """The tiny model file's architecture, from its metadata (files before the field: unet)."""
    import safetensors

    with safetensors.safe_open(str(model), framework="pt") as f:
        meta = f.metadata() or {}
    if TINY_CONFIG_KEY not in meta:
        raise SystemExit(f"{model} is not a tiny model file (no {TINY_CONFIG_KEY!r} metadata)")
    return json.loads(meta[TINY_CONFIG_KEY]).get("architecture", "unet")


def _level_flags(targets: Targets) -> list[str]:
    """grounding.py's flags for the targets' noise levels."""
    if all(lv.t is not None for lv in targets.levels):
        return ["--timesteps", ",".join(str(lv.t) for lv in targets.levels)]
    return ["--steps-at", ",".join(str(lv.step) for lv in targets.levels),
            "--schedule-steps", str(targets.levels[0].of)]


def measure(model: pathlib.Path, out: pathlib.Path, threads: int, loss_layers: Optional[str] = None,
            scenes: int = 48, seeds: int = 8, prompts: Optional[str] = None, jobs: int = 1) -> None:
    """Run the three measurements into out/single, out/two and out/grounding, ``jobs`` at a
    time (each writes its own folder); the model's architecture and loss set go to
    out/targets_settings.json for `report`. Fewer scenes, seeds or prompts (run.py's
    --prompts) than 48, 8 and all are for trying the commands only: the targets are set on
    those."""
    arch = model_architecture(model)
    targets = targets_for(arch, loss_layers)
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_FILE).write_text(json.dumps({"architecture": arch, "loss_layers": targets.grounding_sets[0]
                                                 if arch == "flux" else None}) + "\n")
    py = sys.executable
    common = ["--model", str(model), "--threads", str(threads)]
    subset = ["--prompts", prompts] if prompts else []
    runs = [
        [py, str(HERE / "run.py"), "--single-grid", "--methods", "vanilla", "--seeds", str(seeds),
         "--out", str(out / "single"), *subset, *common],
        [py, str(HERE / "run.py"), "--methods", "vanilla", "--seeds", str(seeds), "--steps", "20",
         "--out", str(out / "two"), *subset, *common],
    ]
    gpath = out / "grounding" / "grounding.json"
    if not gpath.exists() or not set(targets.measured_sets) <= set(json.loads(gpath.read_text())):
        runs.append([py, str(HERE / "grounding.py"), "--scenes", str(scenes), "--layers",
                     ",".join(targets.measured_sets), *_level_flags(targets), "--out", str(out / "grounding"),
                     *common])
    running: list = []
    for cmd in runs:
        if len(running) >= max(jobs, 1):
            _finish(running.pop(0))
        print("+", " ".join(cmd[1:]), flush=True)
        running.append((cmd, subprocess.Popen(cmd)))
    for job in running:
        _finish(job)


def _finish(job) -> None:
    """Wait for one measurement; a failed one stops `measure` with its command."""
    cmd, proc = job
    if proc.wait() != 0:
        raise SystemExit(f"targets: exit {proc.returncode} from {' '.join(cmd[1:])}")


def _rows(path: pathlib.Path) -> list[dict]:
    from benchmarks.shapesbench.run import read_results

    if not path.exists():
        raise SystemExit(f"{path} missing: run `targets.py measure` for this model first")
    return [r for r in read_results(path) if r["method"] == "vanilla"]


def _settings(out: pathlib.Path, grounding: dict) -> tuple[str, Optional[str]]:
    """(architecture, the Flux model's loss set) of a measured folder. Folders measured before
    the settings file: a grounding.json with joint-attention maps is the DiT's."""
    path = out / SETTINGS_FILE
    if path.exists():
        s = json.loads(path.read_text())
        return s["architecture"], s.get("loss_layers")
    return ("flux" if any(r.get("joint") for r in grounding.values()) else "unet"), None


def single_failures(single: list[dict]) -> dict:
    """What goes wrong with one subject, each a share of all one-subject images (an image can
    count in more than one): no object drawn; objects but none of the caption's shape; the shape
    in another colour; an object beside it (a second copy or another shape)."""
    n = max(len(single), 1)
    return {
        "single nothing": sum(r["n_detected"] == 0 for r in single) / n,
        "single wrong shape": sum(bool(r["missing"]) and r["n_detected"] > 0 for r in single) / n,
        "single wrong colour": sum(r["present"] and not r["bound"] for r in single) / n,
        "single extra": sum(not r["no_extra"] for r in single) / n,
    }


def results(out: pathlib.Path) -> dict:
    """Every measured value a target reads, from a measured folder."""
    from benchmarks.shapesbench.run import failure_kinds

    single = _rows(out / "single" / "results.jsonl")
    two = [r for r in _rows(out / "two" / "results.jsonl") if len(r["subjects"]) == 2]
    kinds = failure_kinds(two)
    gpath = out / "grounding" / "grounding.json"
    if not gpath.exists():
        raise SystemExit(f"{gpath} missing: run `targets.py measure` for this model first")
    grounding = json.loads(gpath.read_text())
    arch, loss_layers = _settings(out, grounding)
    targets = targets_for(arch, loss_layers)
    values = {
        "model": single[0]["model"] if single else "?",
        "architecture": arch,
        "loss_layers": loss_layers,
        "single_correct": sum(r["correct"] for r in single) / max(len(single), 1),
        "n_single": len(single),
        "n_two": len(two),
        "n_scenes": None,
        "extra_object": kinds["extra object"],
        "missing_or_merged": sum(bool(r["missing"] or r["merged"]) for r in two) / max(len(two), 1),
        "colour_leaked": kinds["colour leaked"],
        **single_failures(single),
    }
    for ls in targets.measured_sets:
        if ls not in grounding:
            raise SystemExit(f"{gpath} has no layer set {ls!r}: run `targets.py measure` for this model again")
        for lv in targets.levels:
            row = grounding[ls]["rows"].get(f"renders {lv.label}")
            if row is None:
                raise SystemExit(f"{gpath} has no renders at {lv.label} for {ls!r}: measured at other noise levels")
            values["n_scenes"] = row.get("n", values["n_scenes"])
            sigma = grounding[ls].get("levels", {}).get(lv.label, {}).get("sigma")
            if sigma is not None:
                values[f"sigma {lv.label}"] = sigma
            for key in ("pointing", "ratio", "cosine"):
                values[f"{ls} {key} {lv.label}"] = row[key]
            if row.get("x0_pointing") is not None:  # the same for every layer set: no attention read
                values[f"x0 finds {lv.label}"] = row["x0_pointing"]
    return values


def _levels_text(targets: Targets) -> str:
    if all(lv.t is not None for lv in targets.levels):
        return "t " + " / ".join(str(lv.t) for lv in targets.levels)
    return "steps " + " / ".join(str(lv.step) for lv in targets.levels) + f" of {targets.levels[0].of}"


def checks(values: dict, targets: Optional[Targets] = None) -> list[tuple[str, str, Optional[bool]]]:
    """(target, measured, met) for every target of the model's architecture; met is None on a
    row shown beside the targets but not one of them (a layer set the loss does not read)."""
    targets = targets or targets_for(values.get("architecture", "unet"), values.get("loss_layers"))
    out = []
    for ls in targets.measured_sets:
        counted = ls in targets.grounding_sets
        for key, sign, bound in (("pointing", ">=", targets.pointing), ("ratio", ">=", targets.ratio),
                                 ("cosine", "<=", targets.cosine)):
            got = [values[f"{ls} {key} {lv.label}"] for lv in targets.levels]
            met = all(g >= bound for g in got) if sign == ">=" else all(g <= bound for g in got)
            name = "own/other" if key == "ratio" else key
            out.append((f"{ls}: {name} {sign} {bound:g} ({_levels_text(targets)})" + ("" if counted else
                                                                                        ", shown, not a target"),
                        " / ".join(f"{g:.2f}" for g in got), met if counted else None))
    x0 = [values.get(f"x0 finds {lv.label}") for lv in targets.levels]
    if all(v is not None for v in x0):
        # How often the model's own denoised estimate puts a subject's colour on its object: the
        # layout the noisy latent still tells the model, which no map can point beyond.
        out.append((f"x0 finds, the yardstick of pointing ({_levels_text(targets)}), shown, not a target",
                    " / ".join(f"{v:.2f}" for v in x0), None))
    out += [
        (f"vanilla one subject correct >= {targets.single_correct:g}", f"{values['single_correct']:.3f}",
         values["single_correct"] >= targets.single_correct),
        ("one subject, what fails (vanilla): nothing / wrong shape / wrong colour / extra object, shown, not a target",
         " / ".join(f"{values[f'single {k}']:.3f}" for k in ("nothing", "wrong shape", "wrong colour", "extra")),
         None),
        (f"two subjects: extra object <= {targets.extra_object:g}", f"{values['extra_object']:.3f}",
         values["extra_object"] <= targets.extra_object),
        (f"two subjects: missing or merged >= {targets.missing_or_merged:g}", f"{values['missing_or_merged']:.3f}",
         values["missing_or_merged"] >= targets.missing_or_merged),
    ]
    if targets.colour_leaked is not None:
        out.append(("two subjects: colour leakage present", f"{values['colour_leaked']:.3f}",
                    values["colour_leaked"] > targets.colour_leaked))
    return out


def rank_key(values: dict) -> tuple[int, float]:
    """Targets met, then one-subject correctness: the selection rule, higher is better."""
    return sum(met is True for _, _, met in checks(values)), values["single_correct"]


def _table(measured: list[tuple[dict, pathlib.Path]]) -> list[str]:
    """One architecture's models (values, folder), best first."""
    measured = sorted(measured, key=lambda vf: rank_key(vf[0]), reverse=True)
    names = [f"{v['model']} ({f.parent.name}/{f.name})" for v, f in measured]
    rows = [c for c in zip(*[checks(v) for v, _ in measured])]
    lines = ["| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        cells = [f"**{got}**" if met else got for _, got, met in row]
        lines.append(f"| {row[0][0]} | " + " | ".join(cells) + " |")
    lines.append("| targets met | " + " | ".join(
        f"{rank_key(v)[0]} of {sum(met is not None for _, _, met in checks(v))}" for v, _ in measured) + " |")
    first = measured[0][0]
    targets = targets_for(first["architecture"], first["loss_layers"])
    sigmas = [first.get(f"sigma {lv.label}") for lv in targets.levels]
    noise = ""
    if all(lv.step is not None for lv in targets.levels) and all(s is not None for s in sigmas):
        noise = (f" Noise levels: the model's own sigmas at {_levels_text(targets)} of the benchmark's schedule "
                 f"({' / '.join(f'{s:.3f}' for s in sigmas)}).")
    lines += ["", f"Architecture `{first['architecture']}`. Bold: target met. Columns ranked by targets met, then "
              f"one-subject correctness. One subject: {first['n_single']} images; two subjects: {first['n_two']} "
              f"images" + (f"; grounding on {first['n_scenes']} rendered scenes" if first["n_scenes"] else "") + f".{noise}"]
    return lines


def report(folders: list[pathlib.Path]) -> str:
    by_arch: dict[str, list] = {}
    for f in folders:
        v = results(f)
        by_arch.setdefault(v["architecture"], []).append((v, f))
    lines: list[str] = []
    for arch in sorted(by_arch, key=lambda a: a != "unet"):
        if lines:
            lines.append("")
        lines += _table(by_arch[arch])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the measurements of one model")
    m.add_argument("model", type=pathlib.Path)
    m.add_argument("--out", type=pathlib.Path, required=True)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--jobs", type=int, default=1, help="measurements run at a time (2 on two cores, one thread each)")
    m.add_argument("--loss-layers", default=None,
                   help=f"the Flux-shaped model's layer set the loss reads, its grounding targets' set "
                        f"(default {FLUX_LOSS_LAYERS}); the UNet's targets name theirs")
    m.add_argument("--scenes", type=int, default=48, help="grounding scenes (the targets are set on 48)")
    m.add_argument("--seeds", type=int, default=8, help="seeds per prompt (the targets are set on 8)")
    m.add_argument("--prompts", default=None, help="run.py's prompt selection, to try the commands (default: all)")
    r = sub.add_parser("report", help="print the targets of measured folders, best first")
    r.add_argument("folders", type=pathlib.Path, nargs="+")
    r.add_argument("--write", type=pathlib.Path, default=None, help="also write the table to this .md file")
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        measure(args.model.resolve(), args.out, args.threads, args.loss_layers, args.scenes, args.seeds,
                args.prompts, args.jobs)
        args.folders, args.write = [args.out], args.out / "targets.md"
    text = report(args.folders)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
