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
