"""A child process per extracting process that decodes and writes videos beside the tracker.

The CPU tracker is Python-heavy and holds the GIL most of the time: decode and write threads
beside it barely ran in parallel (the whole extraction used 1.1 of 2 cores), while a child
process does. A decoder that crashes on a broken file (FFmpeg is C) takes only the child down:
the video is retried once in a fresh child, then recorded as failed. Where this process may
not have children (a daemonic Dask worker of a cluster started elsewhere), a thread does the
same work instead.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mosic.stages.video_io import DecodedVideo, SizeSpec, VideoError, VideoSource, read_video


def decode(source: VideoSource, size: str, frame_stride: int, max_frames: int | None,
           horizon: int) -> DecodedVideo:  # fmt: skip
    """Decode one source at storage size; VideoError if unusable or shorter than ``horizon``."""
    video = read_video(
        source, SizeSpec.parse(size), frame_stride=frame_stride, max_frames=max_frames
    )
    if len(video.frames) < horizon:
        raise VideoError(
            source.path,
            f"{len(video.frames)} frames after stride {frame_stride}; one clip needs {horizon}",
        )
    return video


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux), so nothing outlives a killed run."""
    if os.uname().sysname == "Linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class IOProcess:
    """This process's I/O child (or thread), started on first use and reused across batches.

    Work runs in submission order, one call at a time.
    """

    def __init__(self) -> None:
        self._executor: Executor | None = None

    def _pool(self) -> Executor:
        if self._executor is None:
            if multiprocessing.current_process().daemon:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="video-io")
            else:
                # fork, not spawn or forkserver: those re-import the caller's __main__ (an
                # unguarded script would run again); the child only decodes and writes.
                context = multiprocessing.get_context("fork")
                self._executor = ProcessPoolExecutor(
                    1, mp_context=context, initializer=die_with_parent
                )
        return self._executor

    def restart(self) -> None:
        """Drop a broken child; the next call starts a fresh one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def submit(self, fn: Callable, *args) -> Future:
        """Run ``fn(*args)`` in the child (a module-level function and picklable arguments);
        a child that died is replaced first."""
        try:
            return self._pool().submit(fn, *args)
        except BrokenProcessPool:
            self.restart()
            return self._pool().submit(fn, *args)

    def retried(self, fn: Callable, *args) -> RetriedCall:
        """Like ``submit``, retried once in a fresh child if the child dies on it."""
        return RetriedCall(self, fn, args, self.submit(fn, *args))


class RetriedCall:
    """A call in the I/O child that is retried once if the child dies on it."""

    def __init__(self, io: IOProcess, fn: Callable, args: tuple, future: Future):
        self.io, self.fn, self.args, self.future = io, fn, args, future

    def result(self) -> object:
        """The call's result, or the exception that stopped it (waits for it)."""
        for attempt in range(2):
            error = self.future.exception()
            if not isinstance(error, BrokenProcessPool):
                return self.future.result() if error is None else error
            if attempt == 0:
                self.future = self.io.submit(self.fn, *self.args)
        return BrokenProcessPool("the I/O process died twice on this video")


IO = IOProcess()  # this process's I/O child
