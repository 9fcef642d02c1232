"""``TrainConfig``: every setting of a training run, as data (saved in each checkpoint).

``mosic.pipeline.run_config`` names each leaf field as a flat setting (the flag's name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import get_type_hints

from mosic.stages.data.clips import ClipConfig
from mosic.stages.objective import ObjectiveConfig


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with two learning rates, cosine decay to 0 after an optional linear warmup."""

    lr_head: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0: no clipping


@dataclass(frozen=True)
class TrainEvalConfig:
    """A quick evaluation of the student backbone every ``every`` steps (0: never), through
    ``mosic evaluate``'s code on the first ``max_items`` items of the dataset."""

    every: int = 0
    benchmark: str = "video"  # or hummingbird, linear, overclustering
    dataset: str = "davis"
    data_root: str | None = None
    max_items: int | None = 8
    input_size: int | None = None  # None: the benchmark protocol's own


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults follow the paper's setup (8 epochs, global batch 64 clips)."""

    stores: tuple[str, ...]
    output: str = "runs/train"
    store_weights: tuple[float, ...] | None = None
    backbone: str = "dinov2-s14"
    weights: str | None = None
    pretrained: bool = False
    unfreeze_blocks: int = 2  # ignored with LoRA (lora_rank > 0): every base weight is frozen
    lora_rank: int = 0  # > 0: LoRA adapters on every block instead of unfreezing blocks
    lora_alpha: float | None = None  # None: lora_rank (adapter scaling 1)
    prototypes: int = 100
    feature_sampling: str = "nearest"
    teacher_momentum: float = 0.99
    epochs: int = 8
    batch_size: int = 64  # global, over all ranks
    max_steps: int | None = None
    loader_workers: int = 2
    max_corrupt_fraction: float = 0.01  # corrupt clips skipped beyond this fraction stop a run
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    precision: str = "auto"  # auto: bf16 on cuda, fp32 on cpu; or fp32 / bf16
    attention: str = "sdpa"  # or xformers (CUDA, when installed)
    clip: ClipConfig = field(default_factory=ClipConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    evaluation: TrainEvalConfig = field(default_factory=TrainEvalConfig)

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "checkpoint_every", "keep_checkpoints", "log_every"):
            _at_least(name, getattr(self, name), 1)
        for name in ("unfreeze_blocks", "lora_rank", "loader_workers"):
            _at_least(name, getattr(self, name), 0)
        if self.max_steps is not None:
            _at_least("max_steps", self.max_steps, 1)

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings) for checkpoints and logs."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The inverse of ``to_dict``: settings added since a checkpoint was written get their
        defaults, settings it has that no longer exist are ignored."""
        return _build(cls, data)


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be at least {low}, not {value}")


def _build(cls, data: dict):
    """``cls`` (a config dataclass) from plain data, nested configs and tuples rebuilt."""
    hints = get_type_hints(cls)
    given = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        if is_dataclass(kind):
            value = _build(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        given[f.name] = value
    return cls(**given)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
