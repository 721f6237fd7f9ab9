"""Is an embedded model fit to show an attention-guidance method? Every target, one command.

A guidance method acts on one property of Stable Diffusion: a subject word's map lies on
that subject. A candidate embedded model is chosen on the targets below, measured here on
vanilla sampling and on attention maps only, never on how a method does on it:

- grounding, t = 500, 700 and 900, on renders (exact masks): pointing >= 0.90, own/other
  density ratio >= 3, cosine of the two subjects' maps <= 0.5; for the down-block layer
  (what the loss reads by default, ``auto``) and for down+up. The model's own images are
  in the grounding table beside them.
- vanilla, one subject: shape and colour correct >= 0.95 (every seen shape x colour, 8 seeds);
- vanilla, two subjects: an extra object in <= 15 % of images, a subject missing or merged
  in >= 30 % (the neglect failure the method targets), colour leakage present (> 0).

Candidates are ranked by the number of targets met, then by one-subject correctness.

    # measure one model (the three runs resume; about 15 CPU minutes on one thread)
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
from dataclasses import dataclass

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

TIMESTEPS = (500, 700, 900)
# "down" is the layer set auto reads on the embedded model (its one 16x16 down-block layer);
# named as a fixed set so that measurements stay comparable if auto's choice changes.
GROUNDING_LAYERS = ("down", "down+up")


@dataclass(frozen=True)
class Targets:
    """The part-7 targets, fixed before any method was compared on a new model."""

    pointing: float = 0.90  # at least
    ratio: float = 3.0  # own/other density, at least
    cosine: float = 0.5  # at most
    single_correct: float = 0.95  # at least
    extra_object: float = 0.15  # at most
    missing_or_merged: float = 0.30  # at least
    colour_leaked: float = 0.0  # more than


TARGETS = Targets()


def measure(model: pathlib.Path, out: pathlib.Path, threads: int) -> None:
    """Run the three measurements into out/single, out/two and out/grounding."""
    py = sys.executable
    common = ["--model", str(model), "--threads", str(threads)]
    runs = [
        [py, str(HERE / "run.py"), "--single-grid", "--methods", "vanilla", "--seeds", "8",
         "--out", str(out / "single"), *common],
        [py, str(HERE / "run.py"), "--methods", "vanilla", "--seeds", "8", "--steps", "20",
         "--out", str(out / "two"), *common],
    ]
    if not (out / "grounding" / "grounding.json").exists():
        runs.append([py, str(HERE / "grounding.py"), "--scenes", "48", "--layers", ",".join(GROUNDING_LAYERS),
                     "--out", str(out / "grounding"), *common])
    for cmd in runs:
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)


def _rows(path: pathlib.Path) -> list[dict]:
    from benchmarks.shapesbench.run import read_results

    if not path.exists():
        raise SystemExit(f"{path} missing: run `targets.py measure` for this model first")
    return [r for r in read_results(path) if r["method"] == "vanilla"]


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
    values = {
        "model": single[0]["model"] if single else "?",
        "single_correct": sum(r["correct"] for r in single) / max(len(single), 1),
        "n_single": len(single),
        "n_two": len(two),
        "extra_object": kinds["extra object"],
        "missing_or_merged": sum(bool(r["missing"] or r["merged"]) for r in two) / max(len(two), 1),
        "colour_leaked": kinds["colour leaked"],
    }
    for ls in GROUNDING_LAYERS:
        for t in TIMESTEPS:
            row = grounding[ls]["rows"][f"renders t={t}"]
            for key in ("pointing", "ratio", "cosine"):
                values[f"{ls} {key} t={t}"] = row[key]
    return values


def checks(values: dict, targets: Targets = TARGETS) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for every target."""
    out = []
    for ls in GROUNDING_LAYERS:
        for key, sign, bound in (("pointing", ">=", targets.pointing), ("ratio", ">=", targets.ratio),
                                 ("cosine", "<=", targets.cosine)):
            got = [values[f"{ls} {key} t={t}"] for t in TIMESTEPS]
            met = all(g >= bound for g in got) if sign == ">=" else all(g <= bound for g in got)
            name = "own/other" if key == "ratio" else key
            out.append((f"{ls}: {name} {sign} {bound:g} (t {' / '.join(map(str, TIMESTEPS))})",
                        " / ".join(f"{g:.2f}" for g in got), met))
    out += [
        (f"vanilla one subject correct >= {targets.single_correct:g}", f"{values['single_correct']:.3f}",
         values["single_correct"] >= targets.single_correct),
        (f"two subjects: extra object <= {targets.extra_object:g}", f"{values['extra_object']:.3f}",
         values["extra_object"] <= targets.extra_object),
        (f"two subjects: missing or merged >= {targets.missing_or_merged:g}", f"{values['missing_or_merged']:.3f}",
         values["missing_or_merged"] >= targets.missing_or_merged),
        ("two subjects: colour leakage present", f"{values['colour_leaked']:.3f}",
         values["colour_leaked"] > targets.colour_leaked),
    ]
    return out


def rank_key(values: dict) -> tuple[int, float]:
    """Targets met, then one-subject correctness: the selection rule, higher is better."""
    return sum(met for _, _, met in checks(values)), values["single_correct"]


def report(folders: list[pathlib.Path]) -> str:
    measured = sorted(((results(f), f) for f in folders), key=lambda vf: rank_key(vf[0]), reverse=True)
    names = [f"{v['model']} ({f.parent.name}/{f.name})" for v, f in measured]
    table = [c for c in zip(*[checks(v) for v, _ in measured])]
    lines = ["| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in table:
        cells = [f"**{got}**" if met else got for _, got, met in row]
        lines.append(f"| {row[0][0]} | " + " | ".join(cells) + " |")
    lines.append("| targets met | " + " | ".join(f"{rank_key(v)[0]} of {len(checks(v))}" for v, _ in measured) + " |")
    lines += ["", "Bold: target met. Columns ranked by targets met, then one-subject correctness. "
              f"One subject: {measured[0][0]['n_single']} images; two subjects: {measured[0][0]['n_two']} images; "
              "grounding on 48 rendered scenes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the measurements of one model")
    m.add_argument("model", type=pathlib.Path)
    m.add_argument("--out", type=pathlib.Path, required=True)
    m.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report", help="print the targets of measured folders, best first")
    r.add_argument("folders", type=pathlib.Path, nargs="+")
    r.add_argument("--write", type=pathlib.Path, default=None, help="also write the table to this .md file")
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        measure(args.model.resolve(), args.out, args.threads)
        args.folders, args.write = [args.out], args.out / "targets.md"
    text = report(args.folders)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
