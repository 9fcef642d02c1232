"""``mosic reproduce``: the paper's tables from YAML configs, one config per table row.

Each row is: a backbone (and its weights), optionally a training run (extract tracks into a
store, train from it), and evaluations, each with its reference number. Every step is skipped
when its output is complete (a store with every video indexed, a final checkpoint, a result
JSON for the same request), so an interrupted reproduction resumes; a finished run whose
settings changed is an error (``StaleRun``), not silently reused. Rows with a ``generate``
section run on videos the reproduction renders itself (the mini reproduction, CPU only); the
rows' configs are read by ``mosic.pipeline.reproduce_config``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from mosic.pipeline.checkpoint import list_checkpoints
from mosic.pipeline.evaluate import EvalRequest, run_evaluation, write_result
from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
from mosic.pipeline.reference_numbers import (
    COTRACKER3_CHECKPOINT,
    COTRACKER3_CODE,
    DATASETS,
    HUMMINGBIRD_FILE_SETS,
    WEIGHTS,
)
from mosic.pipeline.reproduce_config import RANDOM_INIT, Evaluation, Generate, Row, train_config
from mosic.pipeline.run_config import closest, read_mapping
from mosic.pipeline.train import train
from mosic.pipeline.train_config import TrainConfig
from mosic.stages.model.backbone import create_backbone
from mosic.stages.synthetic import make_video, write_frame_folder
from mosic.stages.synthetic_datasets import write_davis, write_voc
from mosic.stages.video_io import list_sources
from mosic.store_schema import TrackStore
from mosic.store_schema.layout import video_key


class StaleRun(Exception):
    """A finished training run whose settings are not the row's any more."""


# Version of the rendered data: 2 labels the VOC layout by shape kind (1: by stacking order).
GENERATED_DATA_VERSION = 2


@dataclass(frozen=True)
class Locations:
    """Where the inputs are: from environment variables, else from one YAML file.

    Variables: DATA_ROOT, WEIGHTS_<KEY> (e.g. WEIGHTS_DINOV2_S14), COTRACKER3_CHECKPOINT,
    COTRACKER3_REPO. File keys: data_root, weights (a mapping key -> path),
    cotracker3_checkpoint, cotracker3_repo.
    """

    data_root: Path | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    cotracker3_checkpoint: Path | None = None
    cotracker3_repo: Path | None = None

    @classmethod
    def load(cls, file: Path | None = None, env: Mapping[str, str] = os.environ) -> Locations:
        given = read_mapping(file) if file else {}
        known = [f.name for f in fields(cls)]
        for key in given:
            if key not in known:
                raise ValueError(
                    f"{file}: unknown key {key!r}{closest(str(key), known)}; the keys: "
                    f"{', '.join(known)}"
                )
        if not isinstance(given.get("weights") or {}, dict):
            raise ValueError(f"{file}: weights: expected 'key: path' lines")
        weights = {k: Path(v) for k, v in (given.get("weights") or {}).items()}
        for name, value in env.items():
            if name.startswith("WEIGHTS_") and value:
                weights[name.removeprefix("WEIGHTS_").lower().replace("_", "-")] = Path(value)

        def pick(variable: str, key: str) -> Path | None:
            value = env.get(variable) or given.get(key)
            return Path(value) if value else None

        return cls(
            data_root=pick("DATA_ROOT", "data_root"),
            weights=weights,
            cotracker3_checkpoint=pick("COTRACKER3_CHECKPOINT", "cotracker3_checkpoint"),
            cotracker3_repo=pick("COTRACKER3_REPO", "cotracker3_repo"),
        )


def weights_variable(key: str) -> str:
    """The environment variable naming the weights ``key``: dinov2-s14 -> WEIGHTS_DINOV2_S14."""
    return "WEIGHTS_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


class Reproduction:
    """Runs rows under ``work`` (stores, checkpoints, result JSONs), resuming what is done."""

    def __init__(
        self,
        rows: list[Row],
        locations: Locations,
        work: Path,
        log: Callable[[str], None] = print,
    ):
        self.rows, self.locations, self.work, self.log = rows, locations, work, log

    # -- where things are ---------------------------------------------------------------------
    def data_root(self, row: Row) -> Path | None:
        return self.work / "data" if row.generate else self.locations.data_root

    def run_dir(self, row: Row, seed: int) -> Path:
        return self.work / "runs" / row.training.run / f"seed{seed}"

    def result_path(self, row: Row, evaluation: Evaluation, seed: int) -> Path:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", evaluation.column).strip("-").lower()
        return self.work / "results" / row.id / f"seed{seed}" / f"{slug}.json"

    def trained(self, row: Row, seed: int) -> bool:
        return (self.run_dir(row, seed) / "final.json").is_file()

    # -- the check before any work ------------------------------------------------------------
    def missing(self) -> list[str]:
        """Every input that is not there, one line each, with where it comes from."""
        lines: dict[str, None] = {}  # ordered, without repeats
        real = [row for row in self.rows if not row.generate]
        if real and self.locations.data_root is None:
            lines["DATA_ROOT is not set: the folder holding the datasets listed below"] = None
        root = self.locations.data_root or Path("$DATA_ROOT")
        for row in real:
            for evaluation in row.evaluations:
                path = root / evaluation.data
                if evaluation.dataset == "ytvos":
                    path = path / "val1"  # TimeT's split, built by mosic ytvos-split
                if not path.exists():
                    lines[f"{path}: {DATASETS[evaluation.dataset]}"] = None
            if row.weights != RANDOM_INIT:
                path = self.locations.weights.get(row.weights)
                if path is None or not path.is_file():
                    where = path or f"set {weights_variable(row.weights)}"
                    lines[f"weights {row.weights} ({where}): {WEIGHTS[row.weights]}"] = None
            if row.training and not all(self.trained(row, s) for s in row.seeds):
                videos = root / row.training.videos
                if not videos.exists():
                    lines[f"{videos}: {DATASETS[row.training.dataset]}"] = None
                tracker = row.training.extract.get("tracker", "lk")
                if tracker.startswith("cotracker3"):
                    lines.update({line: None for line in self._cotracker_missing()})
        return list(lines)

    def _cotracker_missing(self) -> list[str]:
        checkpoint = self.locations.cotracker3_checkpoint
        lines = []
        if checkpoint is None or not checkpoint.is_file():
            where = checkpoint or "set COTRACKER3_CHECKPOINT"
            lines.append(f"CoTracker3 checkpoint ({where}): {COTRACKER3_CHECKPOINT}")
        repo = self.locations.cotracker3_repo
        if repo is None and importlib.util.find_spec("cotracker") is None:
            lines.append(f"CoTracker3 code (no cotracker package; or set COTRACKER3_REPO to a "
                         f"clone): {COTRACKER3_CODE}")  # fmt: skip
        elif repo is not None and not repo.is_dir():
            lines.append(f"CoTracker3 code ({repo}): {COTRACKER3_CODE} and set COTRACKER3_REPO")
        return lines

    def published_subset(self, row: Row, evaluation: Evaluation) -> Path | None:
        """The published training list a column names (``options.subset_file``, under the data
        root), or None."""
        listed = evaluation.options.get("subset_file")
        root = self.data_root(row) or Path("$DATA_ROOT")
        return root / listed if listed else None

    def notes(self) -> list[str]:
        """What runs, but not as the reference does: published lists missing, replaced by
        mosic's seeded draws (each result records it)."""
        lines = []
        for row in self.rows:
            for evaluation in row.evaluations:
                listed = self.published_subset(row, evaluation)
                if listed is not None and not listed.is_file():
                    lines.append(
                        f"{row.id} / {evaluation.column}: {listed} not found, so mosic's seeded "
                        f"draw of the same fraction is used instead (recorded in the result); "
                        f"the published lists: {HUMMINGBIRD_FILE_SETS}"
                    )
        return lines

    # -- the steps ----------------------------------------------------------------------------
    def run(self) -> None:
        """Every row, every seed: generate, extract, train, evaluate (each skipped when done)."""
        for note in self.notes():
            self.log(f"note: {note}")
        for row in self.rows:
            if row.generate:
                self.generate(row.generate)
            for seed in row.seeds:
                model, weights = self.model(row, seed)
                for evaluation in row.evaluations:
                    self.evaluate(row, evaluation, seed, model, weights)

    def generate(self, spec: Generate) -> None:
        """Render the mini reproduction's videos once (a marker file says they are complete).
        Data rendered by an older version is rendered again and the results of every row
        evaluated on it are dropped; data rendered with other settings also drops those rows'
        stores and training runs (their videos changed)."""
        root = self.work / "data"
        marker = root / "generated.json"
        settings = vars(spec) | {"version": GENERATED_DATA_VERSION}
        if marker.is_file():
            old = json.loads(marker.read_text())
            if old == settings:
                return
            shutil.rmtree(root)  # no leftovers of the old data (videos, frames, labels)
            new_videos = {k: v for k, v in old.items() if k != "version"} != vars(spec)
            for row in (row for row in self.rows if row.generate):
                shutil.rmtree(self.work / "results" / row.id, ignore_errors=True)
                if new_videos and row.training:
                    shutil.rmtree(self.work / "stores" / f"{row.training.store}.zarr", True)
                    shutil.rmtree(self.work / "runs" / row.training.run, True)
            dropped = "results, stores, runs" if new_videos else "results"
            self.log(f"generate: the data changed; {dropped} on the old data dropped")
        self.log(f"generate: {spec.train_videos} + {spec.eval_videos} videos -> {root}")
        size = {"num_frames": spec.frames, "height": spec.height, "width": spec.width}
        for i in range(spec.train_videos):
            write_frame_folder(make_video(i, **size), root / "videos" / f"train{i:03d}")
        held_out = [make_video(10_000 + i, **size) for i in range(spec.eval_videos)]
        names = [f"scene{i:03d}" for i in range(spec.eval_videos)]
        d = spec.davis_videos
        write_davis(held_out[:d], root / "DAVIS", names[:d])
        write_voc(held_out, root, names, spec.voc_every, spec.voc_train_videos)
        marker.write_text(json.dumps(settings, sort_keys=True))

    def base_weights(self, row: Row, seed: int) -> Path:
        """The backbone's weights file before any training."""
        if row.weights != RANDOM_INIT:
            return self.locations.weights[row.weights]
        size = row.generate.init_size if row.generate else 224
        path = self.work / "weights" / f"{row.backbone}-{size}-seed{seed}.pth"
        if not path.is_file():
            torch.manual_seed(seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(create_backbone(row.backbone, img_size=size).state_dict(), path)
        return path

    def model(self, row: Row, seed: int) -> tuple[str, str | None]:
        """The model and weights to evaluate: the backbone with its base weights, or (for a
        row that trains) the final training checkpoint, trained first if needed."""
        base = self.base_weights(row, seed)
        if row.training is None:
            return row.backbone, str(base)
        cfg = self.train_config(row, seed, base)
        final = self.run_dir(row, seed) / "final.json"
        if not final.is_file():
            self.extract(row)
            self.train(row, seed, cfg)
        record = json.loads(final.read_text())
        saved = record.get("config", cfg.to_dict())  # runs of older versions: not recorded
        changed = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v)
        if changed:
            raise StaleRun(
                f"{final.parent}: trained with other {', '.join(changed)}; delete the folder "
                "to train again, or give the row another run name"
            )
        return record["checkpoint"], None

    def extract(self, row: Row) -> Path:
        """Stage one into the row's store, unless every video is already indexed."""
        spec = row.training
        path = self.work / "stores" / f"{spec.store}.zarr"
        sources = list_sources(self.data_root(row) / spec.videos)
        if path.exists() and {video_key(s.name) for s in sources} <= set(
            TrackStore.open(path).keys()
        ):
            self.log(f"extract {spec.store}: complete, skipped")
            return path
        config = ExtractConfig(**spec.extract)
        if config.tracker.startswith("cotracker3"):
            checkpoint, repo = self.locations.cotracker3_checkpoint, self.locations.cotracker3_repo
            config = replace(
                config,
                tracker_checkpoint=str(checkpoint),
                tracker_repo=str(repo) if repo else None,
            )
        self.log(f"extract {spec.store}: {len(sources)} videos -> {path}")
        store, tracker = open_store(str(path), config)
        summary = run_extraction(sources, store, config, InProcessRunner(store, config, tracker))
        if summary.failures:
            self.log(f"extract {spec.store}: {summary.failed} videos failed (see store info)")
        return path

    def train_config(self, row: Row, seed: int, base: Path) -> TrainConfig:
        """The row's training settings for ``seed``, from the base weights ``base``."""
        store = self.work / "stores" / f"{row.training.store}.zarr"
        output = self.run_dir(row, seed)
        settings = {**row.training.settings, "store": [str(store)], "output": str(output)}
        settings |= {"backbone": row.backbone, "seed": seed}
        return replace(train_config(settings), weights=str(base))

    def train(self, row: Row, seed: int, cfg: TrainConfig) -> None:
        """Stage two, resumed from the run's last checkpoint; writes ``final.json``."""
        found = list_checkpoints(cfg.output)
        self.log(f"train {row.training.run} seed {seed}" + (f" from {found[-1]}" if found else ""))
        result = train(cfg, resume="auto")
        record = {"checkpoint": str(result.final_checkpoint), "steps": result.steps}
        record["config"] = cfg.to_dict()
        (Path(cfg.output) / "final.json").write_text(json.dumps(record))

    def evaluate(
        self, row: Row, evaluation: Evaluation, seed: int, model: str, weights: str | None
    ) -> None:
        """One column for one seed, unless its result JSON exists for the same request (a
        result for other settings, model or weights is computed again)."""
        path = self.result_path(row, evaluation, seed)
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in evaluation.options.items()}
        listed = self.published_subset(row, evaluation)
        if listed is not None and listed.is_file():  # the published list, not a draw of ours
            options |= {"subset_file": str(listed), "fraction": 1.0}
        elif listed is not None:
            options.pop("subset_file")
            options["subset_fallback"] = str(listed)
            if options.get("fraction", 1.0) >= 1:
                raise ValueError(f"{row.id} / {evaluation.column}: subset_file needs a fraction")
        request = EvalRequest(
            model=model,
            weights=weights,
            benchmark=evaluation.benchmark,
            dataset=evaluation.dataset,
            data_root=str(self.data_root(row) / evaluation.data),
            seed=seed,
            **options,
        )
        wanted = json.loads(json.dumps(asdict(request)))
        if path.is_file() and json.loads(path.read_text()).get("request") == wanted:
            return
        again = " (settings changed)" if path.is_file() else ""
        self.log(f"evaluate {row.id} seed {seed}: {evaluation.column}{again}")
        write_result(run_evaluation(request), path)

    # -- the tables ---------------------------------------------------------------------------
    def scores(self, row: Row, evaluation: Evaluation) -> list[float]:
        """The column's number for each seed that has a result."""
        paths = [self.result_path(row, evaluation, seed) for seed in row.seeds]
        return [evaluation.score(json.loads(p.read_text())) for p in paths if p.is_file()]
