"""The store's versioned layout: the one place that knows paths, dtypes, chunks and codecs."""

from mosic.store_schema.chunks import FrameCodec
from mosic.store_schema.errors import CorruptVideo, DamagedData, StoreError
from mosic.store_schema.layout import STORE_VERSION, video_key
from mosic.store_schema.location import StoreLocation
from mosic.store_schema.parts import EncodedVideo, encode_video
from mosic.store_schema.records import Failure, VideoData, VideoMeta, VideoRecord
from mosic.store_schema.store import ClipLocation, TrackStore, read_clip_rows

__all__ = [
    "STORE_VERSION",
    "ClipLocation",
    "CorruptVideo",
    "DamagedData",
    "EncodedVideo",
    "Failure",
    "FrameCodec",
    "StoreError",
    "StoreLocation",
    "TrackStore",
    "VideoData",
    "VideoMeta",
    "VideoRecord",
    "encode_video",
    "read_clip_rows",
    "video_key",
]
