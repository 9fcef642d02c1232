"""The extraction's I/O child process: a decoder that crashes takes only its own video down."""

from __future__ import annotations

import os

import mosic.pipeline.extract as extract
from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
from mosic.pipeline.io_process import IO
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.video_io import list_sources
from mosic.store_schema import TrackStore
from mosic.store_schema.validate import validate_store

CONFIG = ExtractConfig(grid=4, query_every=8, horizon=9, size="128x96")


def test_a_crashing_decoder_fails_only_its_video(tmp_path, monkeypatch):
    for i, name in enumerate(("a", "b", "c")):
        video = make_video(i, num_frames=12, height=96, width=128)
        write_video_file(video, tmp_path / "videos" / f"{name}.mp4")
    real = extract.decode

    def crash_on_b(source, *options):  # FFmpeg dying on a broken file, as seen from Python
        if source.name == "b.mp4":
            os._exit(1)
        return real(source, *options)

    monkeypatch.setattr(extract, "decode", crash_on_b)
    IO.restart()  # the next child is forked with the crashing decode
    try:
        store, tracker = open_store(str(tmp_path / "tracks.zarr"), CONFIG)
        runner = InProcessRunner(store, CONFIG, tracker)
        summary = run_extraction(list_sources(tmp_path / "videos"), store, CONFIG, runner)
    finally:
        IO.restart()  # later tests get a child with the real decode
    assert summary.done == 2
    (failure,) = summary.failures
    assert (failure.key, failure.stage) == ("b", "decode")
    assert "died twice" in failure.reason
    reopened = TrackStore.open(tmp_path / "tracks.zarr")
    assert sorted(reopened.keys()) == ["a", "c"]
    assert validate_store(reopened).ok
