import sys, pathlib; sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`
import pytest

from ai_t2i_attention.layout_parse import parse_boxes
from benchmarks.shapesbench.layout import boxes_text, iou, target_boxes


@pytest.mark.parametrize("p", range(12))
def test_target_boxes_are_valid_apart_and_parse(p):
    a, b = target_boxes(p)
    assert target_boxes(p) == [a, b]  # fixed per prompt
    for box in (a, b):
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        assert 0.29 <= box[2] - box[0] <= 0.41
    assert iou(a, b) == 0
    parsed = parse_boxes(boxes_text(["circle", "square"], [a, b]), ("circle", "square"))
    assert [(v.x0, v.y0, v.x1, v.y1) for v in (parsed[0], parsed[1])] == [a, b]


def test_iou():
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0


def _args(tmp_path, model_bytes=b"weights"):
    import argparse
    model = tmp_path / "tiny.safetensors"
    model.write_bytes(model_bytes)
    return argparse.Namespace(model=model, steps=20, cfg=5.0, sampler="euler", scheduler="normal",
                              noise_seed=0, weight=1.0, end_percent=0.5, out=str(tmp_path / "out"),
                              prompts="0", seeds=1, strengths=[1.0])


def test_rows_name_the_model_by_file_and_digest(tmp_path):
    from benchmarks.shapesbench.layout import run_settings
    from benchmarks.shapesbench.run import model_digest
    args = _args(tmp_path)
    settings = run_settings(args)
    assert settings["model"] == "tiny.safetensors"
    assert settings["model_sha256"] == model_digest(args.model)
    (tmp_path / "b").mkdir()
    other = _args(tmp_path / "b", b"other weights")
    assert run_settings(other)["model_sha256"] != settings["model_sha256"]


def test_a_folder_made_with_another_model_is_refused_before_anything_runs(tmp_path):
    import json
    from benchmarks.shapesbench.layout import run, run_settings
    args = _args(tmp_path)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    row = {"prompt_index": 0, "seed": 0, "method": "vanilla", **run_settings(args), "model_sha256": "0123456789ab"}
    (out / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match="other settings"):
        run(args)  # no executor is made: the refusal comes first


def test_summary_names_the_model(tmp_path):
    import json
    from benchmarks.shapesbench.layout import run_settings, write_summary
    args = _args(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    subjects = [{"iou": 0.6, "centre_in": True, "found": True, "any_iou": 0.6}] * 2
    row = {"prompt_index": 0, "prompt": "a circle and a square", "seed": 0, "method": "vanilla",
           "image": "images/none.png", **run_settings(args), "correct": True, "present": True, "subjects": subjects}
    (out / "results.jsonl").write_text(json.dumps(row) + "\n")
    write_summary(out)
    assert "Model tiny.safetensors," in (out / "summary.md").read_text()
