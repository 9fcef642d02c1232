"""Stage one's orchestration: decode, track and store every video, resumably.

``extract_batch`` is the unit of work (it runs wherever the work is scheduled and writes only
its own videos' groups); ``run_extraction`` is the coordinator (it alone writes the index and
the failures table).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from mosic.pipeline.io_process import IO, decode
from mosic.stages.queries import (
    default_window,
    grid_points,
    long_video_frame_passes,
    query_frames,
    track_query_sets,
)
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.base import Tracker
from mosic.stages.video_io import DecodedVideo, SizeSpec, VideoError, VideoSource
from mosic.store_schema import (
    Failure,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
    video_key,
)

Batch = list[tuple[VideoSource, str]]  # (source, store key) pairs: one unit of work
BatchRunner = Callable[[list[Batch]], Iterator["VideoOutcome"]]

FLUSH_EVERY_VIDEOS = 32
FLUSH_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction; all but ``device`` are stored and shared by every video."""

    tracker: str = "lk"
    grid: int = 32
    query_every: int = 8
    horizon: int = 67
    frame_stride: int = 1
    max_frames: int | None = None
    size: str = "256"
    window: int | None = None  # None: the tracker's own (its window_sets query sets)
    device: str = "cpu"
    tracker_checkpoint: str | None = None
    tracker_repo: str | None = None
    tracker_dtype: str = "float32"  # or bfloat16 / float16: autocast (CoTracker3 on CUDA)

    def __post_init__(self) -> None:
        SizeSpec.parse(self.size)
        for name in ("grid", "query_every", "horizon", "frame_stride", "window"):
            if (getattr(self, name) or 1) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.horizon < 2:
            raise ValueError("--horizon must be at least 2 frames")

    def window_for(self, tracker: Tracker) -> int:
        """Frames per tracker call: ``window``, else the tracker's ``window_sets`` query sets
        (within its ``max_frames``, if it has one)."""
        most = getattr(tracker, "max_frames", None)
        if self.window is None:
            return default_window(tracker.window_sets, self.horizon, self.query_every, most)
        if most and max(self.window, self.horizon) > most:
            raise ValueError(
                f"--window {self.window} / --horizon {self.horizon}: {tracker.name} takes at "
                f"most {most} frames per call"
            )
        return self.window

    def store_attrs(self, tracker: Tracker) -> dict:
        """What the store records of this extraction (compared on every re-run): the settings,
        the window used and the frame-passes per stored frame it gives on a long video."""
        attrs = asdict(self)
        for local in ("device", "tracker_checkpoint", "tracker_repo", "tracker_dtype"):
            del attrs[local]  # paths of this machine; the dtype is in tracker_params
        attrs["window"] = window = self.window_for(tracker)
        passes = long_video_frame_passes(self.query_every, self.horizon, window)
        attrs["frame_passes"] = round(passes, 3)
        attrs["tracker"] = {"name": tracker.name, "version": tracker.version}
        attrs["tracker_params"] = tracker.params()
        return attrs

    def tracker_options(self) -> dict:
        """The ``build_tracker`` options given: weights, code, a device other than the CPU,
        a dtype other than float32."""
        options = {"checkpoint": self.tracker_checkpoint, "repo": self.tracker_repo}
        if self.device != "cpu":
            options["device"] = self.device
        if self.tracker_dtype != "float32":
            options["dtype"] = self.tracker_dtype
        return {name: value for name, value in options.items() if value}


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
        tracks = track_query_sets(
            tracker, video.frames, starts, grid_points(h, w, config.grid), config.horizon,
            config.window_for(tracker),
        )  # fmt: skip
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


def store_video(
    key: str, source: VideoSource, data: VideoData, track_seconds: float, store: TrackStore
) -> VideoOutcome:
    """Write one tracked video's group; a write error is returned as a failure."""
    started = time.perf_counter()
    try:
        record = store.write_video(key, data)
    except Exception as exc:  # a full disk fails this video, not the run
        store.discard_video(key)
        return failed(key, source, "write", exc)
    write_seconds = time.perf_counter() - started
    frames = len(data.frames)
    return VideoOutcome(
        key, str(source.path), record=record, frames=frames, track_seconds=track_seconds,
        busy_seconds=track_seconds + write_seconds,
    )  # fmt: skip


def failed(key: str, source: VideoSource, stage: str, why: BaseException | str) -> VideoOutcome:
    """The outcome of a video that failed at ``stage`` for ``why`` (an exception or a reason)."""
    reason = why if isinstance(why, str) else _one_line(why)
    return VideoOutcome(
        key, str(source.path), failure=Failure(key, str(source.path), stage, reason)
    )


_KEPT: dict[str, np.ndarray] = {}  # in the I/O child: decoded frames awaiting their tracks
_STORES: dict[str, TrackStore] = {}  # in the I/O child: stores it writes to


def _decode_and_keep(source: VideoSource, *options) -> DecodedVideo:
    """In the I/O child: decode a video (``decode``'s options) and keep its frames to write."""
    video = decode(source, *options)
    _KEPT[str(source.path)] = video.frames
    return video


def _forget(source: VideoSource) -> None:
    """In the I/O child: drop the kept frames of a video that will not be written."""
    _KEPT.pop(str(source.path), None)


def _write_kept(
    store_path: str, key: str, source: VideoSource, data: VideoData, track_seconds: float
) -> VideoOutcome:
    """In the I/O child: write a tracked video, its frames being the ones kept at decoding."""
    if store_path not in _STORES:
        _STORES[store_path] = TrackStore.open(store_path, mode="r+")
    frames = _KEPT.pop(str(source.path), None)
    if frames is None:  # decoded by an I/O child that has died since
        raise FramesLost(key)
    data = replace(data, frames=frames)
    return store_video(key, source, data, track_seconds, _STORES[store_path])


class FramesLost(LookupError):
    """The I/O child that decoded a video died before writing it (the caller still has them)."""


def extract_batch(
    items: Batch,
    store: TrackStore,
    config: ExtractConfig,
    tracker: Tracker,
) -> Iterator[VideoOutcome]:
    """Extract videos one after another; this process's I/O child (``mosic.pipeline.io_process``)
    decodes the next video and writes the previous one while the current one is tracked."""
    cv2.setNumThreads(1)  # OpenCV's pool does not speed the tracker up, it only spins a core
    options = (config.size, config.frame_stride, config.max_frames, config.horizon)
    ahead = [IO.retried(_decode_and_keep, source, *options) for source, _ in items[:1]]
    writing: list[tuple[Future | VideoOutcome, float, tuple, int]] = []
    for i, (source, key) in enumerate(items):
        if i + 1 < len(items):
            ahead.append(IO.retried(_decode_and_keep, items[i + 1][0], *options))
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
            write_here: tuple = ()
            tracked_frames = 0
        else:
            data, seconds, tracked_frames = tracked
            without_frames = replace(data, frames=data.frames[:0])  # the child has them
            pending = IO.submit(_write_kept, str(store.path), key, source, without_frames, seconds)
            write_here = (key, source, data, seconds, store)  # if the child dies first
        if writing:
            yield _finished(*writing.pop())
        writing.append((pending, decode_wait, write_here, tracked_frames))
    while writing:
        yield _finished(*writing.pop())


def _finished(
    pending: Future | VideoOutcome, decode_wait: float, write_here: tuple, tracked_frames: int
) -> VideoOutcome:
    """A written (or failed) video's outcome, its decode wait counted as busy time, with the
    frames its tracker processed.

    If the I/O child died before or while writing (another video's decoding can crash it), the
    video is written here from this process's copy of its frames (``write_here``: the
    arguments of ``store_video``), over whatever partial group the child left.
    """
    if isinstance(pending, VideoOutcome):
        outcome = pending
    else:
        try:
            outcome = pending.result()
        except (BrokenProcessPool, FramesLost):
            outcome = store_video(*write_here)
    busy = outcome.busy_seconds + decode_wait
    return replace(outcome, busy_seconds=busy, tracked_frames=tracked_frames)


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


def plan_work(
    sources: list[VideoSource], store: TrackStore, overwrite: bool
) -> tuple[Batch, list[VideoRecord], list[Failure]]:
    """Split sources into work to do, complete videos to (re)index, and name clashes.

    A video complete on disk but missing from the index (a run killed before it flushed) is
    returned for indexing, not redone.
    """
    indexed = set(store.keys())
    todo: Batch = []
    reindex: list[VideoRecord] = []
    clashes: list[Failure] = []
    owner: dict[str, VideoSource] = {}
    for source in sources:
        key = video_key(source.name)
        if key in owner:
            reason = f"same store key {key!r} as {owner[key].path}"
            clashes.append(Failure(video_key(str(source.path)), str(source.path), "input", reason))
            continue
        owner[key] = source
        if overwrite:
            todo.append((source, key))
        elif key in indexed:
            continue
        elif store.is_complete(key):
            reindex.append(store.read_record(key))
        else:
            todo.append((source, key))
    return todo, reindex, clashes


class InProcessRunner:
    """Runs every batch in this process, one after another (no cluster)."""

    def __init__(self, store: TrackStore, config: ExtractConfig, tracker: Tracker):
        self.store, self.config, self.tracker = store, config, tracker

    def __call__(self, batches: list[Batch]) -> Iterator[VideoOutcome]:
        items = [item for batch in batches for item in batch]
        yield from extract_batch(items, self.store, self.config, self.tracker)


def run_extraction(
    sources: list[VideoSource],
    store: TrackStore,
    config: ExtractConfig,
    runner: BatchRunner,
    *,
    batch_videos: int = 1,
    overwrite: bool = False,
    on_video: Callable[[VideoOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract every source not yet complete in ``store`` (the coordinator's loop).

    ``runner`` runs batches of ``batch_videos`` videos (in this process or on a cluster) and
    yields their outcomes as they finish; only this loop writes the index and failures.
    """
    started = time.perf_counter()
    todo, reindex, clashes = plan_work(sources, store, overwrite)
    summary = ExtractSummary(total=len(sources), skipped=len(sources) - len(todo) - len(clashes))
    store.add_to_index(reindex)
    summary.failures.extend(clashes)
    store.update_failures(clashes, [])
    if on_start:
        on_start(len(todo))
    pending: list[VideoOutcome] = []
    last_flush = time.monotonic()
    try:
        batches = [todo[i : i + batch_videos] for i in range(0, len(todo), batch_videos)]
        for outcome in runner(batches):
            pending.append(outcome)
            if outcome.failure:
                summary.failures.append(outcome.failure)
            else:
                summary.done += 1
                summary.frames += outcome.frames
                summary.tracked_frames += outcome.tracked_frames
                summary.track_seconds += outcome.track_seconds
            summary.busy_seconds += outcome.busy_seconds
            if on_video:
                on_video(outcome)
            if (
                len(pending) >= FLUSH_EVERY_VIDEOS
                or time.monotonic() - last_flush > FLUSH_EVERY_SECONDS
            ):
                _flush(store, pending)
                last_flush = time.monotonic()
    finally:
        _flush(store, pending)
    summary.seconds = time.perf_counter() - started
    return summary


def _flush(store: TrackStore, pending: list[VideoOutcome]) -> None:
    """Write finished videos to the index and failures table (coordinator only)."""
    store.add_to_index([o.record for o in pending if o.record])
    store.update_failures(
        [o.failure for o in pending if o.failure], [o.key for o in pending if o.record]
    )
    pending.clear()


def open_store(path: str, config: ExtractConfig) -> tuple[TrackStore, Tracker]:
    """Build the tracker and open (or create) the store for it; settings must match."""
    tracker = build_tracker(config.tracker, **config.tracker_options())
    return TrackStore.open_for_extraction(path, config.store_attrs(tracker)), tracker
