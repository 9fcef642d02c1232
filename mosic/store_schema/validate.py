"""``validate_store``: check a store against the schema in ``layout.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mosic.store_schema import layout
from mosic.store_schema.chunks import split_tracks
from mosic.store_schema.errors import CorruptVideo, DamagedData
from mosic.store_schema.parts import PartReader, part_attrs
from mosic.store_schema.records import VideoRecord
from mosic.store_schema.shards import verify_shard
from mosic.store_schema.store import TrackStore, read_rows


@dataclass
class ValidationReport:
    """Problems make a store invalid; notes are harmless leftovers of interrupted runs."""

    videos: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the store has no problems."""
        return not self.problems


def validate_store(store: TrackStore, deep: bool = False) -> ValidationReport:
    """Check every indexed video against the schema and what was recorded when it was written.

    Reads the index, every part's metadata and file sizes, and every query set's tracks
    (checksums, shapes, positions of visible points inside the frame). ``deep`` also checks
    each part's shard indexes and decodes every frame (slow: reads the whole store).
    Each problem is one line naming the video (or the index) and the damaged piece.
    """
    report = ValidationReport()
    index = store.index
    count = index.count
    for name in layout.INDEX_COLUMNS:
        if index.group[name].shape[0] < count:
            report.problems.append(
                f"index/{name}: {index.group[name].shape[0]} rows, count {count}"
            )
    if report.problems:
        return report
    records = store.records()
    report.videos = len(records)
    _check_totals(records, index.totals, report)
    readers: dict[str, PartReader | str] = {}
    seen: set[str] = set()
    for record in records:
        if record.key in seen:
            report.problems.append(f"index: {record.key!r} listed twice")
        seen.add(record.key)
        if record.part not in readers:
            readers[record.part] = _open_part(store, record.part, deep)
        reader = readers[record.part]
        if isinstance(reader, str):
            report.problems.append(f"{record.key}: part {record.part}: {reader}")
            continue
        report.problems.extend(_check_video(store, record, reader, deep))
    _note_leftovers(store, {r.part for r in records}, seen, report)
    return report


def _check_totals(records: list[VideoRecord], totals: dict, report: ValidationReport) -> None:
    sums = {
        "videos": len(records),
        "frames": sum(r.num_frames for r in records),
        "query_sets": sum(r.num_query_sets for r in records),
        "bytes": sum(r.bytes for r in records),
    }
    for name, value in sums.items():
        if totals.get(name) != value:
            report.problems.append(f"index: totals {name} {totals.get(name)}, rows sum {value}")


def _open_part(store: TrackStore, name: str, deep: bool) -> PartReader | str:
    """A part's reader after checking its files' sizes (and shard indexes if ``deep``), or
    the reason it is unusable."""
    try:
        reader = PartReader(store.location, name)
        for array, rows in (
            (layout.FRAMES, reader.frame_rows),
            (layout.TRACKS, reader.track_shape[0]),
        ):
            file, size = reader.file(array)
            try:
                actual = store.location.size(file)
            except FileNotFoundError:
                raise DamagedData(f"{file.rsplit('/', 1)[-1]} of {array} missing") from None
            if actual != size:
                raise DamagedData(f"{array}: {actual} bytes, {size} were written")
            if deep:
                verify_shard(store.location, file, rows, size)
    except DamagedData as exc:
        return str(exc)
    return reader


def _check_video(
    store: TrackStore, record: VideoRecord, reader: PartReader, deep: bool
) -> list[str]:
    """Problems of one indexed video, each a line starting with its key."""
    key = record.key
    extraction = store.extraction
    every, horizon = extraction["query_every"], extraction["horizon"]
    n = extraction["grid"] ** 2
    expected_sets = max(0, (record.num_frames - horizon) // every + 1)
    problems = []
    if record.num_query_sets != expected_sets:
        problems.append(
            f"{key}: {record.num_query_sets} query sets, {record.num_frames} frames need "
            f"{expected_sets}"
        )
    if record.frame_start + record.num_frames > reader.frame_rows:
        problems.append(f"{key}: frames past the end of part {record.part}")
    if record.track_start + record.num_query_sets > reader.track_shape[0]:
        problems.append(f"{key}: tracks past the end of part {record.part}")
    if reader.track_shape[2:] != (horizon, n):
        problems.append(f"{key}: tracks {reader.track_shape[1:]}, expected (C, {horizon}, {n})")
    if problems:
        return problems
    try:
        _, tracks = read_rows(store.location, record, [], range(record.num_query_sets))
        positions, visible, _ = split_tracks(tracks)
        inside = (
            (positions[..., 0] >= -0.5)
            & (positions[..., 0] <= record.width - 0.5)
            & (positions[..., 1] >= -0.5)
            & (positions[..., 1] <= record.height - 0.5)
        )
        if not np.all(inside[visible]):
            problems.append(f"{key}: tracks: visible points outside the frame")
        if deep:
            for first in range(0, record.num_frames, 64):
                rows = range(first, min(first + 64, record.num_frames))
                read_rows(store.location, record, rows, [])
    except CorruptVideo as exc:
        problems.append(f"{key}: {exc.reason}")
    return problems


def _note_leftovers(
    store: TrackStore, used: set[str], indexed: set[str], report: ValidationReport
) -> None:
    """Notes on parts no reader uses: unfinished, finished but not indexed, superseded."""
    for name in store.part_names():
        if name in used:
            continue
        attrs = part_attrs(store.location, name)
        if attrs is None:
            report.notes.append(f"parts/{name}: half-written (invisible; the next run removes it)")
            continue
        keys = [v["key"] for v in attrs[layout.PART_VIDEOS_ATTR]]
        if set(keys) - indexed:
            report.notes.append(
                f"parts/{name}: finished, {len(keys)} videos not yet indexed (the next run "
                "indexes them)"
            )
        else:
            report.notes.append(f"parts/{name}: superseded (its videos were re-extracted)")
