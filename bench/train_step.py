"""Training step on CPU with a small ViT: throughput and the fraction of time waiting for data.

Trains the same run twice in this process, with 0 and with 2 DataLoader workers, on a store
of generated videos. Prints a table and writes ``<out>/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.train import train
from mosic.pipeline.train_config import TrainConfig
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.synthetic import make_video, write_video_file


def make_store(work: Path, videos: int) -> Path:
    """Generated videos extracted into a store with the default 12x6 clip horizon."""
    for i in range(videos):
        video = make_video(i, num_frames=80, height=192, width=256)
        write_video_file(video, work / "videos" / f"v{i}.mp4")
    store = work / "tracks.zarr"
    result = CliRunner().invoke(
        app, ["extract-tracks", str(work / "videos"), "--store", str(store), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    return store


def run(store: Path, work: Path, workers: int, steps: int, batch: int) -> dict:
    """Train ``steps`` steps; the data-wait fraction over all but the first step."""
    cfg = TrainConfig(
        stores=(str(store),),
        output=str(work / f"run{workers}"),
        backbone="vit-tiny-test",
        batch_size=batch,
        max_steps=steps,
        loader_workers=workers,
        checkpoint_every=10**9,
        device="cpu",
        clip=ClipConfig(augment=AugmentConfig(input_size=112)),
    )
    records: list[dict] = []
    train(cfg, on_step=records.append)
    timed = records[1:]
    return {
        "workers": workers,
        "clips_per_s": sum(r["clips_per_s"] for r in timed) / len(timed),
        "data_wait_fraction": sum(r["data_wait_fraction"] for r in timed) / len(timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    try:
        store = make_store(work, videos=args.batch * 2)
        rows = [run(store, work, w, args.steps, args.batch) for w in (0, 2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"training step on CPU: vit-tiny-test, {args.batch} clips of 12 frames at 112 px")
    for r in rows:
        print(
            f"  {r['workers']} loader workers: {r['clips_per_s']:.2f} clips/s, "
            f"waiting for data {100 * r['data_wait_fraction']:.1f} % of the step"
            + (" (goal < 10 %)" if r["workers"] == 2 else "")
        )
    print(f"  speed-up with 2 workers: {rows[1]['clips_per_s'] / rows[0]['clips_per_s']:.2f}x")
    (args.out / "train_step.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
