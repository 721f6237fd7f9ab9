"""The model-selection targets read the benchmark files they claim to, and rank as stated."""
import json
import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

from benchmarks.shapesbench import targets


def _row(subjects, correct=True, missing=(), merged=False, present=True, bound=True, no_extra=True, n_detected=None):
    if n_detected is None:
        n_detected = len(subjects) - len(missing) + (not no_extra)
    return {"prompt": "p", "prompt_index": 0, "seed": 0, "method": "vanilla", "model": "m.safetensors",
            "subjects": subjects, "correct": correct, "missing": list(missing), "merged": merged,
            "present": present, "bound": bound, "no_extra": no_extra, "n_detected": n_detected}


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


def test_one_subject_failures_are_told_apart(tmp_path):
    one, two = [["circle", "red"]], [["circle", None], ["square", None]]
    single = ([_row(one)] * 6
              + [_row(one, correct=False, missing=["circle"], present=False, bound=False, n_detected=0)]
              + [_row(one, correct=False, missing=["circle"], present=False, bound=False, n_detected=1)]
              + [_row(one, correct=False, bound=False)]
              + [_row(one, correct=False, no_extra=False)])
    _write(tmp_path, single, [_row(two)], _grounding(0.95, 4.0, 0.3))
    v = targets.results(tmp_path)
    assert (v["single nothing"], v["single wrong shape"], v["single wrong colour"], v["single extra"]) == (0.1,) * 4
    shown = {name: (got, ok) for name, got, ok in targets.checks(v)}
    row = [k for k in shown if k.startswith("one subject, what fails")]
    assert row and shown[row[0]] == ("0.100 / 0.100 / 0.100 / 0.100", None)  # shown, never counted as a target


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


def _flux_grounding(joint, joint_single):
    """grounding.json of a Flux-shaped model: (pointing, ratio, cosine) per layer set at the
    flow levels, with the joint flag and the levels' sigmas as grounding.py writes them."""
    out = {}
    for ls, (pointing, ratio, cosine) in (("joint", joint), ("joint+single", joint_single)):
        rows = {f"renders {lv.label}": {"n": 48, "pointing": pointing, "ratio": ratio, "cosine": cosine}
                for lv in targets.FLUX_TARGETS.levels}
        levels = {lv.label: {"sigma": 0.9 - 0.1 * i, "column": lv.label} for i, lv in enumerate(targets.FLUX_TARGETS.levels)}
        out[ls] = {"layers": ls, "joint": True, "levels": levels, "rows": rows}
    return out


def _flux_folder(folder, loss_layers="joint", settings=True, single_ok=9, two_failed=(1, 1)):
    """A measured Flux folder: single_ok of 10 one-subject images correct; of 4 two-subject
    images two_failed[0] with a subject missing and two_failed[1] with an extra object."""
    one, two = [["circle", "red"]], [["circle", None], ["square", None]]
    single = [_row(one)] * single_ok + [_row(one, correct=False)] * (10 - single_ok)
    missing, extra = two_failed
    pairs = ([_row(two, correct=False, missing=["square"])] * missing
             + [_row(two, correct=False, no_extra=False)] * extra + [_row(two)] * (4 - missing - extra))
    _write(folder, single, pairs, _flux_grounding((0.95, 4.0, 0.3), (0.5, 1.2, 0.9)))
    if settings:
        (folder / targets.SETTINGS_FILE).write_text(json.dumps({"architecture": "flux", "loss_layers": loss_layers}))
    return folder


def test_flux_targets_are_the_issues_and_read_the_loss_set_only(tmp_path):
    v = targets.results(_flux_folder(tmp_path))
    assert v["architecture"] == "flux" and v["single_correct"] == 0.9
    assert v["missing_or_merged"] == 0.25 and v["extra_object"] == 0.25
    rows = {name: (got, met) for name, got, met in targets.checks(v)}
    assert rows["joint: pointing >= 0.9 (steps 3 / 6 / 9 of 20)"] == ("0.95 / 0.95 / 0.95", True)
    assert rows["joint: own/other >= 3 (steps 3 / 6 / 9 of 20)"][1] is True
    assert rows["joint: cosine <= 0.5 (steps 3 / 6 / 9 of 20)"][1] is True
    shown = [name for name, (_, met) in rows.items() if met is None]
    assert shown and all(name.endswith(", shown, not a target") for name in shown)  # measured, not counted
    assert any(name.startswith("joint+single:") for name in shown)
    assert not any(name.startswith("joint:") for name in shown)  # the set the loss reads counts
    assert rows["vanilla one subject correct >= 0.9"][1] is True
    assert rows["two subjects: missing or merged >= 0.25"][1] is True
    assert rows["two subjects: extra object <= 0.25"][1] is True
    assert not any("colour leakage" in name for name in rows)
    assert targets.rank_key(v) == (6, 0.9)
    # The UNet's thresholds on the same vanilla rates: one-subject, extra-object and neglect all fail.
    unet = {name: met for name, _, met in targets.checks({**v, **{f"{ls} {k} t={t}": 1.0 for ls in
                                                                   targets.GROUNDING_LAYERS for k in
                                                                   ("pointing", "ratio", "cosine")
                                                                   for t in targets.TIMESTEPS}}, targets.TARGETS)}
    assert not unet["vanilla one subject correct >= 0.95"] and not unet["two subjects: extra object <= 0.15"]
    assert not unet["two subjects: missing or merged >= 0.3"]


def test_x0_finds_is_shown_beside_the_pointing_targets_and_not_counted(tmp_path):
    folder = _flux_folder(tmp_path)
    gpath = folder / "grounding" / "grounding.json"
    grounding = json.loads(gpath.read_text())
    for ls in grounding:  # grounding.py writes the same yardstick under every layer set
        for lv, x0 in zip(targets.FLUX_TARGETS.levels, (0.5, 0.75, 0.97)):
            grounding[ls]["rows"][f"renders {lv.label}"]["x0_pointing"] = x0
    gpath.write_text(json.dumps(grounding))
    v = targets.results(folder)
    rows = {name: (got, met) for name, got, met in targets.checks(v)}
    assert rows["x0 finds, the yardstick of pointing (steps 3 / 6 / 9 of 20), shown, not a target"] == (
        "0.50 / 0.75 / 0.97", None)
    assert targets.rank_key(v) == (6, 0.9)


def test_flux_loss_set_given_counts_that_set(tmp_path):
    v = targets.results(_flux_folder(tmp_path, loss_layers="joint+single"))
    met = {name: ok for name, _, ok in targets.checks(v)}
    assert met["joint+single: pointing >= 0.9 (steps 3 / 6 / 9 of 20)"] is False
    assert met["joint: pointing >= 0.9 (steps 3 / 6 / 9 of 20), shown, not a target"] is None
    assert targets.rank_key(v)[0] == 3


def test_flux_threshold_edges(tmp_path):
    a = targets.results(_flux_folder(tmp_path / "a", single_ok=8, two_failed=(0, 2)))
    met = {name: ok for name, _, ok in targets.checks(a)}
    assert met["vanilla one subject correct >= 0.9"] is False  # 0.8
    assert met["two subjects: missing or merged >= 0.25"] is False  # 0.0
    assert met["two subjects: extra object <= 0.25"] is False  # 0.5


def test_report_ranks_each_architecture_in_its_own_table(tmp_path):
    one, two = [["circle", "red"]], [["circle", None], ["square", None]]
    unet = tmp_path / "unet"
    _write(unet, [_row(one)], [_row(two)], _grounding(0.95, 4.0, 0.3))
    good = _flux_folder(tmp_path / "good")
    poor = _flux_folder(tmp_path / "poor", single_ok=5)
    legacy = _flux_folder(tmp_path / "legacy", settings=False)  # no settings file: known by its joint maps
    assert targets.results(legacy)["architecture"] == "flux"
    text = targets.report([poor, unet, good])
    unet_part, flux_part = text.split("Architecture `unet`")
    assert "down: pointing" in unet_part and "joint:" not in unet_part
    assert "joint: pointing" in flux_part and "down:" not in flux_part
    assert flux_part.index("/good)") < flux_part.index("/poor)")
    assert "| targets met | 6 of 6 | 5 of 6 |" in flux_part
    assert "0.900 / 0.800 / 0.700" in flux_part  # the sigmas grounding.py wrote
