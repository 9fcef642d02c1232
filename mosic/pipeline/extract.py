"""Stage one's orchestration: decode, track and store every video, resumably.

``extract_batch`` is the unit of work (it runs wherever the work is scheduled and writes only
its own part); ``run_extraction`` is the coordinator (it alone writes the index and
the failures table).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from mosic.pipeline.extract_config import ExtractConfig
from mosic.pipeline.io_process import IO, decode
from mosic.pipeline.pending import PendingIndex, plan_work
from mosic.stages.queries import (
    grid_points,
    query_frames,
    track_query_sets,
)
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.base import Tracker
from mosic.stages.video_io import DecodedVideo, VideoError, VideoSource
from mosic.store_schema import (
    EncodedVideo,
    Failure,
    FrameCodec,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
    encode_video,
)
from mosic.store_schema.parts import PartWriter

Batch = list[tuple[VideoSource, str]]  # (source, store key) pairs: one unit of work
BatchRunner = Callable[[list[Batch]], Iterator["VideoOutcome | PartDone"]]

FLUSH_EVERY_VIDEOS = 32
VIDEOS_PER_PART = 128  # most videos per task, and so per part (files: ~8 per part)
FLUSH_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one video: a record in the index, or a failure."""

    key: str
    source: str
    record: VideoRecord | None = None
    failure: Failure | None = None
    frames: int = 0
    tracked_frames: int = 0  # frames the tracker processed (windows overlap)
    track_seconds: float = 0.0
    busy_seconds: float = 0.0  # time its task spent on it: waiting for decode, track, write


def _one_line(exc: BaseException) -> str:
    """A failure reason on one line: the video error's reason, else the exception's text."""
    if isinstance(exc, VideoError):
        return exc.reason
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def track(
    key: str, source: VideoSource, video: DecodedVideo, config: ExtractConfig, tracker: Tracker
) -> tuple[VideoData, float, int] | VideoOutcome:
    """Track one decoded video's query sets: its data, the tracker's seconds and the frames it
    processed, or a failure."""
    try:
        t, h, w, _ = video.frames.shape
        started = time.perf_counter()
        starts = query_frames(t, config.query_every, config.horizon)
        points = grid_points(h, w, config.grid_for(tracker))
        tracks = track_query_sets(
            tracker, video.frames, starts, points, config.horizon, config.window_for(tracker)
        )
        seconds = time.perf_counter() - started
    except Exception as exc:  # a bad video must not stop the run: it becomes a failure row
        return failed(key, source, "track", exc)
    meta = VideoMeta(
        source=str(source.path),
        original_size=video.original_size,
        fps=video.fps,
        decoded_frames=video.decoded_frames,
        frame_stride=video.frame_stride,
    )
    data = VideoData(
        meta, video.frames, starts, tracks.positions, tracks.visible, tracks.confidence
    )
    return data, seconds, tracks.tracked_frames


def failed(key: str, source: VideoSource, stage: str, why: BaseException | str) -> VideoOutcome:
    """The outcome of a video that failed at ``stage`` for ``why`` (an exception or a reason)."""
    reason = why if isinstance(why, str) else _one_line(why)
    return VideoOutcome(
        key, str(source.path), failure=Failure(key, str(source.path), stage, reason)
    )


@dataclass(frozen=True)
class PartDone:
    """A part was finished (its videos can be indexed) or failed (``failure``: why)."""

    part: str
    keys: list[str]  # the videos appended to it
    records: list[VideoRecord]  # their index rows, if it was finished
    failure: str | None = None


_KEPT: dict[str, np.ndarray] = {}  # in the I/O child: decoded frames awaiting their tracks


def _decode_and_keep(source: VideoSource, *options) -> DecodedVideo:
    """In the I/O child: decode a video (``decode``'s options) and keep its frames to write."""
    video = decode(source, *options)
    _KEPT[str(source.path)] = video.frames
    return video


def _forget(source: VideoSource) -> None:
    """In the I/O child: drop the kept frames of a video that will not be written."""
    _KEPT.pop(str(source.path), None)


def _encode_kept(codec: FrameCodec, key: str, source: VideoSource, data: VideoData) -> EncodedVideo:
    """In the I/O child: encode a tracked video, its frames being the ones kept at decoding."""
    frames = _KEPT.pop(str(source.path), None)
    if frames is None:  # decoded by an I/O child that has died since
        raise FramesLost(key)
    return encode_video(key, replace(data, frames=frames), codec)


class FramesLost(LookupError):
    """The I/O child that decoded a video died before encoding it (the caller still has them)."""


def extract_batches(
    batches: list[Batch],
    store: TrackStore,
    config: ExtractConfig,
    tracker: Tracker,
) -> Iterator[VideoOutcome | PartDone]:
    """Extract batches of videos one video after another, each batch into a part of its own.

    Yields each video's outcome as it is appended to its part, and a ``PartDone`` when the
    part is finished: only then may its videos be indexed. This process's I/O child
    (``mosic.pipeline.io_process``) decodes the next video and encodes the previous one while
    the current one is tracked; this process appends the encoded chunks to the part.
    """
    cv2.setNumThreads(1)  # OpenCV's pool does not speed the tracker up, it only spins a core
    codec = config.codec()
    options = (config.size, config.frame_stride, config.max_frames, config.horizon)
    items = [(source, key, b) for b, batch in enumerate(batches) for source, key in batch]
    ahead = [IO.retried(_decode_and_keep, source, *options) for source, _, _ in items[:1]]
    writing: list[tuple] = []
    writer = None
    for i, (source, key, b) in enumerate(items):
        if i + 1 < len(items):
            ahead.append(IO.retried(_decode_and_keep, items[i + 1][0], *options))
        if i == 0 or items[i - 1][2] != b:  # a new batch: finish the previous part first
            while writing:
                yield _finished(*writing.pop(), writer)
            if writer is not None:
                yield _close(writer)
            writer = store.part_writer()
        started = time.perf_counter()
        video = ahead[i].result()  # waits for the decode
        decode_wait = time.perf_counter() - started
        ahead[i] = None
        if isinstance(video, DecodedVideo):
            tracked = track(key, source, video, config, tracker)
        else:  # a bad video must not stop the run
            tracked = failed(key, source, "decode", video)
        if isinstance(tracked, VideoOutcome):
            if isinstance(video, DecodedVideo):
                IO.submit(_forget, source)
            pending: Future | VideoOutcome = tracked
            encode_here: tuple = ()
            tracked_frames = 0
        else:
            data, seconds, tracked_frames = tracked
            without_frames = replace(data, frames=data.frames[:0])  # the child has them
            pending = IO.submit(_encode_kept, codec, key, source, without_frames)
            encode_here = (key, data, codec, seconds)  # if the child dies first
        if writing:
            yield _finished(*writing.pop(), writer)
        writing.append((pending, decode_wait, encode_here, source, tracked_frames))
    while writing:
        yield _finished(*writing.pop(), writer)
    if writer is not None:
        yield _close(writer)


def extract_batch(
    items: Batch, store: TrackStore, config: ExtractConfig, tracker: Tracker
) -> Iterator[VideoOutcome | PartDone]:
    """``extract_batches`` of one batch: one part."""
    return extract_batches([items], store, config, tracker)


def _finished(
    pending: Future | VideoOutcome, decode_wait: float, encode_here: tuple,
    source: VideoSource, tracked_frames: int, writer: PartWriter,
) -> VideoOutcome:  # fmt: skip
    """An encoded video appended to ``writer`` (or its failure), its decode wait counted,
    with the frames its tracker processed.

    If the I/O child died before or while encoding (another video's decoding can crash it),
    the video is encoded here from this process's copy of its frames (``encode_here``).
    A write error (a full disk) fails this video only: the part is cut back to before it.
    """
    if isinstance(pending, VideoOutcome):
        return replace(pending, busy_seconds=pending.busy_seconds + decode_wait)
    key, data, codec, track_seconds = encode_here
    started = time.perf_counter()
    try:
        encoded = pending.result()
    except (BrokenProcessPool, FramesLost):
        encoded = encode_video(key, data, codec)
    except Exception as exc:  # an encoder error fails this video, not the run
        return failed(key, source, "write", exc)
    try:
        record = writer.append(encoded)
    except Exception as exc:  # a full disk fails this video, not the run
        return failed(key, source, "write", exc)
    busy = track_seconds + decode_wait + time.perf_counter() - started
    return VideoOutcome(
        key, str(source.path), record=record, frames=record.num_frames,
        track_seconds=track_seconds, busy_seconds=busy, tracked_frames=tracked_frames,
    )  # fmt: skip


def _close(writer: PartWriter) -> PartDone:
    """Finish a part; a failure (a full disk) is reported with the part's name."""
    keys = [video["key"] for video in writer.videos]
    try:
        return PartDone(writer.name, keys, writer.close())
    except Exception as exc:  # every video of the part fails, the run goes on
        return PartDone(writer.name, keys, [], failure=_one_line(exc))


@dataclass
class ExtractSummary:
    """Totals of one run."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    frames: int = 0
    tracked_frames: int = 0
    seconds: float = 0.0
    track_seconds: float = 0.0
    busy_seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Videos that failed in this run."""
        return len(self.failures)

    @property
    def frame_passes(self) -> float:
        """Frames the tracker processed per stored frame, over the videos done in this run."""
        return self.tracked_frames / max(self.frames, 1)


class InProcessRunner:
    """Runs every batch in this process, one after another (no cluster)."""

    def __init__(self, store: TrackStore, config: ExtractConfig, tracker: Tracker):
        self.store, self.config, self.tracker = store, config, tracker

    def __call__(self, batches: list[Batch]) -> Iterator[VideoOutcome | PartDone]:
        yield from extract_batches(batches, self.store, self.config, self.tracker)


def run_extraction(
    sources: list[VideoSource],
    store: TrackStore,
    config: ExtractConfig,
    runner: BatchRunner,
    *,
    batch_videos: int = VIDEOS_PER_PART,
    overwrite: bool = False,
    on_video: Callable[[VideoOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract every source not yet indexed in ``store`` (the coordinator's loop).

    ``runner`` runs batches of ``batch_videos`` videos, a part each (in this process or on a
    cluster), and yields their outcomes as they finish; only this loop writes the index and
    failures, and it indexes a part's videos once the part is finished. The caller holds the
    store's writer lock: parts left half-written by a killed run are removed first.
    """
    started = time.perf_counter()
    store.remove_unfinished_parts()
    todo, reindex, clashes = plan_work(sources, store, overwrite)
    summary = ExtractSummary(total=len(sources), skipped=len(sources) - len(todo) - len(clashes))
    store.add_to_index(reindex)
    summary.failures.extend(clashes)
    store.update_failures(clashes, [])
    if on_start:
        on_start(len(todo))
    pending = PendingIndex()
    last_flush = time.monotonic()
    try:
        batches = [todo[i : i + batch_videos] for i in range(0, len(todo), batch_videos)]
        for event in runner(batches):
            if isinstance(event, PartDone):
                pending.part_done(event, summary)
            else:
                pending.video(event, summary)
                if on_video:
                    on_video(event)
            if (
                len(pending.records) >= FLUSH_EVERY_VIDEOS
                or time.monotonic() - last_flush > FLUSH_EVERY_SECONDS
            ):
                pending.flush(store)
                last_flush = time.monotonic()
    finally:
        pending.flush(store)
    summary.seconds = time.perf_counter() - started
    return summary


def open_store(path: str, config: ExtractConfig) -> tuple[TrackStore, Tracker]:
    """Build the tracker and open (or create) the store for it; settings must match."""
    tracker = build_tracker(config.tracker, **config.tracker_options())
    store = TrackStore.open_for_extraction(path, config.store_attrs(tracker), config.codec())
    return store, tracker
