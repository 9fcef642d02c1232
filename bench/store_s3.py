"""A store in S3 against the same store on local disk: requests per clip, clip reads, writes.

Starts moto's S3 server on 127.0.0.1 (``pip install -e '.[dev]'``), writes the same generated
videos through the real write path into a local store and into ``s3://`` (parts built locally
and uploaded), then reads the same random clips from both, single-process. Counts the S3
requests of each kind per clip (what carries over to real S3, where each costs a round trip of
~10-100 ms) and times both paths in the same run; moto is a Python server sharing this
machine's cores, so its absolute times say little about S3's. Prints a table and writes
``<out>/store_s3.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.s3_server

from mosic.stages.synthetic import make_video  # noqa: E402
from mosic.store_schema import StoreLocation, TrackStore, VideoData, VideoMeta  # noqa: E402
from tests.s3_server import BUCKET, s3_server  # noqa: E402

EXTRACTION = {"grid": 16, "query_every": 8, "horizon": 67}
CLIP_FRAMES, CLIP_STEP = 12, 6


def videos(count: int, frames: int) -> dict[str, VideoData]:
    """Generated 256x192 videos with random tracks (the tracks' values do not matter here)."""
    rng = np.random.default_rng(0)
    out = {}
    n = EXTRACTION["grid"] ** 2
    starts = np.arange(0, frames - 67 + 1, 8, dtype=np.int32)
    for v in range(count):
        video = make_video(v, num_frames=frames, height=192, width=256)
        q = len(starts)
        out[f"v{v}"] = VideoData(
            VideoMeta(f"v{v}.mp4", (192, 256), 30.0, frames, 1), video.frames, starts,
            rng.uniform(0, 190, (q, 67, n, 2)).astype(np.float32), rng.random((q, 67, n)) > 0.2,
        )  # fmt: skip
    return out


def count_requests(location: StoreLocation) -> Counter:
    """Count the S3 calls of the store's (cached) file system by operation."""
    fs = location.filesystem()
    counts: Counter = Counter()
    call = fs._call_s3

    async def counted(method, *args, **kwargs):
        counts[method if isinstance(method, str) else method.__name__] += 1
        return await call(method, *args, **kwargs)

    fs._call_s3 = counted
    return counts


def read_clips(store: TrackStore, picks: list[tuple[str, int]]) -> float:
    """Seconds to read every picked clip (key, query set)."""
    started = time.perf_counter()
    for key, q in picks:
        store.read_clip(key, q, CLIP_FRAMES, CLIP_STEP)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    data = videos(args.videos, args.frames)
    rng = np.random.default_rng(1)
    results = {}
    with tempfile.TemporaryDirectory() as work, s3_server() as env:
        os.environ.update(env)
        url = f"s3://{BUCKET}/bench/tracks.zarr"
        stores = {"local": Path(work) / "tracks.zarr", "s3": url}
        for name, where in stores.items():
            store = TrackStore.create(where, EXTRACTION)
            started = time.perf_counter()
            store.write_part(data)
            results[name] = {"write_s": time.perf_counter() - started}
        keys = list(data)
        sets = {k: len(data[k].query_frames) for k in keys}
        usable = {k: [q for q in range(sets[k]) if q * 8 + (CLIP_FRAMES - 1) * CLIP_STEP < 96]
                  for k in keys}  # fmt: skip
        picks = [(k, int(rng.choice(usable[k]))) for k in rng.choice(keys, args.clips)]
        for name, where in stores.items():
            store = TrackStore.open(where)
            store.read_clip(*picks[0], CLIP_FRAMES, CLIP_STEP)  # warm: the part's metadata
            counts = count_requests(store.location) if name == "s3" else Counter()
            seconds = read_clips(store, picks)
            results[name].update(
                clips_per_s=len(picks) / seconds,
                requests_per_clip={m: c / len(picks) for m, c in sorted(counts.items())},
            )
    ratio = results["s3"]["clips_per_s"] / results["local"]["clips_per_s"]
    print(f"{args.videos} videos x {args.frames} frames (256x192, JPEG), "
          f"{args.clips} clips of {CLIP_FRAMES} frames, one process")  # fmt: skip
    print(f"{'store':8} {'write s':>8} {'clips/s':>8}  S3 requests per clip")
    for name, r in results.items():
        per = ", ".join(f"{m} {c:.1f}" for m, c in r["requests_per_clip"].items()) or "-"
        print(f"{name:8} {r['write_s']:8.2f} {r['clips_per_s']:8.1f}  {per}")
    print(f"s3 (moto on loopback) / local clip reads: {ratio:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {**results, "ratio_s3_to_local_clips": ratio, "videos": args.videos,
              "frames": args.frames, "clips": args.clips}  # fmt: skip
    (args.out / "store_s3.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
