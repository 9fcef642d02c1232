"""Settings of one extraction (``mosic extract-tracks``'s options) and what follows from them:
the tracker's window, the attributes the store records, the frame codec, the tracker's build
options."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mosic.stages.queries import default_window, long_video_frame_passes
from mosic.stages.trackers.base import Tracker
from mosic.stages.video_io import SizeSpec
from mosic.store_schema import FrameCodec


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction; all but ``device`` are stored and shared by every video."""

    tracker: str = "lk"
    grid: int | None = None  # None: the tracker's default_grid
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
    frame_codec: str = "jpeg"
    jpeg_quality: int = FrameCodec().quality

    def __post_init__(self) -> None:
        SizeSpec.parse(self.size)
        self.codec()
        for name in ("grid", "query_every", "horizon", "frame_stride", "window"):
            if (getattr(self, name) or 1) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.horizon < 2:
            raise ValueError("--horizon must be at least 2 frames")

    def grid_for(self, tracker: Tracker) -> int:
        """Points per side of each query set's grid: ``grid``, else the tracker's default."""
        return self.grid or tracker.default_grid

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
        del attrs["frame_codec"], attrs["jpeg_quality"]  # the store's frame_codec attribute
        attrs["grid"] = self.grid_for(tracker)
        attrs["window"] = window = self.window_for(tracker)
        passes = long_video_frame_passes(self.query_every, self.horizon, window)
        attrs["frame_passes"] = round(passes, 3)
        attrs["tracker"] = {"name": tracker.name, "version": tracker.version}
        attrs["tracker_params"] = tracker.params()
        return attrs

    def codec(self) -> FrameCodec:
        """How frames are stored (ValueError on an unknown codec or quality)."""
        return FrameCodec(self.frame_codec, self.jpeg_quality)

    def tracker_options(self) -> dict:
        """The ``build_tracker`` options given: weights, code, a device other than the CPU,
        a dtype other than float32."""
        options = {"checkpoint": self.tracker_checkpoint, "repo": self.tracker_repo}
        if self.device != "cpu":
            options["device"] = self.device
        if self.tracker_dtype != "float32":
            options["dtype"] = self.tracker_dtype
        return {name: value for name, value in options.items() if value}
