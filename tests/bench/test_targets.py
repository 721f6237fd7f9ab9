"""The model-selection targets read the benchmark files they claim to, and rank as stated."""
import json
import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

from benchmarks.shapesbench import targets


def _row(subjects, correct=True, missing=(), merged=False, present=True, bound=True, no_extra=True):
    return {"prompt": "p", "prompt_index": 0, "seed": 0, "method": "vanilla", "model": "m.safetensors",
            "subjects": subjects, "correct": correct, "missing": list(missing), "merged": merged,
            "present": present, "bound": bound, "no_extra": no_extra}


def _write(folder: pathlib.Path, single, two, grounding):
    for name, rows in (("single", single), ("two", two)):
        (folder / name).mkdir(parents=True)
        (folder / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "grounding").mkdir()
    (folder / "grounding" / "grounding.json").write_text(json.dumps(grounding))


def _grounding(pointing, ratio, cosine):
    rows = {f"renders t={t}": {"pointing": pointing, "ratio": ratio, "cosine": cosine} for t in targets.TIMESTEPS}
    return {ls: {"layers": ls, "rows": rows} for ls in targets.GROUNDING_LAYERS}


def test_results_read_rates_from_the_benchmark_files(tmp_path):
    one = [["circle", "red"]]
    two = [["circle", None], ["square", None]]
    single = [_row(one)] * 19 + [_row(one, correct=False)]
    pairs = ([_row(two, correct=False, missing=["square"], no_extra=False)] * 2
             + [_row(two, correct=False, bound=False)] + [_row(two)] * 7)
    _write(tmp_path, single, pairs, _grounding(0.95, 4.0, 0.3))
    v = targets.results(tmp_path)
    assert v["single_correct"] == 0.95 and v["n_single"] == 20 and v["n_two"] == 10
    assert v["extra_object"] == 0.2 and v["missing_or_merged"] == 0.2 and v["colour_leaked"] == 0.1
    met = {name: ok for name, _, ok in targets.checks(v)}
    assert all(ok for name, ok in met.items() if name.startswith(("down", "vanilla")))
    assert not met["two subjects: extra object <= 0.15"]
    assert not met["two subjects: missing or merged >= 0.3"]
    assert met["two subjects: colour leakage present"]


def test_ranking_counts_targets_then_single_correctness(tmp_path):
    one, two = [["circle", "red"]], [["circle", None], ["square", None]]
    a, b = tmp_path / "a", tmp_path / "b"
    # a: grounded maps, poor one-subject images; b: ungrounded maps, perfect one-subject images
    _write(a, [_row(one, correct=False)], [_row(two)], _grounding(0.95, 4.0, 0.3))
    _write(b, [_row(one)], [_row(two)], _grounding(0.3, 1.1, 0.9))
    ka, kb = targets.rank_key(targets.results(a)), targets.rank_key(targets.results(b))
    assert ka[0] == kb[0] + 6 - 1  # six grounding targets met by a only, one-subject met by b only
    table = targets.report([b, a])
    assert table.index("/a)") < table.index("/b)")  # best first, whatever the order given
    assert "**0.95 / 0.95 / 0.95**" in table
