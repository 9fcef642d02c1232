"""CoTracker3 (facebookresearch/co-tracker) as stage one's tracker, offline or online.

CoTracker is not on PyPI and mosic does not ship it (code and weights are CC-BY-NC): install a
clone (``pip install -e``) or point ``repo`` at one, and give the checkpoint
(``scaled_offline.pth`` / ``scaled_online.pth``) as ``checkpoint``. Weights load lazily, on the
first ``track`` call: the pipeline's coordinator builds a tracker only to read its name and
parameters.

The contract, as read in co-tracker's ``cotracker/predictor.py``:

- video: float32 (B, T, 3, H, W) in 0..255, at any size (the predictor resizes to 384x512 and
  scales coordinates with ``align_corners=True``, i.e. pixel centres at 0..W-1, as in mosic);
- queries: float32 (B, N, 3) rows ``(t, x, y)`` in input pixels;
- outputs: tracks (B, T, N, 2) ``(x, y)`` input pixels, visibility (B, T, N) bool.

Offline (``CoTrackerPredictor.forward(video, queries=...)``): a 6x6 support grid is added to
the queries and stripped from the output, visible = vis > 0.9, and each query's own frame is
set to its query point, visible. Online (``CoTrackerOnlinePredictor``): a first call with
``is_first_step=True`` stores the queries, then chunks of ``2 * step`` frames starting every
``step`` frames (step = 8) are fed in order; each call returns the tracks of every frame seen
so far; visible = vis * conf > 0.6; the support grid is asked for (``add_support_grid=True``,
as the offline predictor does) and the query-frame correction is done here. Neither predictor
returns the model's confidence, so the model's raw output (sigmoid of its confidence head,
(B, T, N + 36)) is read on its way out of ``predictor.model.forward`` and stored, without the
support grid, as ``TrackResult.confidence``; the visibility is the predictor's own.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from mosic.stages.trackers.base import TrackResult

VARIANTS = {
    "offline": ("cotracker3_offline", "CoTrackerPredictor", "scaled_offline.pth", 60),
    "online": ("cotracker3_online", "CoTrackerOnlinePredictor", "scaled_online.pth", 16),
}  # variant: hub entry, predictor class, checkpoint file name, model window (frames)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INSTALL_HINT = (
    "install CoTracker3 from a clone of https://github.com/facebookresearch/co-tracker "
    "(pip install -e CLONE) or pass --tracker-repo CLONE"
)


class CoTrackerUnavailable(ValueError):
    """CoTracker3's code or checkpoint is missing (the message says how to get it)."""


class _ConfidenceTap:
    """Wraps a CoTracker3 model's ``forward`` and keeps the confidence it returns.

    The model returns ``(tracks, vis, confidence, train_data)``; ``confidence`` is
    (B, T, N) float in [0, 1] for every query the predictor gave it (support grid included).
    """

    def __init__(self, forward: Callable):
        self.forward = forward
        self.confidence: torch.Tensor | None = None

    def __call__(self, *args, **kwargs):
        outputs = self.forward(*args, **kwargs)
        self.confidence = outputs[2]
        return outputs


def _sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CoTrackerTracker:
    """CoTracker3 behind mosic's Tracker interface.

    Two query sets per window by default (``window_sets``): the model computes every query in
    every frame of its window, and a 32x32 set costs about three times a frame's features
    (docs/benchmarks.md), so longer windows cost more than they share.

    variant: "offline" (whole window in one forward) or "online" (sliding chunks).
    checkpoint: the state dict file; default: torch hub's cache
        (``torch.hub.get_dir()/checkpoints/scaled_{variant}.pth``) when it is there.
    repo: a local clone to load through its ``hubconf.py``; default: the installed package.
    device: "cpu", "cuda" or "cuda:N". dtype: "float32", or "bfloat16"/"float16" autocast
        (CUDA only; co-tracker reports fp16 changes results markedly, issue #140).
    max_frames: the most frames one forward may take (memory grows with frames x points).
    """

    version = "cotracker3"
    default_grid = 32  # 1,024 points a set: 256 of them in any crop (docs/method.md)
    window_sets = 2

    def __init__(
        self,
        variant: str,
        checkpoint: str | None = None,
        repo: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        max_frames: int = 128,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"CoTracker3 variant {variant!r}: expected offline or online")
        if dtype not in DTYPES:
            raise ValueError(f"CoTracker3 dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        if dtype != "float32" and not device.startswith("cuda"):
            raise ValueError(f"CoTracker3 dtype {dtype} needs a CUDA device (got {device})")
        if max_frames < 2:
            raise ValueError("CoTracker3 max_frames must be at least 2")
        self.variant = variant
        self.name = f"cotracker3-{variant}"
        self.entry, self.predictor_class, file_name, self.window_len = VARIANTS[variant]
        self.repo = Path(repo) if repo else None
        self.checkpoint = self._checkpoint_path(checkpoint, file_name)
        self._check_code()
        self.device = device
        self.dtype = dtype
        self.max_frames = max_frames
        self._predictor: torch.nn.Module | None = None
        self._tap: _ConfidenceTap | None = None
        self._stream: torch.cuda.Stream | None = None  # copies beside the forward (CUDA only)
        self._checkpoint_sha256: str | None = None

    def _checkpoint_path(self, checkpoint: str | None, file_name: str) -> Path:
        """The checkpoint given, else the one in torch hub's cache; one clear line if none."""
        hint = (
            f"--tracker-checkpoint PATH to {file_name} (https://huggingface.co/facebook/cotracker3)"
        )
        if checkpoint is not None:
            path = Path(checkpoint)
            if not path.is_file():
                raise CoTrackerUnavailable(f"{self.name}: no checkpoint at {path}; pass {hint}")
            return path
        cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        if not cached.is_file():
            raise CoTrackerUnavailable(
                f"{self.name} needs its weights: pass {hint}, or put it in {cached.parent}"
            )
        return cached

    def _check_code(self) -> None:
        """Fail now, in one line, if neither the clone nor the installed package is there."""
        if self.repo is not None:
            if not (self.repo / "hubconf.py").is_file():
                raise CoTrackerUnavailable(
                    f"{self.name}: {self.repo} has no hubconf.py (not a co-tracker clone); "
                    + INSTALL_HINT
                )
        elif importlib.util.find_spec("cotracker") is None:
            raise CoTrackerUnavailable(
                f"{self.name}: the cotracker package is missing; {INSTALL_HINT}"
            )

    def params(self) -> dict:
        """Variant, checkpoint file and SHA-256 (hashed once, ~0.1 s for 100 MB), dtype,
        max_frames."""
        if self._checkpoint_sha256 is None:
            self._checkpoint_sha256 = _sha256(self.checkpoint)
        return {
            "variant": self.variant,
            "checkpoint": self.checkpoint.name,
            "checkpoint_sha256": self._checkpoint_sha256,
            "dtype": self.dtype,
            "max_frames": self.max_frames,
        }

    def _load(self) -> torch.nn.Module:
        """The predictor with its weights, built on the first call only."""
        if self._predictor is not None:
            return self._predictor
        if self.repo is not None:
            predictor = torch.hub.load(str(self.repo), self.entry, source="local", pretrained=False)
        else:
            module = importlib.import_module("cotracker.predictor")
            # As co-tracker's hubconf builds it: no checkpoint, v3, the model's window.
            predictor = getattr(module, self.predictor_class)(
                checkpoint=None, window_len=self.window_len
            )
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        if "model" in state:  # training checkpoints wrap the state dict, as build_cotracker knows
            state = state["model"]
        predictor.model.load_state_dict(state)
        self._tap = _ConfidenceTap(predictor.model.forward)
        predictor.model.forward = self._tap
        self._predictor = predictor.to(self.device).eval()
        if torch.device(self.device).type == "cuda":
            self._stream = torch.cuda.Stream(self.device)
        return self._predictor

    def _autocast(self):
        """CUDA autocast to ``dtype`` unless it is float32."""
        if self.dtype == "float32":
            return nullcontext()
        return torch.autocast("cuda", dtype=DTYPES[self.dtype])

    def track(
        self, frames: np.ndarray, queries: np.ndarray, horizon: int | None = None
    ) -> TrackResult:
        """Track (N, 3) ``(t, x, y)`` queries through (T, H, W, 3) uint8 frames, in one forward.

        The model tracks every query through the whole window (``horizon`` is not used). A
        window over ``max_frames`` is refused; running out of GPU memory is a RuntimeError that
        names the window's frames, size and query count.
        """
        return self.track_batch([(frames, queries)])[0]

    def track_batch(
        self, videos: list[tuple[np.ndarray, np.ndarray]], horizon: int | None = None
    ) -> list[TrackResult]:
        """Track several windows, one forward each (B = 1), overlapped with the copies.

        While a window runs on the device, one helper thread copies the next window's frames
        there (pinned memory, non-blocking, on a side CUDA stream) and brings the previous
        window's outputs back and into numpy, so the device does not wait for the host between
        windows. Results are the same as one window after another.

        Not batched: co-tracker's maintainers have not tested B > 1 (issue #116), and at its
        newest snapshot (82e02e8) CoTrackerThreeOffline.forward fails for any B > 1
        (``coords.view(B * T, N, 2)`` on an expanded tensor; co-tracker issue #163, open); the
        online predictor's support grid is not batched either.
        """
        for frames, _ in videos:
            if len(frames) > self.max_frames:
                raise ValueError(
                    f"{self.name}: a window of {len(frames)} frames is over "
                    f"max_frames={self.max_frames}; use --window and --horizon of at most "
                    f"{self.max_frames}"
                )
        predictor = self._load()
        finished = []
        with ThreadPoolExecutor(1, thread_name_prefix="cotracker-copy") as helper:
            staged = helper.submit(self._stage, *videos[0]) if videos else None
            for i, (frames, queries) in enumerate(videos):
                try:
                    current = staged.result()
                    if i + 1 < len(videos):
                        staged = helper.submit(self._stage, *videos[i + 1])
                    outputs = self._run(predictor, *current)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    t, h, w, _ = frames.shape
                    raise RuntimeError(
                        f"{self.name}: CUDA out of memory on a window of {t} frames "
                        f"({w}x{h}, {len(queries)} queries); lower --window"
                    ) from None
                finished.append(helper.submit(self._finish, outputs, queries))
            return [f.result() for f in finished]

    def _stage(self, frames: np.ndarray, queries: np.ndarray) -> tuple:
        """On the helper thread: (T, H, W, 3) uint8 frames and (N, 3) queries on the device.

        On CUDA the frames go through pinned memory and a non-blocking copy on the side stream;
        the returned event marks the copy's end. Returns (video uint8 (T, H, W, 3), queries
        float32 (1, N, 3), event or None).
        """
        video = torch.from_numpy(np.ascontiguousarray(frames))
        query = torch.from_numpy(queries.astype(np.float32))[None]
        if self._stream is None:
            return video.to(self.device), query.to(self.device), None
        with torch.cuda.stream(self._stream):
            video = video.pin_memory().to(self.device, non_blocking=True)
            query = query.pin_memory().to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        return video, query, copied

    def _run(
        self,
        predictor: torch.nn.Module,
        video: torch.Tensor,
        query: torch.Tensor,
        copied: torch.cuda.Event | None,
    ) -> tuple:
        """On the calling thread: one forward on staged inputs; device outputs (tracks (T, N,
        2), visible (T, N), confidence (T, N)) and the event that marks their end (or None)."""
        if copied is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(copied)
            for tensor in (video, query):
                tensor.record_stream(stream)  # allocated on the side stream, used on this one
        video = video.permute(0, 3, 1, 2).float()[None]  # (1, T, 3, H, W), 0..255
        with torch.inference_mode(), self._autocast():
            if self.variant == "offline":
                tracks, visible = predictor(video, queries=query)
            else:
                tracks, visible = self._drive_online(predictor, video, query)
        n = query.shape[1]
        outputs = (tracks[0], visible[0], self._tap.confidence[0, :, :n])  # support grid last
        if copied is None:
            return outputs, None
        done = torch.cuda.Event()
        done.record()
        for tensor in outputs:
            tensor.record_stream(self._stream)  # read there by _finish
        return outputs, done

    def _finish(self, computed: tuple, queries: np.ndarray) -> TrackResult:
        """On the helper thread: a window's device outputs as a TrackResult."""
        outputs, done = computed
        if done is not None:
            with torch.cuda.stream(self._stream):
                self._stream.wait_event(done)
                outputs = [t.to("cpu", non_blocking=True) for t in outputs]
            self._stream.synchronize()
        return _result(*outputs, queries)

    @staticmethod
    def _drive_online(
        predictor: torch.nn.Module, video: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed (B, T, 3, H, W) to the online predictor as co-tracker's README does: register
        the queries, then chunks ``[i, i + 2 * step)`` for i = 0, step, ... while
        ``i < T - step`` (at least one chunk). Returns tracks (B, T, N, 2), visible (B, T, N).
        """
        step = predictor.step
        predictor(video, is_first_step=True, queries=queries, add_support_grid=True)
        for start in range(0, max(video.shape[1] - step, 1), step):
            tracks, visible = predictor(video[:, start : start + 2 * step], add_support_grid=True)
        return tracks, visible


def _result(
    tracks: torch.Tensor, visible: torch.Tensor, confidence: torch.Tensor, queries: np.ndarray
) -> TrackResult:
    """Tracks (T, N, 2), visible (T, N), confidence (T, N) of (N, 3) queries as a TrackResult.

    Rows before each query's frame become NaN / False / 0; on its own frame a query is its
    query point, visible (the offline predictor does this itself, issue #28; the online one
    does not, so it is done here for both).
    """
    positions = tracks.float().cpu().numpy().astype(np.float32)
    visible = visible.cpu().numpy().astype(bool)
    confidence = confidence.float().cpu().numpy().astype(np.float32)
    start = queries[:, 0].astype(np.int64)
    points = np.arange(len(queries))
    positions[start, points] = queries[:, 1:]
    visible[start, points] = True
    before = np.arange(len(positions))[:, None] < start[None, :]
    positions[before] = np.nan
    visible[before] = False
    confidence[before] = 0.0
    return TrackResult(positions, visible, confidence)
