"""``convert_v1``: a version 2 store written from a version 1 store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mosic.store_schema.chunks import FrameCodec
from mosic.store_schema.errors import CorruptVideo
from mosic.store_schema.parts import encode_video
from mosic.store_schema.records import Failure
from mosic.store_schema.store import TrackStore
from mosic.store_schema.v1 import V1Store


@dataclass
class ConvertResult:
    """What a conversion wrote."""

    videos: int = 0
    frames: int = 0
    failures: list[Failure] = field(default_factory=list)


def convert_v1(
    source: V1Store,
    target: str | Path,
    codec: FrameCodec,
    videos_per_part: int,
    on_video: Callable[[int, Failure | None], None] | None = None,
) -> ConvertResult:
    """Write every indexed video of ``source`` into a new version 2 store at ``target``.

    Frames are re-encoded with ``codec``, tracks copied (float16 already). A video whose data
    is missing or damaged in ``source`` is not copied: it becomes a failure row (stage
    ``convert``) beside the source's own failures.
    """
    store = TrackStore.create(target, source.extraction, codec)
    result = ConvertResult()
    store.update_failures(source.failures(), [])
    keys = source.keys()
    for first in range(0, len(keys), videos_per_part):
        writer = store.part_writer()
        for key in keys[first : first + videos_per_part]:
            try:
                data = source.read_video(key)
            except CorruptVideo as exc:
                failure = Failure(key, f"{source.path}/videos/{key}", "convert", exc.reason)
                result.failures.append(failure)
                if on_video:
                    on_video(0, failure)
                continue
            writer.append(encode_video(key, data, codec))
            result.frames += len(data.frames)
            if on_video:
                on_video(len(data.frames), None)
        records = writer.close()
        store.add_to_index(records)
        result.videos += len(records)
    store.update_failures(result.failures, [])
    return result
