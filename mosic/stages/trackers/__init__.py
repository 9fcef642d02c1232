"""Point trackers by name: ``build_tracker("lk")``."""

from __future__ import annotations

from collections.abc import Callable

from mosic.stages.trackers.base import Tracker, TrackResult
from mosic.stages.trackers.lk import LKConfig, LKTracker

TRACKERS: dict[str, Callable[..., Tracker]] = {"lk": LKTracker}


def build_tracker(name: str, **options) -> Tracker:
    """The tracker registered as ``name``, built with ``options`` (its settings)."""
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; known trackers: {', '.join(sorted(TRACKERS))}")
    return TRACKERS[name](**options)


__all__ = ["TRACKERS", "LKConfig", "LKTracker", "TrackResult", "Tracker", "build_tracker"]
