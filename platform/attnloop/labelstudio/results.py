"""Label Studio results ↔ attnloop boxes, and labeling configs filled with a model's classes.

Pure functions, no server: Label Studio stores a rectangle as percentages of the image
(``x, y, width, height`` of the top-left corner and size, ``rotation`` in degrees, plus
``original_width/height``); attnloop uses pixel ``[x0, y0, x1, y1]`` with x1/y1 exclusive.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

# Names of the controls in labelstudio_templates/*.xml; the conversions below rely on them.
IMAGE, EVIDENCE, CLASS, FLAG, COMMENT = "image", "evidence", "class", "flag", "comment"
SHORTCUT = "shortcut"  # RectangleLabels for what the model wrongly used (a shortcut mark), beside the evidence boxes
SHORTCUT_LABEL = "model used this"  # its one label
NO_OBJECT, WRONG_PLACE = "no relevant object", "model looked at the wrong place"
FLAGS = (NO_OBJECT, WRONG_PLACE)

Box = list[float]


@dataclass(frozen=True)
class Problem:
    """Why (part of) an annotation could not be used."""

    task: int | None
    reason: str  # one of REASONS
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "reason": self.reason, "detail": self.detail}


REASONS = ("malformed", "zero_area", "rotated", "outside_image", "unknown_label", "unknown_class", "no_box")


@dataclass
class Correction:
    """What one completed annotation says: evidence boxes and shortcut marks in pixels, the class, flags and comment."""

    boxes: list[Box] = field(default_factory=list)
    label: str | None = None
    shortcut_boxes: list[Box] = field(default_factory=list)  # regions the model used and should not
    flags: list[str] = field(default_factory=list)
    comment: str | None = None
    problems: list[Problem] = field(default_factory=list)


# --- geometry ---------------------------------------------------------------------------------


def pixels_to_percent(box: Sequence[float], width: float, height: float) -> dict[str, float]:
    """A pixel box ``[x0, y0, x1, y1]`` as a Label Studio rectangle value (percent of the image)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    x0, y0, x1, y1 = (float(v) for v in box)
    return {
        "x": 100.0 * x0 / width,
        "y": 100.0 * y0 / height,
        "width": 100.0 * (x1 - x0) / width,
        "height": 100.0 * (y1 - y0) / height,
        "rotation": 0.0,
    }


def percent_to_pixels(value: dict[str, Any], width: float, height: float) -> Box:
    """A Label Studio rectangle value as a pixel box (not clipped; rotation ignored — check it first)."""
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    x0, y0 = x / 100.0 * width, y / 100.0 * height
    return [x0, y0, x0 + w / 100.0 * width, y0 + h / 100.0 * height]


def clip_box(box: Sequence[float], width: float, height: float) -> Box:
    """The part of ``box`` inside a ``width``×``height`` image (may have no area)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]


def has_area(box: Sequence[float]) -> bool:
    return box[2] > box[0] and box[3] > box[1]


def is_rotated(value: dict[str, Any], *, tolerance: float = 1e-6) -> bool:
    """True for a rectangle turned by anything but a multiple of 360°."""
    angle = float(value.get("rotation") or 0.0) % 360.0
    return min(angle, 360.0 - angle) > tolerance


# --- results we write (predictions, simulated annotations) -----------------------------------


def rectangle_result(
    box: Sequence[float], label: str, width: int, height: int, *, from_name: str = EVIDENCE, to_name: str = IMAGE, id: str | None = None
) -> dict[str, Any]:
    """A ``rectanglelabels`` result item for a pixel box."""
    item = {
        "from_name": from_name,
        "to_name": to_name,
        "type": "rectanglelabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {**pixels_to_percent(box, width, height), "rectanglelabels": [label]},
    }
    if id is not None:
        item["id"] = id
    return item


def choices_result(values: Sequence[str], *, from_name: str = CLASS, to_name: str = IMAGE, id: str | None = None) -> dict[str, Any]:
    item = {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": list(values)}}
    if id is not None:
        item["id"] = id
    return item


def text_result(text: str, *, from_name: str = COMMENT, to_name: str = IMAGE) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": [text]}}


# --- results we read (completed annotations) -------------------------------------------------


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_annotation(
    result: Any, *, classes: Iterable[str], width: int | None = None, height: int | None = None, task: int | None = None
) -> Correction:
    """The boxes (pixels, clipped to the image), class, flags and comment of one annotation result.

    ``width``/``height`` (the frame's size, from the task data) are used where a rectangle lacks
    ``original_width/height``. Every item that cannot be used becomes a :class:`Problem` naming
    the task and the reason; the rest of the annotation is still read.
    """
    known = set(classes)
    out = Correction()

    def problem(reason: str, detail: str) -> None:
        out.problems.append(Problem(task, reason, f"task {task}: {detail}"))

    if not isinstance(result, list):
        problem("malformed", f"result is {type(result).__name__}, expected a list of regions")
        return out
    for index, item in enumerate(result):
        where = f"region {index}"
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            problem("malformed", f"{where} is {item!r:.80}, expected an object with a 'value' object")
            continue
        kind, value, name = item.get("type"), item["value"], item.get("from_name")
        if (kind == "rectanglelabels" or kind == "rectangle") and name == SHORTCUT:
            box = _read_rectangle(item, value, where, None, width, height, problem)
            if box is not None:
                out.shortcut_boxes.append(box)
        elif kind == "rectanglelabels" or (kind == "rectangle" and name == EVIDENCE):
            box = _read_rectangle(item, value, where, known, width, height, problem)
            if box is not None:
                out.boxes.append(box)
        elif kind == "choices" and name == CLASS:
            choices = value.get("choices")
            if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
                problem("malformed", f"{where}: class choice {choices!r}, expected one class name")
            elif choices[0] not in known:
                problem("unknown_class", f"{where}: class {choices[0]!r} is not one of the model's classes {sorted(known)}")
            else:
                out.label = choices[0]
        elif kind == "choices" and name == FLAG:
            choices = value.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                problem("malformed", f"{where}: flags {choices!r}, expected a list of names")
            else:
                out.flags.extend(c for c in choices if c not in out.flags)
        elif kind == "textarea" and name == COMMENT:
            text = value.get("text")
            texts = text if isinstance(text, list) else [text]
            if not all(isinstance(t, str) for t in texts):
                problem("malformed", f"{where}: comment {text!r}, expected text")
            else:
                out.comment = "\n".join(texts) or None
        # other result types (relations, region-level meta) carry nothing attnloop reads
    return out


def _read_rectangle(item, value, where, known: set[str] | None, width, height, problem) -> Box | None:
    """The rectangle in pixels, clipped to the image; None (and a problem) where it cannot be used.
    ``known``: the classes its labels must name (None: a shortcut mark, whose label is not a class)."""
    try:
        w, h = item.get("original_width", width), item.get("original_height", height)
        if w is None or h is None:
            raise ValueError("image size unknown: no original_width/height in the region and no width/height in the task")
        w, h = _number(w), _number(h)
        if w <= 0 or h <= 0:
            raise ValueError(f"image size {w:g}×{h:g}")
        numbers = {key: _number(value[key]) for key in ("x", "y", "width", "height")}
        rotated = is_rotated({"rotation": _number(value.get("rotation") or 0.0)})
        raw = percent_to_pixels(numbers, w, h)
    except KeyError as err:
        problem("malformed", f"{where}: rectangle {value!r:.120} lacks {err}")
        return None
    except (TypeError, ValueError) as err:
        problem("malformed", f"{where}: rectangle {value!r:.120} unreadable ({err})")
        return None
    labels = value.get("rectanglelabels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        problem("malformed", f"{where}: rectangle labels {labels!r}, expected a list of class names")
        return None
    unknown = [label for label in labels if known is not None and label not in known]
    if unknown:
        problem("unknown_label", f"{where}: rectangle label {unknown} is not one of the model's classes {sorted(known)}")
        return None
    if rotated:
        problem("rotated", f"{where}: rectangle rotated by {float(value['rotation']):g}°; attnloop boxes are axis-aligned — redraw it unrotated")
        return None
    if not has_area(raw):
        problem("zero_area", f"{where}: rectangle {value['width']}% × {value['height']}% has no area")
        return None
    box = clip_box(raw, w, h)
    if not has_area(box):
        problem("outside_image", f"{where}: rectangle lies outside the {w:g}×{h:g} image")
        return None
    return [round(v, 3) for v in box]


# --- labeling configs --------------------------------------------------------------------------


def insert_labels(config: str, classes: Sequence[str], *, boxes: str = EVIDENCE, choices: str = CLASS) -> str:
    """The labeling config with one ``<Label>`` per class in RectangleLabels ``boxes`` and one
    ``<Choice>`` per class in Choices ``choices`` (replacing whatever was there)."""
    classes = list(classes)
    if len(classes) < 1 or len(set(classes)) != len(classes) or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f"classes must be distinct non-empty names, got {classes}")
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        root = ET.fromstring(config, parser=parser)
    except ET.ParseError as err:
        raise ValueError(f"the labeling config is not valid XML: {err}") from None
    targets = {"RectangleLabels": boxes, "Choices": choices}
    found = set()
    for element in root.iter():
        if element.tag in targets and element.get("name") == targets[element.tag]:
            found.add(element.tag)
            for child in list(element):
                element.remove(child)
            child_tag = "Label" if element.tag == "RectangleLabels" else "Choice"
            for name in classes:
                ET.SubElement(element, child_tag, {"value": name})
    missing = [f'<{tag} name="{name}">' for tag, name in targets.items() if tag not in found]
    if missing:
        raise ValueError(f"the labeling config has no {' and no '.join(missing)}; attnloop fills the classes into those controls")
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def config_labels(config: str, *, boxes: str = EVIDENCE) -> list[str]:
    """The rectangle labels a labeling config offers."""
    root = ET.fromstring(config)
    for element in root.iter("RectangleLabels"):
        if element.get("name") == boxes:
            return [label.get("value") for label in element.iter("Label")]
    raise ValueError(f'the labeling config has no <RectangleLabels name="{boxes}">')
