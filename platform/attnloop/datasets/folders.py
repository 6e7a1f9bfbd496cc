"""Real image folders → manifest records: class-subfolder trees, with optional boxes.

Layouts: ``ROOT/<class>/<image>`` (splits assigned by a stable hash of the path) or
``ROOT/<split>/<class>/<image>``. Boxes come from a Label Studio JSON export (rectangle
results in percent of the original size) or a COCO file (``bbox`` = x, y, width, height in
pixels), matched to images by file name; boxes whose label is in ``confounder_labels`` become
confounder boxes. Every image is decoded once: gray, RGB, 16-bit and multi-page TIFF load;
corrupt or unsupported files are reported with the reason and left out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from attnloop import imaging
from attnloop.datasets.manifest import SPLITS, Record

EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    message: str


@dataclass
class FolderImport:
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class BoxSet:
    """Boxes per image file name: evidence boxes and confounder boxes."""

    boxes: dict[str, list[list[float]]] = field(default_factory=dict)
    confounders: dict[str, list[list[float]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def add(self, name: str, box: list[float], *, confounder: bool) -> None:
        (self.confounders if confounder else self.boxes).setdefault(name, []).append(box)


def _label_studio_name(path: str) -> str:
    """Label Studio stores uploads as ``/data/upload/<project>/<8-hex>-<original name>``."""
    name = Path(path.split("?")[0]).name
    head, sep, tail = name.partition("-")
    return tail if sep and len(head) == 8 and all(c in "0123456789abcdef" for c in head) else name


def read_label_studio_export(path: str | Path, *, confounder_labels: set[str]) -> BoxSet:
    out = BoxSet()
    tasks = json.loads(Path(path).read_text())
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks")
    for task in tasks:
        image = next((v for v in task.get("data", {}).values() if isinstance(v, str)), None)
        annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if image is None or not annotations:
            continue
        name = _label_studio_name(image)
        latest = max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))
        for result in latest.get("result", []):
            if result.get("type") != "rectanglelabels":
                continue
            value, where = result.get("value", {}), f"task {task.get('id')} ({name})"
            try:
                w, h = float(result["original_width"]), float(result["original_height"])
                x0, y0 = value["x"] / 100 * w, value["y"] / 100 * h
                x1, y1 = x0 + value["width"] / 100 * w, y0 + value["height"] / 100 * h
            except (KeyError, TypeError) as err:
                out.problems.append(Problem(where, "malformed_box", f"{where}: rectangle without {err}"))
                continue
            if value.get("rotation"):
                out.problems.append(Problem(where, "rotated_box", f"{where}: rotated rectangle ({value['rotation']}°) left out"))
                continue
            box = [max(0.0, x0), max(0.0, y0), min(w, x1), min(h, y1)]
            if box[2] <= box[0] or box[3] <= box[1]:
                out.problems.append(Problem(where, "empty_box", f"{where}: rectangle with no area left out"))
                continue
            labels = set(value.get("rectanglelabels", []))
            out.add(name, box, confounder=bool(labels & confounder_labels))
    return out


def read_coco(path: str | Path, *, confounder_labels: set[str]) -> BoxSet:
    out = BoxSet()
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: a COCO file has 'images' and 'annotations'")
    images = {im["id"]: im for im in data["images"]}
    categories = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    for ann in data["annotations"]:
        image = images.get(ann.get("image_id"))
        where = f"annotation {ann.get('id')}"
        if image is None or len(ann.get("bbox", [])) != 4:
            out.problems.append(Problem(where, "malformed_box", f"{where}: no such image or no 4-number bbox"))
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        name = Path(image["file_name"]).name
        width, height = float(image.get("width", x + w)), float(image.get("height", y + h))
        box = [max(0.0, x), max(0.0, y), min(width, x + w), min(height, y + h)]
        if box[2] <= box[0] or box[3] <= box[1]:
            out.problems.append(Problem(where, "empty_box", f"{where} ({name}): box with no area left out"))
            continue
        out.add(name, box, confounder=categories.get(ann.get("category_id")) in confounder_labels)
    return out


def read_boxes(path: str | Path, *, confounder_labels: set[str] = frozenset({"confounder"})) -> BoxSet:
    """A Label Studio JSON export or a COCO file, told apart by their shape."""
    text = Path(path).read_text().lstrip()
    reader = read_label_studio_export if text.startswith("[") else read_coco
    return reader(path, confounder_labels=set(confounder_labels))


def hash_split(relative: str, *, val: float, test: float, seed: int) -> str:
    """A stable split from the file's path: adding images never moves the others."""
    u = int(hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def import_folder(
    root: str | Path, *, boxes: str | Path | None = None, val: float = 0.1, test: float = 0.2, seed: int = 0
) -> FolderImport:
    """Scan a class-subfolder tree; records use paths relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if val < 0 or test < 0 or val + test >= 1:
        raise ValueError(f"val and test shares must be ≥ 0 and sum below 1, got {val} and {test}")
    box_set = read_boxes(boxes) if boxes is not None else BoxSet()
    result = FolderImport(problems=list(box_set.problems))
    split_folders = [d for d in root.iterdir() if d.is_dir() and d.name in SPLITS]
    tops = [(d, d.name) for d in sorted(split_folders)] if split_folders else [(root, None)]
    for top, split in tops:
        for class_dir in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                relative = path.relative_to(root).as_posix()
                if path.suffix.lower() not in EXTENSIONS:
                    result.problems.append(Problem(relative, "unsupported_type", f"{relative}: not an image file ({path.suffix or 'no extension'})"))
                    continue
                try:
                    imaging.decode(path.read_bytes(), name=relative)
                except imaging.ImageError as err:
                    result.problems.append(Problem(relative, err.reason, str(err)))
                    continue
                result.records.append(
                    Record(
                        image=relative,
                        split=split or hash_split(relative, val=val, test=test, seed=seed),
                        label=class_dir.name,
                        boxes=box_set.boxes.get(path.name, []),
                        confounder_boxes=box_set.confounders.get(path.name, []),
                    )
                )
    if not result.records:
        raise ValueError(f"{root} holds no readable image in class subfolders (ROOT/<class>/<image> or ROOT/<split>/<class>/<image>)")
    return result
