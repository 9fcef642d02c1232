"""The store's versioned layout: the one place that knows paths, dtypes and chunks."""

from mosic.store_schema.layout import STORE_VERSION, video_key
from mosic.store_schema.store import (
    Failure,
    StoreError,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
)

__all__ = [
    "STORE_VERSION",
    "Failure",
    "StoreError",
    "TrackStore",
    "VideoData",
    "VideoMeta",
    "VideoRecord",
    "video_key",
]
