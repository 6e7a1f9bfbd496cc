"""Label Studio: the box-correction project, tasks out (push), annotations back (harvest).

Conversions between Label Studio results and pixel boxes are pure (``results``); the rest talks
to a server through ``label_studio_sdk`` 2.x (``LabelStudio(base_url=..., api_key=...)``); ``connect``
builds one whose unreachable server or refused token is a one-line error (``client``).
"""

from attnloop.labelstudio.annotator import put_frames, read_truth, simulate_annotator, write_truth
from attnloop.labelstudio.client import LabelStudioRefused, LabelStudioUnavailable, connect
from attnloop.labelstudio.harvest import HarvestResult, harvest
from attnloop.labelstudio.project import TEMPLATES, bootstrap, find_project, project_classes, template_config
from attnloop.labelstudio.push import Candidate, NotServed, PushInterrupted, PushResult, push, push_scored
from attnloop.labelstudio.results import (
    Correction,
    Problem,
    clip_box,
    insert_labels,
    parse_annotation,
    percent_to_pixels,
    pixels_to_percent,
)

__all__ = [
    "TEMPLATES",
    "Candidate",
    "Correction",
    "HarvestResult",
    "LabelStudioRefused",
    "LabelStudioUnavailable",
    "NotServed",
    "Problem",
    "PushInterrupted",
    "PushResult",
    "bootstrap",
    "clip_box",
    "connect",
    "find_project",
    "harvest",
    "insert_labels",
    "parse_annotation",
    "percent_to_pixels",
    "pixels_to_percent",
    "project_classes",
    "push",
    "push_scored",
    "put_frames",
    "read_truth",
    "simulate_annotator",
    "template_config",
    "write_truth",
]
