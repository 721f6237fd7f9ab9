"""The ShapesBench runner end to end: graphs through ComfyUI's executor, scored lines, resuming.

Skipped (with the reason) only when the tiny model file has not been exported yet
(tools/train_tiny_model.py writes models/ai_t2i_tiny_shapes.safetensors).
AI_T2I_TINY_MODEL points the test at another export (e.g. a candidate before it is committed).
"""
from __future__ import annotations

import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_FILE = pathlib.Path(os.environ.get("AI_T2I_TINY_MODEL", ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"))

pytestmark = pytest.mark.skipif(
    not MODEL_FILE.is_file(),
    reason=f"the tiny model {MODEL_FILE.name} is not exported yet (tools/train_tiny_model.py writes it)")

SCORE_FIELDS = {"present", "bound", "no_extra", "correct", "n_detected", "missing", "merged", "boxes", "detected"}


def _lines(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_prompt_two_methods_and_resume(tmp_path):
    from benchmarks.shapesbench.prompts import EVAL_PROMPTS
    from benchmarks.shapesbench.run import main

    out = tmp_path / "bench"
    argv = ["--out", str(out), "--model", str(MODEL_FILE), "--prompts", "1", "--seeds", "1", "--steps", "4",
            "--methods", "vanilla,ai_t2i"]
    main(argv)
    results = out / "results.jsonl"
    rows = _lines(results)
    assert [(r["prompt"], r["seed"], r["method"]) for r in rows] == [
        (EVAL_PROMPTS[0].text, 0, "vanilla"), (EVAL_PROMPTS[0].text, 0, "ai_t2i")]
    for r in rows:
        assert SCORE_FIELDS <= r.keys()
        assert r["steps"] == 4 and r["node_method"] in ("KSampler", "AI-T2I")
        assert (out / r["image"]).is_file()
    assert (out / "summary.md").read_text().count("| vanilla |") >= 1
    assert (out / "grid.png").is_file()

    before = results.read_bytes()
    main(argv)  # everything is done: nothing is run or added
    assert results.read_bytes() == before

    # A kill mid-write leaves a torn last line: it is cut off and only that job is redone.
    first = before.split(b"\n")[0] + b"\n"
    results.write_bytes(first + b'{"prompt": "a circ')
    main(argv)
    assert [(r["seed"], r["method"]) for r in _lines(results)] == [(0, "vanilla"), (0, "ai_t2i")]
    assert results.read_bytes().startswith(first)

    # Rows made with another model of the same file name are refused, not mixed in.
    from benchmarks.shapesbench.run import model_digest
    assert {r["model_sha256"] for r in _lines(results)} == {model_digest(MODEL_FILE)}
    results.write_text("".join(json.dumps({**r, "model_sha256": "0" * 12}) + "\n" for r in _lines(results)))
    with pytest.raises(SystemExit, match="other settings"):
        main(argv)
