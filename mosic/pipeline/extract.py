"""Stage one's orchestration: decode, track and store every video, resumably.

``extract_video`` is the unit of work (it runs wherever the work is scheduled and writes only
its own video's group); ``run_extraction`` is the coordinator (it alone writes the index and
the failures table).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.base import Tracker
from mosic.stages.video_io import SizeSpec, VideoError, VideoSource, read_video
from mosic.store_schema import (
    Failure,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
    video_key,
)

FLUSH_EVERY_VIDEOS = 32
FLUSH_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction; all but ``device`` are stored and shared by every video."""

    tracker: str = "lk"
    grid: int = 16
    query_every: int = 8
    horizon: int = 67
    frame_stride: int = 1
    max_frames: int | None = None
    size: str = "256"
    window: int = 192
    device: str = "cpu"

    def __post_init__(self) -> None:
        SizeSpec.parse(self.size)
        for name in ("grid", "query_every", "horizon", "frame_stride", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.horizon < 2:
            raise ValueError("--horizon must be at least 2 frames")

    def store_attrs(self, tracker: Tracker) -> dict:
        """What the store records of this extraction (compared on every re-run)."""
        attrs = asdict(self)
        del attrs["device"]
        attrs["tracker"] = {"name": tracker.name, "version": tracker.version}
        attrs["tracker_params"] = tracker.params()
        return attrs


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one video: a record in the index, or a failure."""

    key: str
    source: str
    record: VideoRecord | None = None
    failure: Failure | None = None
    frames: int = 0
    track_seconds: float = 0.0


def _one_line(exc: BaseException) -> str:
    """A failure reason on one line: the video error's reason, else the exception's text."""
    if isinstance(exc, VideoError):
        return exc.reason
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def extract_video(
    source: VideoSource, key: str, store: TrackStore, config: ExtractConfig, tracker: Tracker
) -> VideoOutcome:
    """Decode, track and write one video; never raises for a bad video (returns a failure)."""
    stage = "decode"
    try:
        video = read_video(
            source,
            SizeSpec.parse(config.size),
            frame_stride=config.frame_stride,
            max_frames=config.max_frames,
        )
        frames = video.frames
        t, h, w, _ = frames.shape
        if t < config.horizon:
            raise VideoError(
                source.path,
                f"{t} frames after stride {config.frame_stride}; one clip needs {config.horizon}",
            )
        stage = "track"
        started = time.perf_counter()
        starts = query_frames(t, config.query_every, config.horizon)
        tracks = track_query_sets(
            tracker, frames, starts, grid_points(h, w, config.grid), config.horizon, config.window
        )
        track_seconds = time.perf_counter() - started
        stage = "write"
        meta = VideoMeta(
            source=str(source.path),
            original_size=video.original_size,
            fps=video.fps,
            decoded_frames=video.decoded_frames,
            frame_stride=video.frame_stride,
        )
        data = VideoData(meta, frames, starts, tracks.positions, tracks.visible, tracks.confidence)
        record = store.write_video(key, data)
    except Exception as exc:  # a bad video must not stop the run: it becomes a failure row
        if stage == "write":
            store.discard_video(key)
        failure = Failure(key, str(source.path), stage, _one_line(exc))
        return VideoOutcome(key, str(source.path), failure=failure)
    return VideoOutcome(key, str(source.path), record=record, frames=t, track_seconds=track_seconds)


@dataclass
class ExtractSummary:
    """Totals of one run."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    frames: int = 0
    seconds: float = 0.0
    track_seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Videos that failed in this run."""
        return len(self.failures)


def plan_work(
    sources: list[VideoSource], store: TrackStore, overwrite: bool
) -> tuple[list[tuple[VideoSource, str]], list[VideoRecord], list[Failure]]:
    """Split sources into work to do, complete videos to (re)index, and name clashes.

    A video complete on disk but missing from the index (a run killed before it flushed) is
    returned for indexing, not redone.
    """
    indexed = set(store.keys())
    todo: list[tuple[VideoSource, str]] = []
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


def run_extraction(
    sources: list[VideoSource],
    store: TrackStore,
    config: ExtractConfig,
    tracker: Tracker,
    *,
    overwrite: bool = False,
    on_video: Callable[[VideoOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract every source not yet complete in ``store`` (the coordinator's loop)."""
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
        for outcome in _outcomes(todo, store, config, tracker):
            pending.append(outcome)
            if outcome.failure:
                summary.failures.append(outcome.failure)
            else:
                summary.done += 1
                summary.frames += outcome.frames
                summary.track_seconds += outcome.track_seconds
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


def _outcomes(
    todo: Iterable[tuple[VideoSource, str]],
    store: TrackStore,
    config: ExtractConfig,
    tracker: Tracker,
) -> Iterable[VideoOutcome]:
    for source, key in todo:
        yield extract_video(source, key, store, config, tracker)


def _flush(store: TrackStore, pending: list[VideoOutcome]) -> None:
    """Write finished videos to the index and failures table (coordinator only)."""
    store.add_to_index([o.record for o in pending if o.record])
    store.update_failures(
        [o.failure for o in pending if o.failure], [o.key for o in pending if o.record]
    )
    pending.clear()


def open_store(path: str, config: ExtractConfig) -> tuple[TrackStore, Tracker]:
    """Build the tracker and open (or create) the store for it; settings must match."""
    tracker = build_tracker(config.tracker)
    return TrackStore.open_for_extraction(path, config.store_attrs(tracker)), tracker
