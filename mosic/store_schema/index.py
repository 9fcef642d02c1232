"""The index: one row per complete video, written only by the coordinator.

Rows are written before the ``count`` attribute that makes them visible, and ``count`` and
``totals`` (videos, frames, query sets, bytes) change together in one atomic write of the
group's ``zarr.json``: a reader sees exactly the first ``count`` rows and totals that match
them, without reading the rows.
"""

from __future__ import annotations

import math

import numpy as np
import zarr

from mosic.store_schema import layout
from mosic.store_schema.records import VideoRecord

TOTALS = ("videos", "frames", "query_sets", "bytes")


def create_index(root: zarr.Group) -> None:
    """An empty index in a new store."""
    totals = dict.fromkeys(TOTALS, 0)
    attrs = {layout.COUNT_ATTR: 0, layout.TOTALS_ATTR: totals}
    index = root.create_group(layout.INDEX, attributes=attrs)
    for name, dtype in layout.INDEX_COLUMNS.items():
        index.create_array(name, shape=(0,), chunks=(layout.INDEX_CHUNK,), dtype=dtype)


class Index:
    """A store's index group."""

    def __init__(self, group: zarr.Group):
        self.group = group
        self._rows: dict[str, int] | None = None  # key -> row, kept by the coordinator

    @property
    def count(self) -> int:
        """Rows in use (the rest of the arrays' capacity is not part of the index)."""
        return int(self.group.attrs[layout.COUNT_ATTR])

    @property
    def totals(self) -> dict[str, int]:
        """Sums over the indexed videos: videos, frames, query_sets, bytes."""
        return dict(self.group.attrs[layout.TOTALS_ATTR])

    def columns(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The first ``count`` rows (default: all visible ones) of every column."""
        count = self.count if count is None else count
        return {name: self.group[name][:count] for name in layout.INDEX_COLUMNS}

    def records(self) -> list[VideoRecord]:
        """Every visible row, in index order."""
        columns = self.columns()
        names = list(layout.INDEX_COLUMNS)
        rows = zip(*(columns[name].tolist() for name in names), strict=True)
        return [VideoRecord(**dict(zip(names, row, strict=True))) for row in rows]

    def find(self, key: str) -> VideoRecord | None:
        """The row of ``key`` (the last one, if listed twice), or None: one read of the keys
        and one element of each other column."""
        count = self.count
        found = np.flatnonzero(self.group["key"][:count] == key) if count else []
        if not len(found):
            return None
        row = int(found[-1])
        return VideoRecord(**{name: self.group[name][row].item() for name in layout.INDEX_COLUMNS})

    def keys(self) -> list[str]:
        """Keys of the visible rows."""
        count = self.count
        return [str(k) for k in self.group["key"][:count]] if count else []

    def add(self, records: list[VideoRecord]) -> None:
        """Append new rows and replace existing ones of the same key (coordinator only)."""
        if not records:
            return
        if self._rows is None:
            self._rows = {k: i for i, k in enumerate(self.keys())}
        latest = {r.key: r for r in records}
        count = self.count
        totals = self.totals
        new = [r for r in latest.values() if r.key not in self._rows]
        old = [r for r in latest.values() if r.key in self._rows]
        needed = count + len(new)
        replaced = sorted(self._rows[r.key] for r in old)
        for name in layout.INDEX_COLUMNS:
            array = self.group[name]
            if array.shape[0] < needed:
                array.resize((math.ceil(needed / layout.INDEX_CHUNK) * layout.INDEX_CHUNK,))
            if name in ("num_frames", "num_query_sets", "bytes") and replaced:
                before = array.get_orthogonal_selection(np.array(replaced))
                totals[_TOTAL_OF[name]] -= int(before.sum())
            if new:
                array[count:needed] = np.array([getattr(r, name) for r in new], dtype=array.dtype)
            for r in old:
                array[self._rows[r.key]] = getattr(r, name)
        for r in latest.values():
            totals["frames"] += r.num_frames
            totals["query_sets"] += r.num_query_sets
            totals["bytes"] += r.bytes
        totals["videos"] = needed
        for i, r in enumerate(new):
            self._rows[r.key] = count + i
        self.group.attrs.update({layout.COUNT_ATTR: needed, layout.TOTALS_ATTR: totals})


_TOTAL_OF = {"num_frames": "frames", "num_query_sets": "query_sets", "bytes": "bytes"}
