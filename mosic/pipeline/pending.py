"""The coordinator's bookkeeping: what to extract, and outcomes waiting for the index.

Only the coordinator (the process running the extraction) uses these: it alone writes the
index and the failures table, and indexes a video only once its part is finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mosic.stages.video_io import VideoSource
from mosic.store_schema import Failure, TrackStore, VideoRecord, video_key

if TYPE_CHECKING:
    from mosic.pipeline.extract import Batch, ExtractSummary, PartDone, VideoOutcome


def plan_work(
    sources: list[VideoSource], store: TrackStore, overwrite: bool
) -> tuple[Batch, list[VideoRecord], list[Failure]]:
    """Split sources into work to do, finished videos to (re)index, and name clashes.

    A video in a finished part but missing from the index (a run killed before it flushed)
    is returned for indexing, not redone.
    """
    indexed = set(store.keys())
    finished = {r.key: r for records in store.finished_parts().values() for r in records}
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
        elif key in finished:
            reindex.append(finished[key])
        else:
            todo.append((source, key))
    return todo, reindex, clashes


class PendingIndex:
    """The coordinator's outcomes not yet in the index or the failures table."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}  # key -> source, of videos in unfinished parts
        self.records: list[VideoRecord] = []
        self.failures: list[Failure] = []

    def video(self, outcome: VideoOutcome, summary: ExtractSummary) -> None:
        """A video appended to its part (or failed)."""
        summary.busy_seconds += outcome.busy_seconds
        if outcome.failure:
            summary.failures.append(outcome.failure)
            self.failures.append(outcome.failure)
            return
        summary.frames += outcome.frames
        summary.tracked_frames += outcome.tracked_frames
        summary.track_seconds += outcome.track_seconds
        self.sources[outcome.key] = outcome.source

    def part_done(self, done: PartDone, summary: ExtractSummary) -> None:
        """A part finished (its videos become indexable) or failed (its videos fail)."""
        if done.failure is None:
            summary.done += len(done.records)
            self.records.extend(done.records)
            for record in done.records:
                self.sources.pop(record.key, None)
            return
        for key in done.keys:
            failure = Failure(key, self.sources.pop(key), "write", f"part {done.part}: "
                              f"{done.failure}")  # fmt: skip
            summary.failures.append(failure)
            self.failures.append(failure)

    def flush(self, store: TrackStore) -> None:
        """Write finished videos to the index and failures table (coordinator only)."""
        store.add_to_index(self.records)
        store.update_failures(self.failures, [r.key for r in self.records])
        self.records, self.failures = [], []
