"""Point trackers by name: ``build_tracker("lk")``."""

from __future__ import annotations

from collections.abc import Callable

from mosic.stages.trackers.base import Tracker, TrackResult
from mosic.stages.trackers.lk import LKConfig, LKTracker


def _cotracker3(variant: str) -> Callable[..., Tracker]:
    """A builder of CoTracker3 ``variant`` that imports torch only when called."""

    def build(**options) -> Tracker:
        from mosic.stages.trackers.cotracker import CoTrackerTracker

        return CoTrackerTracker(variant, **options)

    return build


TRACKERS: dict[str, Callable[..., Tracker]] = {
    "lk": LKTracker,
    "cotracker3-offline": _cotracker3("offline"),
    "cotracker3-online": _cotracker3("online"),
}


def build_tracker(name: str, **options) -> Tracker:
    """The tracker registered as ``name``, built with ``options`` (its settings)."""
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; known trackers: {', '.join(sorted(TRACKERS))}")
    try:
        return TRACKERS[name](**options)
    except TypeError:  # an option this tracker does not take (e.g. --device cuda for lk)
        given = ", ".join(sorted(options))
        raise ValueError(f"tracker {name!r} does not take the options given ({given})") from None


__all__ = ["TRACKERS", "LKConfig", "LKTracker", "TrackResult", "Tracker", "build_tracker"]
