"""Label Studio results ↔ pixel boxes and template label insertion (pure; no server)."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attnloop.labelstudio.project import TEMPLATES, template_config
from attnloop.labelstudio.results import (
    choices_result,
    clip_box,
    config_labels,
    insert_labels,
    is_rotated,
    parse_annotation,
    percent_to_pixels,
    pixels_to_percent,
    rectangle_result,
    text_result,
)

CLASSES = ["fine", "scratch", "dent"]


def test_percent_pixel_round_trip_on_odd_sizes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(7, 2000, size=2))
        x0, y0 = rng.uniform(0, width - 2), rng.uniform(0, height - 2)
        box = [x0, y0, rng.uniform(x0 + 1, width), rng.uniform(y0 + 1, height)]
        value = pixels_to_percent(box, width, height)
        assert value["rotation"] == 0.0
        assert percent_to_pixels(value, width, height) == pytest.approx(box, abs=1e-9)


def test_percent_values_match_label_studio_convention():
    # 40×20 image, box from (10, 5) to (30, 15): top-left 25 %/25 %, size 50 %/50 %
    assert pixels_to_percent([10, 5, 30, 15], 40, 20) == {"x": 25.0, "y": 25.0, "width": 50.0, "height": 50.0, "rotation": 0.0}
    assert percent_to_pixels({"x": 25, "y": 25, "width": 50, "height": 50}, 40, 20) == [10.0, 5.0, 30.0, 15.0]
    with pytest.raises(ValueError, match="positive"):
        pixels_to_percent([0, 0, 1, 1], 0, 10)


def test_clip_box():
    assert clip_box([-5, -1, 50, 30], 40, 20) == [0.0, 0.0, 40.0, 20.0]
    assert clip_box([41, 2, 60, 10], 40, 20) == [40.0, 2.0, 40.0, 10.0]  # no area left
    assert clip_box([1, 2, 3, 4], 40, 20) == [1.0, 2.0, 3.0, 4.0]


def test_rotation_detection():
    assert not is_rotated({})
    assert not is_rotated({"rotation": 0})
    assert not is_rotated({"rotation": 360.0})
    assert not is_rotated({"rotation": None})
    assert is_rotated({"rotation": 12.5})
    assert is_rotated({"rotation": -0.5})
    assert is_rotated({"rotation": 359.0})


def _annotation(*regions):
    return list(regions)


def test_parse_reads_boxes_class_flags_and_comment():
    result = _annotation(
        choices_result(["scratch"]),
        rectangle_result([10, 5, 30, 15], "scratch", 40, 20),
        rectangle_result([0, 0, 4, 4], "scratch", 40, 20),
        choices_result(["model looked at the wrong place"], from_name="flag"),
        text_result("edge of the plate"),
    )
    c = parse_annotation(result, classes=CLASSES, task=7)
    assert c.boxes == [[10.0, 5.0, 30.0, 15.0], [0.0, 0.0, 4.0, 4.0]]
    assert c.label == "scratch"
    assert c.flags == ["model looked at the wrong place"]
    assert c.comment == "edge of the plate"
    assert c.problems == []


def test_parse_reads_shortcut_marks_apart_from_the_evidence():
    """A box in the "shortcut" control is what the model wrongly used: it is not evidence, and its
    label is not a class; a bad one is a problem like any other region."""
    from attnloop.labelstudio.results import SHORTCUT, SHORTCUT_LABEL

    mark = rectangle_result([32, 0, 40, 6], SHORTCUT_LABEL, 40, 20, from_name=SHORTCUT)
    flat = rectangle_result([5, 5, 5, 9], SHORTCUT_LABEL, 40, 20, from_name=SHORTCUT)
    c = parse_annotation(_annotation(choices_result(["dent"]), rectangle_result([10, 5, 30, 15], "dent", 40, 20), mark, flat), classes=CLASSES, task=3)
    assert c.boxes == [[10.0, 5.0, 30.0, 15.0]] and c.shortcut_boxes == [[32.0, 0.0, 40.0, 6.0]] and c.label == "dent"
    assert [p.reason for p in c.problems] == ["zero_area"]


def test_parse_clips_to_the_image_and_uses_task_size_when_region_has_none():
    item = rectangle_result([30, 10, 50, 30], "dent", 40, 20)
    assert parse_annotation([item], classes=CLASSES).boxes == [[30.0, 10.0, 40.0, 20.0]]
    del item["original_width"], item["original_height"]
    item["value"] = {**pixels_to_percent([3, 2, 13, 12], 100, 50), "rectanglelabels": ["dent"]}
    assert parse_annotation([item], classes=CLASSES, width=100, height=50).boxes == [[3.0, 2.0, 13.0, 12.0]]
    # no size anywhere: reported, not guessed
    c = parse_annotation([item], classes=CLASSES, task=3)
    assert c.boxes == [] and [p.reason for p in c.problems] == ["malformed"] and "image size unknown" in c.problems[0].detail


def test_parse_reports_every_bad_region_and_keeps_the_rest():
    good = rectangle_result([10, 5, 30, 15], "fine", 40, 20)
    zero = rectangle_result([10, 5, 10, 15], "fine", 40, 20)
    rotated = rectangle_result([1, 1, 9, 9], "fine", 40, 20)
    rotated["value"]["rotation"] = 30
    unknown = rectangle_result([1, 1, 9, 9], "cat", 40, 20)
    garbage = rectangle_result([1, 1, 9, 9], "fine", 40, 20)
    garbage["value"]["x"] = "left-ish"
    missing = {"type": "rectanglelabels", "from_name": "evidence", "value": {"y": 3, "rectanglelabels": ["fine"]}, "original_width": 40, "original_height": 20}
    nan = rectangle_result([1, 1, 9, 9], "fine", 40, 20)
    nan["value"]["width"] = float("nan")
    outside = rectangle_result([1, 1, 9, 9], "fine", 40, 20)
    outside["value"]["x"] = 150.0
    bad_class = choices_result(["cat"])
    not_a_dict = "oops"
    result = [good, zero, rotated, unknown, garbage, missing, nan, outside, bad_class, not_a_dict, choices_result(["fine"])]
    c = parse_annotation(result, classes=CLASSES, task=42)
    assert c.boxes == [[10.0, 5.0, 30.0, 15.0]]
    assert c.label == "fine"
    assert sorted(p.reason for p in c.problems) == sorted(
        ["zero_area", "rotated", "unknown_label", "malformed", "malformed", "malformed", "outside_image", "unknown_class", "malformed"]
    )
    assert all(p.task == 42 and p.detail.startswith("task 42:") for p in c.problems)


def test_parse_rejects_a_result_that_is_not_a_list():
    c = parse_annotation({"x": 1}, classes=CLASSES, task=1)
    assert c.boxes == [] and [p.reason for p in c.problems] == ["malformed"]


def test_insert_labels_fills_rectangles_and_class_choices_only():
    config = insert_labels(
        '<View><!-- keep me --><Image name="image" value="$image"/>'
        '<RectangleLabels name="evidence" toName="image"><Label value="old"/></RectangleLabels>'
        '<Choices name="class" toName="image"/>'
        '<Choices name="flag" toName="image"><Choice value="no relevant object"/></Choices></View>',
        ["a & b", "c"],
    )
    root = ET.fromstring(config)
    assert [e.get("value") for e in root.find("RectangleLabels").iter("Label")] == ["a & b", "c"]
    choices = {c.get("name"): [e.get("value") for e in c.iter("Choice")] for c in root.iter("Choices")}
    assert choices == {"class": ["a & b", "c"], "flag": ["no relevant object"]}
    assert "keep me" in config
    assert config_labels(config) == ["a & b", "c"]


def test_insert_labels_errors_name_the_missing_control():
    with pytest.raises(ValueError, match='RectangleLabels name="evidence"'):
        insert_labels('<View><Choices name="class" toName="image"/></View>', ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        insert_labels('<View/>', ["a", "a"])
    with pytest.raises(ValueError, match="not valid XML"):
        insert_labels("<View>", ["a"])


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_shipped_templates_take_the_classes(template):
    config = template_config(template, CLASSES)
    root = ET.fromstring(config)
    assert config_labels(config) == CLASSES
    names = {e.get("name") for e in root.iter() if e.get("name")}
    assert {"image", "evidence", "shortcut", "class", "flag", "comment"} <= names
    assert all(e.get("canRotate") == "false" for e in root.iter("RectangleLabels"))
    shortcut = next(e for e in root.iter("RectangleLabels") if e.get("name") == "shortcut")
    assert [label.get("value") for label in shortcut.iter("Label")] == ["model used this"]  # not the classes
    if template == "box_correction_overlay":
        assert any(e.get("value") == "$overlay" for e in root.iter("Image"))


def test_unknown_template_lists_the_valid_names():
    with pytest.raises(ValueError, match="box_correction, box_correction_overlay"):
        template_config("fancy", CLASSES)


def test_settings_come_from_env_and_a_missing_server_says_what_to_set():
    from attnloop.config import DEFAULT_PROJECT, Settings

    settings = Settings.from_env({"ATTNLOOP_LABEL_STUDIO_URL": "http://127.0.0.1:8080/", "ATTNLOOP_LABEL_STUDIO_TOKEN": "t"}).label_studio
    assert (settings.url, settings.token, settings.project) == ("http://127.0.0.1:8080", "t", DEFAULT_PROJECT)
    assert "'t'" not in repr(settings)  # the token stays out of logs
    with pytest.raises(ValueError, match="ATTNLOOP_LABEL_STUDIO_URL"):
        Settings.from_env({}).label_studio.client()


def test_cli_commands_register_on_a_parser():
    import argparse

    from attnloop.apps.cli import labelstudio as cli

    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ls", "push", "--model-version", "3", "--max-open", "50"])
    assert args.func is cli.cmd_push and args.max_open == 50 and args.batch_size == 100
    assert parser.parse_args(["ls", "harvest"]).func is cli.cmd_harvest
    assert parser.parse_args(["ls", "bootstrap", "--classes", "a,b"]).func is cli.cmd_bootstrap
    args = parser.parse_args(["ls", "simulate", "--truth", "t.jsonl", "--skip-rate", "0.1"])
    assert args.func is cli.cmd_simulate and args.skip_rate == 0.1
    with pytest.raises(ValueError, match="exactly one of --card"):
        cli.cmd_bootstrap(parser.parse_args(["ls", "bootstrap"]), None)


def test_candidate_from_a_scoring_row():
    from attnloop.labelstudio.push import Candidate, task_for

    row = {
        "key": "frames/a/2024-01-01/x.png", "hash": "h", "width": 64, "height": 48, "class": "dent", "confidence": 0.6,
        "least_confidence": 0.6, "branch_disagreement": 0.3, "background_attention": 0.9, "margin": 0.5, "entropy": 0.4,
        "attention": [0.0] * 47 + [1.0], "attention_h": 6, "attention_w": 8,
    }
    c = Candidate.from_row(row)
    assert c.priority == pytest.approx(0.5) and c.attention.shape == (6, 8)  # the margin signal
    task = task_for(c, image_url="http://s/x.png", overlay_url=None, model_version="7")
    assert task["data"]["overlay"] == "http://s/x.png" and task["data"]["has_overlay"] is False
    (prediction,) = task["predictions"]
    box = next(r for r in prediction["result"] if r["type"] == "rectanglelabels")
    # the last attention cell is the bottom-right 8×8 pixels of the 64×48 frame
    assert parse_annotation([box], classes=["dent"]).boxes == [[56.0, 40.0, 64.0, 48.0]]
    with pytest.raises(ValueError, match="lacks hash"):
        Candidate.from_row({k: v for k, v in row.items() if k != "hash"})
