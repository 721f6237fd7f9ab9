"""Compare ShapesBench runs kept in several folders: one table, gains with intervals.

A results folder holds rows of one set of settings (run.py refuses to mix them), so runs of
another strength or layer set go to folders of their own. This reads several of them, names
each row set by its method plus the settings that differ between the folders
("ai_t2i strength 0.25", "ai_t2i layers down+up"), and writes the rates, the failures by type
and the paired gains (same prompts and seeds) with 95 % prompt-bootstrap intervals for
"present" and "correct". The folders must share model, noise, steps and sampler: rows are
paired by (prompt, seed), which only means the same starting noise when those agree.

    .venv/bin/python benchmarks/shapesbench/compare.py results/shapesbench \\
        results/shapesbench_tuned/* results/shapesbench_down_up \\
        --pairs "ai_t2i layers down+up:ai_t2i" --out results/shapesbench_compare.md
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.shapesbench.evaluate import _wilson, colours_found  # noqa: E402
from benchmarks.shapesbench.run import (FAILURE_KINDS, GAIN_CI_KEYS, GAIN_HEADER, KEYS, LEGACY_VALUES,  # noqa: E402
                                        _gain_lines, _paired, _prompt_bootstrap, _rate_table, failure_kinds,
                                        read_results)

# Settings rows may differ in between folders (they name the row sets); every other setting
# must agree, or the rows would not start from the same noise.
VARYING = ("strength", "layers", "start_percent", "end_percent", "joint_map")
SHARED = ("model", "model_sha256", "steps", "cfg", "sampler", "scheduler", "job", "noise_seed")


def labelled_rows(folders: list[pathlib.Path]) -> list[dict]:
    """Every folder's rows, each with "method" renamed to its row set's label."""
    per_folder = []
    for folder in folders:
        rows = read_results(folder / "results.jsonl")
        if not rows:
            raise SystemExit(f"{folder / 'results.jsonl'} has no rows")
        per_folder.append((folder, rows))
    setting = lambda r, k: r.get(k, LEGACY_VALUES.get(k))  # noqa: E731
    # One file by its digest: a model file copied under another name is the same model.
    by_digest = all(setting(rows[0], "model_sha256") for _, rows in per_folder)
    clash = [k for k in SHARED if len({setting(rows[0], k) for _, rows in per_folder}) > 1
             and not (k == "model" and by_digest)]
    if clash:
        raise SystemExit(f"the folders differ in {', '.join(clash)}: their rows do not start from the same "
                         "noise and model, so they cannot be paired")
    varying = [k for k in VARYING if len({setting(r, k) for _, rows in per_folder for r in rows}) > 1]
    base = {k: setting(per_folder[0][1][0], k) for k in varying}
    out, seen = [], {}
    for folder, rows in per_folder:
        for r in rows:
            extra = [f"{k} {setting(r, k)}" for k in varying
                     if setting(r, k) != base[k] and r["method"] != "vanilla"]
            label = " ".join([r["method"], *extra])
            key = (label, r["prompt"], r["seed"])
            if key in seen and seen[key] != folder:
                raise SystemExit(f"{label!r} has rows in both {seen[key]} and {folder}")
            seen[key] = folder
            out.append({**r, "method": label})
    return out


def default_pairs(labels: list[str]) -> list[tuple[str, str]]:
    """Every AI-T2I row set against vanilla and against every Attend-and-Excite row set."""
    ai = [m for m in labels if m.split()[0] == "ai_t2i"]
    ae = [m for m in labels if m.split()[0] == "attend_and_excite"]
    return [(a, b) for a in ai for b in (["vanilla"] if "vanilla" in labels else []) + ae]


def baseline_pairs(labels: list[str], baselines: list[str]) -> list[tuple[str, str]]:
    """Every row set but vanilla against each baseline row set (e.g. a method at its default
    settings, so that every other reading is paired with the setting it would replace). A
    baseline is a row set's label, or a method name that exactly one row set has."""
    pairs = []
    for name in baselines:
        found = [name] if name in labels else [m for m in labels if m.split()[0] == name]
        if len(found) != 1:
            raise SystemExit(f"--baseline {name!r} is {'no' if not found else 'more than one'} row set; name one of: "
                             f"{', '.join(labels)}")
        pairs += [(a, found[0]) for a in labels if a not in (found[0], "vanilla")]
    return pairs


def compare_markdown(rows: list[dict], pairs: list[tuple[str, str]], folders: list[pathlib.Path]) -> str:
    labels = list(dict.fromkeys(r["method"] for r in rows))
    held = [r for r in rows if r["held_out"]]
    first = rows[0]
    lines = ["# ShapesBench: runs compared", "",
             f"Folders: {', '.join(f'`{f.as_posix()}`' for f in folders)}. Model `{first['model']}`, "
             f"{first['steps']} {first['sampler']} steps, cfg {first['cfg']}, noise seed {first['noise_seed']}; "
             "row sets named by method and the settings that differ from the first folder's.", "",
             "## All prompts", "", *_rate_table(rows, labels), "",
             "## Held-out prompts", "", *_rate_table(held, labels), "",
             "## Failures by type (two-subject prompts)", "",
             "| method | n | " + " | ".join(FAILURE_KINDS) + " |", "|---|---:|" + "---:|" * len(FAILURE_KINDS)]
    for m in labels:
        sel = [r for r in rows if r["method"] == m and len(r["subjects"]) == 2]
        if sel:
            kinds = failure_kinds(sel)
            lines.append(f"| {m} | {len(sel)} | " + " | ".join(f"{kinds[k]:.3f}" for k in FAILURE_KINDS) + " |")
    lines += ["", "## Gains (first minus second, same prompts and seeds)", "", GAIN_HEADER,
              "|---|---:|" + "---|" * (len(KEYS) + len(GAIN_CI_KEYS) + 1)]
    for a, b in pairs:
        missing = [m for m in (a, b) if m not in labels]
        if missing:
            raise SystemExit(f"no row set {missing[0]!r}; there are: {', '.join(labels)}")
        lines += _gain_lines(rows, a, b, f"{a} - {b} (all)")
        lines += _gain_lines(held, a, b, f"{a} - {b} (held-out)")
    lines += ["", "## Colours found (prompts naming every subject's colour; any shape)", "",
              *colour_lines(rows, pairs), ""]
    return "\n".join(lines)


def colour_lines(rows: list[dict], pairs: list[tuple[str, str]]) -> list[str]:
    """"colours found" (evaluate.colours_found) on the prompts naming every subject's colour:
    each row set's rate with its 95 % Wilson interval, seconds per image, and the paired
    differences of `pairs` with 95 % prompt-bootstrap intervals."""
    coloured = [{**r, "colours": colours_found(r["subjects"], r.get("detected", []))} for r in rows]
    coloured = [r for r in coloured if r["colours"] is not None]
    if not coloured:
        return ["(no prompt names every subject's colour)"]
    labels = list(dict.fromkeys(r["method"] for r in coloured))
    lines = ["| row set | n | colours found | seconds per image |", "|---|---:|---|---:|"]
    for m in labels:
        sel = [r for r in coloured if r["method"] == m]
        k = sum(bool(r["colours"]) for r in sel)
        lo, hi = _wilson(k, len(sel))
        sec = sum(r.get("seconds_per_image", 0.0) for r in sel) / len(sel)
        lines.append(f"| {m} | {len(sel)} | {k / len(sel):.3f} [{lo:.2f}, {hi:.2f}] | {sec:.2f} |")
    lines += ["", "| comparison | pairs | colours found, difference | 95% CI (prompt bootstrap) | wins / losses |",
              "|---|---:|---:|---|---|"]
    for a, b in pairs:
        ra, rb = _paired(coloured, a, b)
        if not ra:
            continue
        diff = (sum(bool(r["colours"]) for r in ra.values()) - sum(bool(r["colours"]) for r in rb.values())) / len(ra)
        lo, hi = _prompt_bootstrap(ra, rb, key="colours")
        wins = sum(ra[k]["colours"] and not rb[k]["colours"] for k in ra)
        losses = sum(rb[k]["colours"] and not ra[k]["colours"] for k in ra)
        lines.append(f"| {a} - {b} | {len(ra)} | {diff:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {wins} / {losses} |")
    return lines


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """'a:b,c:d' -> [(a, b), (c, d)]."""
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        if item.count(":") != 1:
            raise SystemExit(f"--pairs item {item!r}: write FIRST:SECOND, e.g. 'ai_t2i:vanilla'")
        a, b = (x.strip() for x in item.split(":"))
        pairs.append((a, b))
    return pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=pathlib.Path, nargs="+")
    ap.add_argument("--pairs", default=None,
                    help="extra gains, 'FIRST:SECOND,...' by row-set name (default gains: every AI-T2I row set "
                         "against vanilla and every Attend-and-Excite row set)")
    ap.add_argument("--baseline", action="append", default=[],
                    help="pair every row set but vanilla with this one as well (repeatable), e.g. a method "
                         "at its default settings")
    ap.add_argument("--out", type=pathlib.Path, default=None, help="write the report here (.md) as well")
    args = ap.parse_args(argv)
    rows = labelled_rows(args.folders)
    labels = list(dict.fromkeys(r["method"] for r in rows))
    pairs = default_pairs(labels) + baseline_pairs(labels, args.baseline) + parse_pairs(args.pairs)
    text = compare_markdown(rows, list(dict.fromkeys(pairs)), args.folders)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
