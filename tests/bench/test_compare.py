"""compare.py: row sets from several folders named by what differs, paired gains, refusals."""
import json
import pathlib

import pytest

from benchmarks.shapesbench import compare

SETTINGS = {"model": "m.safetensors", "model_sha256": "abc", "steps": 20, "cfg": 5.0, "sampler": "euler",
            "scheduler": "normal", "job": "batch", "noise_seed": 0, "strength": 1.0, "end_percent": 0.5,
            "layers": "auto"}


def _row(prompt: int, seed: int, method: str, present: bool, **settings) -> dict:
    return {**SETTINGS, **settings, "prompt_index": prompt, "prompt": f"p{prompt}", "held_out": prompt == 0,
            "subjects": [["circle", None], ["square", None]], "method": method, "seed": seed,
            "present": present, "bound": present, "no_extra": True, "correct": present,
            "missing": [] if present else ["circle"], "merged": False}


def _folder(tmp: pathlib.Path, name: str, rows: list[dict]) -> pathlib.Path:
    d = tmp / name
    d.mkdir()
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_row_sets_are_named_by_the_settings_that_differ(tmp_path):
    # vanilla draws both subjects in 4 of 8 images (seed 0), AI-T2I at strength 1 in 6, at 0.25 in all 8
    main = [_row(p, s, "vanilla", s == 0) for p in range(4) for s in range(2)]
    main += [_row(p, s, "ai_t2i", s == 0 or p < 2) for p in range(4) for s in range(2)]
    tuned = [_row(p, s, "ai_t2i", True, strength=0.25) for p in range(4) for s in range(2)]
    rows = compare.labelled_rows([_folder(tmp_path, "main", main), _folder(tmp_path, "tuned", tuned)])
    labels = list(dict.fromkeys(r["method"] for r in rows))
    assert labels == ["vanilla", "ai_t2i", "ai_t2i strength 0.25"]
    pairs = compare.default_pairs(labels)
    assert pairs == [("ai_t2i", "vanilla"), ("ai_t2i strength 0.25", "vanilla")]
    text = compare.compare_markdown(rows, pairs, [tmp_path / "main", tmp_path / "tuned"])
    gain = next(line for line in text.splitlines() if line.startswith("| ai_t2i strength 0.25 - vanilla (all)"))
    cells = [c.strip() for c in gain.strip("|").split("|")]
    assert cells[1] == "8" and cells[2] == "+0.500"  # present: 8/8 - 4/8
    lo, hi = (float(x) for x in cells[6].strip("[]").split(","))
    assert 0 < lo <= 0.5 <= hi  # every prompt gains: the interval excludes 0


def test_a_baseline_pairs_every_other_row_set_but_vanilla_and_must_exist():
    labels = ["vanilla", "ai_t2i", "ai_t2i strength 0.5", "attend_and_excite"]
    assert compare.baseline_pairs(labels, ["ai_t2i"]) == [("ai_t2i strength 0.5", "ai_t2i"),
                                                          ("attend_and_excite", "ai_t2i")]
    assert compare.baseline_pairs(labels, ["vanilla"]) == [("ai_t2i", "vanilla"), ("ai_t2i strength 0.5", "vanilla"),
                                                           ("attend_and_excite", "vanilla")]
    with pytest.raises(SystemExit, match="'ai_t2i strength 2' is no row set; name one of: vanilla, ai_t2i"):
        compare.baseline_pairs(labels, ["ai_t2i strength 2"])
    # a method name stands for its one row set, whatever settings name it
    labelled = ["vanilla", "ai_t2i layers joint", "attend_and_excite layers joint"]
    assert compare.baseline_pairs(labelled, ["attend_and_excite"]) == [("ai_t2i layers joint",
                                                                        "attend_and_excite layers joint")]
    with pytest.raises(SystemExit, match="'ai_t2i' is more than one row set"):
        compare.baseline_pairs(["ai_t2i layers joint", "ai_t2i strength 0.5"], ["ai_t2i"])


def test_a_guided_range_names_its_row_set_and_older_rows_started_at_0(tmp_path):
    from benchmarks.shapesbench.prompts import EVAL_PROMPTS
    from benchmarks.shapesbench.run import build_graph
    graph = build_graph(EVAL_PROMPTS[0], "ai_t2i", "m.safetensors", 0, 1, 20, 5.0, "euler", "normal", 1.0, 0.5,
                        prefix="p", start_percent=0.15)
    assert (graph["5"]["inputs"]["start_percent"], graph["5"]["inputs"]["end_percent"]) == (0.15, 0.5)
    old = [_row(0, 0, "vanilla", True), _row(0, 0, "ai_t2i", True)]  # written before start_percent was kept
    late = [_row(0, 0, "ai_t2i", False, start_percent=0.15)]
    rows = compare.labelled_rows([_folder(tmp_path, "old", old), _folder(tmp_path, "late", late)])
    assert list(dict.fromkeys(r["method"] for r in rows)) == ["vanilla", "ai_t2i", "ai_t2i start_percent 0.15"]


def test_folders_with_other_noise_are_refused(tmp_path):
    a = _folder(tmp_path, "a", [_row(0, 0, "vanilla", True)])
    b = _folder(tmp_path, "b", [_row(0, 0, "ai_t2i", True, noise_seed=1)])
    with pytest.raises(SystemExit, match="noise_seed"):
        compare.labelled_rows([a, b])


def test_one_row_set_in_two_folders_is_refused(tmp_path):
    a = _folder(tmp_path, "a", [_row(0, 0, "vanilla", True)])
    b = _folder(tmp_path, "b", [_row(0, 0, "vanilla", False)])
    with pytest.raises(SystemExit, match="both"):
        compare.labelled_rows([a, b])


def test_pairs_name_the_fix():
    assert compare.parse_pairs("ai_t2i:vanilla, a:b") == [("ai_t2i", "vanilla"), ("a", "b")]
    with pytest.raises(SystemExit, match="FIRST:SECOND"):
        compare.parse_pairs("ai_t2i")



def test_intervals_are_the_same_in_every_process():
    """The bootstrap resamples prompts in a fixed order. In the order of a set of the (prompt,
    seed) keys, it would follow the process's string hashing: the same rows would give other
    intervals in another run."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, '.'); from tests.bench.test_compare import _row; "
            "from benchmarks.shapesbench.run import _gain_lines; "
            "rows = [_row(p, s, m, (p * 7 + s * 3 + (m == 'ai_t2i')) % 3 == 0) for p in range(12) "
            "for s in range(4) for m in ('vanilla', 'ai_t2i')]; "
            "print(_gain_lines(rows, 'ai_t2i', 'vanilla', 'x'))")
    root = pathlib.Path(__file__).resolve().parents[2]
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1, outs


def test_colours_found_counts_each_subjects_colour_whatever_its_shape():
    from benchmarks.shapesbench.evaluate import colours_found
    subjects = [["circle", "red"], ["square", "blue"]]
    assert colours_found(subjects, ["red blob", "blue circle"]) is True  # shapes wrong, colours both there
    assert colours_found(subjects, ["red circle", "red square"]) is False  # blue neglected
    assert colours_found([["circle", "red"], ["square", "red"]], ["red circle"]) is False  # one object for two
    assert colours_found([["circle", "red"], ["square", "red"]], ["red circle", "red blob"]) is True
    assert colours_found([["circle", None], ["square", "blue"]], ["blue square"]) is None  # a colour not named


def test_colour_section_rates_and_paired_gain(tmp_path):
    coloured = [["circle", "red"], ["square", "blue"]]
    # vanilla finds both colours at seed 0 only; joint+single at every seed of prompts 0-2
    main = [{**_row(p, s, "vanilla", False), "subjects": coloured,
             "detected": ["red circle", "blue blob"] if s == 0 else ["red circle"]} for p in range(4) for s in range(2)]
    other = [{**_row(p, s, "ai_t2i", False, layers="joint+single"), "subjects": coloured,
              "detected": ["red x", "blue y"] if p < 3 else []} for p in range(4) for s in range(2)]
    rows = compare.labelled_rows([_folder(tmp_path, "main", main), _folder(tmp_path, "other", other)])
    text = "\n".join(compare.colour_lines(rows, [("ai_t2i layers joint+single", "vanilla")]))
    assert "| vanilla | 8 | 0.500 [" in text and "| ai_t2i layers joint+single | 8 | 0.750 [" in text
    gain = next(line for line in text.splitlines() if line.startswith("| ai_t2i layers joint+single - vanilla"))
    cells = [c.strip() for c in gain.strip("|").split("|")]
    assert cells[1] == "8" and cells[2] == "+0.250" and cells[4] == "3 / 1"


def test_one_model_file_under_two_names_pairs_by_its_digest(tmp_path):
    a = _folder(tmp_path, "a", [_row(0, 0, "vanilla", True, model="candidate_175min.safetensors")])
    b = _folder(tmp_path, "b", [_row(0, 0, "ai_t2i", True)])
    assert len(compare.labelled_rows([a, b])) == 2  # same model_sha256
    c = _folder(tmp_path, "c", [_row(0, 0, "ai_t2i", True, model_sha256="def")])
    with pytest.raises(SystemExit, match="model_sha256"):
        compare.labelled_rows([a, c])
