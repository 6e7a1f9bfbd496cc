"""When a monitor run raises an alert: one threshold per figure, read from the environment like the gate's.

======================================  =========  ==============================================================
variable                                default    an alert when, on one line over the window
======================================  =========  ==============================================================
``ATTNLOOP_MONITOR_CLASS_PSI``          0.2        the class mix's population stability index against the reference
``ATTNLOOP_MONITOR_CONFIDENCE_KS``      0.2        the confidence distribution's Kolmogorov–Smirnov distance
``ATTNLOOP_MONITOR_EMBEDDING_AUC``      0.75       a classifier tells the line's embeddings from the reference's this well (ROC AUC)
``ATTNLOOP_MONITOR_OFF_OBJECT_RISE``    0.15       the share of off-object frames (attention fixed on one spot: focus above
                                                   the reference's 90th percentile) rose this much
``ATTNLOOP_MONITOR_QUARANTINE_SHARE``   0.05       this share of the line's frames could not be scored
``ATTNLOOP_MONITOR_P_VALUE``            0.001      (every drift figure) and its test's p-value is below this
``ATTNLOOP_MONITOR_MIN_FRAMES``         50         (every figure) the line has at least this many frames in the window
``ATTNLOOP_MONITOR_WINDOW_HOURS``       6          the longest window a monitor run tests, ending now: each line is tested on its last
                                                   hours, as few as hold ``MIN_FRAMES`` frames (a busy line: the last hour)
======================================  =========  ==============================================================

A drift figure needs both its size and its significance: with a few hundred frames a small
distance is noise, with tens of thousands a tiny significant one is not worth waking anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

PREFIX = "ATTNLOOP_MONITOR_"


@dataclass(frozen=True)
class Thresholds:
    class_psi: float = 0.2
    confidence_ks: float = 0.2
    embedding_auc: float = 0.75
    off_object_rise: float = 0.15
    quarantine_share: float = 0.05
    p_value: float = 0.001
    min_frames: int = 50
    window_hours: float = 6.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{PREFIX}{f.name.upper()} must not be negative, got {getattr(self, f.name)}")
        if not 0.5 <= self.embedding_auc <= 1.0:
            raise ValueError(f"{PREFIX}EMBEDDING_AUC is a ROC AUC in [0.5, 1], got {self.embedding_auc}")
        if not 0.0 < self.p_value < 1.0:
            raise ValueError(f"{PREFIX}P_VALUE must lie in (0, 1), got {self.p_value}")
        if self.window_hours <= 0:
            raise ValueError(f"{PREFIX}WINDOW_HOURS must be positive, got {self.window_hours}")

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Thresholds":
        values = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{f.name.upper()} must be a number, got {raw!r}") from None
        return cls(**values)
