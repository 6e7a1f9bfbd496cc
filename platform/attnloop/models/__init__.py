"""Attention models: a registry of ABN / MS-ABN architectures, cards and checkpoints."""

from attnloop.models import zoo as _zoo  # noqa: F401  (registers the architectures)
from attnloop.models._registry import get_model, list_models, register_model
from attnloop.models.abn import ABN, MSABN, OUTPUT_NAMES, ABNOutput
from attnloop.models.checkpoint import build_model, load_checkpoint, load_init_weights, make_card, save_checkpoint

__all__ = [
    "ABN",
    "MSABN",
    "OUTPUT_NAMES",
    "ABNOutput",
    "build_model",
    "get_model",
    "list_models",
    "load_checkpoint",
    "load_init_weights",
    "make_card",
    "register_model",
    "save_checkpoint",
]
