"""The configs of ``mosic reproduce`` as data: one YAML file per row of the paper's tables.

A row names a backbone and its weights, optionally a training run (``train:``: how to extract
tracks and the ``TrainConfig`` settings) and a ``generate:`` section (the mini reproduction's
rendered data), and its evaluations, one per column, each with its reference number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mosic.pipeline.run_config import build_config, coerce_all, read_mapping
from mosic.pipeline.train_config import TrainConfig

RANDOM_INIT = "random-init"  # weights: the backbone's seeded random initialisation
STILLS_START = "stills-pretrained"  # weights: pretrained on generated stills (the row's start:)


@dataclass(frozen=True)
class Evaluation:
    """One column of a row: a benchmark on a dataset, and the paper's number for it."""

    column: str
    benchmark: str
    dataset: str
    data: str  # the dataset's folder, under the data root
    options: dict = field(default_factory=dict)  # further EvalRequest fields
    reference: float | None = None
    source: str | None = None  # a key of reference_numbers.SOURCES
    # The result's figure: "miou" (the field's, averaged over all classes as the references
    # do), "miou_present_classes" (over the classes the evaluation data holds); track
    # consistency: "cosine" or "margin".
    metric: str = "miou"

    def score(self, result: dict) -> float:
        """The column's number (x 100) from a result JSON; overclustering: the first K."""
        metrics = result["metrics"]
        if "k" in metrics:
            metrics = metrics["k"][str(self.options["clusters"][0])]
        return 100 * metrics[self.metric]


@dataclass(frozen=True)
class Training:
    """Stage one and stage two of a row (rows trained alike share ``run`` and ``store``)."""

    run: str
    store: str
    videos: str  # under the data root
    dataset: str  # a key of reference_numbers.DATASETS
    extract: dict = field(default_factory=dict)  # ExtractConfig fields
    settings: dict = field(default_factory=dict)  # run_config settings (mosic train's names)


@dataclass(frozen=True)
class Generate:
    """The mini reproduction's data (``mosic.pipeline.trajbench``): training videos, videos
    whose still frames make the starting backbone, and held-out videos as DAVIS (category
    masks), VOC (category labels) and clips with ground-truth tracks."""

    data_seed: int = 0  # seeds of the videos (development runs use others)
    pretrain_videos: int = 0  # videos whose still frames make the starting backbone
    davis_every: int = 1  # the DAVIS layout holds every N-th frame
    train_videos: int = 16
    eval_videos: int = 16
    davis_videos: int = 8
    voc_every: int = 6
    voc_train_videos: int = 12
    frames: int = 48
    width: int = 128
    height: int = 96
    init_size: int = 64  # input size the random-init weights are built for


@dataclass(frozen=True)
class Row:
    """One config file: one row of one of the paper's tables."""

    id: str
    table: str
    row: str
    backbone: str
    weights: str  # a key of the locations' weights, or "random-init"
    evaluations: tuple[Evaluation, ...]
    seeds: tuple[int, ...] = (0,)
    training: Training | None = None
    generate: Generate | None = None
    margins_over: tuple[str, ...] = ()  # ids of rows this one's margins are reported over
    start: dict | None = None  # weights stills-pretrained: StillsConfig fields and seed


def load_row(path: str | Path) -> Row:
    """Read one config file (the row's id is the file's stem)."""
    data = read_mapping(Path(path))
    training = data.pop("train", None)
    if training:
        coerce_all(training.get("settings", {}), f"{path}: train.settings: ")  # checked now
    generate = data.pop("generate", None)
    return Row(
        id=Path(path).stem,
        evaluations=tuple(Evaluation(**e) for e in data.pop("evaluate")),
        seeds=tuple(data.pop("seeds", (0,))),
        margins_over=tuple(data.pop("margins_over", ())),
        training=Training(**training) if training else None,
        generate=Generate(**generate) if generate else None,
        **data,
    )


def load_rows(configs: list[Path]) -> list[Row]:
    """Config files, and every ``*.yaml`` under each folder given, in name order."""
    paths: list[Path] = []
    for config in configs:
        paths += sorted(config.rglob("*.yaml")) if config.is_dir() else [config]
    return [load_row(path) for path in paths]


def train_config(settings: dict, where: str = "") -> TrainConfig:
    """A TrainConfig from a row's settings (named as ``mosic train``'s options, as in a run
    file): defaults for what is not given; unknown names are a ValueError naming ``where``."""
    return build_config(coerce_all(settings, where))
