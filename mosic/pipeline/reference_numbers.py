"""Where the reproduction's reference numbers and inputs come from (named in its messages and
tables; see /work/shared/reference/facts.md for how each was gathered)."""

from __future__ import annotations

# Keys used by the ``source:`` field of a config's evaluations.
SOURCES: dict[str, str] = {
    "secondary": (
        "secondary summary of the MoSiC paper (ICCV 2025); not yet checked against the paper"
    ),
    "open-hummingbird-eval": "open-hummingbird-eval README (vpariza/open-hummingbird-eval)",
}

# Keys used by the ``dataset:`` field of evaluations and of ``train.dataset``.
DATASETS: dict[str, str] = {
    "voc": "PASCAL VOC 2012 (host.robots.ox.ac.uk/pascal/VOC/voc2012) with the SBD trainaug "
    "masks (SegmentationClassAug), as VOCdevkit/VOC2012",
    "ade20k": "ADE20K SceneParsing (ADEChallengeData2016.zip from sceneparsing.csail.mit.edu)",
    "davis": "DAVIS 2017 trainval 480p (davischallenge.org)",
    "ytvos": "YouTube-VOS 2019 train.zip (youtube-vos.org, CodaLab registration) as ytvos/train, "
    "then TimeT's evaluation split: mosic ytvos-split $DATA_ROOT/ytvos/train --out "
    "$DATA_ROOT/ytvos",
    "ytvos-train": "YouTube-VOS 2019 train_all_frames (youtube-vos.org, CodaLab registration)",
}

# Keys used by the ``weights:`` field (the environment variable is WEIGHTS_<KEY>).
WEIGHTS: dict[str, str] = {
    key: f"timm {name} (huggingface.co/timm), saved as .safetensors"
    for key, name in {
        "dino-s16": "vit_small_patch16_224.dino",
        "dino-b16": "vit_base_patch16_224.dino",
        "dinov2-s14": "vit_small_patch14_dinov2.lvd142m",
        "dinov2-b14": "vit_base_patch14_dinov2.lvd142m",
        "dinov2-l14": "vit_large_patch14_dinov2.lvd142m",
        "dinov2r-s14": "vit_small_patch14_reg4_dinov2.lvd142m",
        "dinov2r-b14": "vit_base_patch14_reg4_dinov2.lvd142m",
        "dinov2r-l14": "vit_large_patch14_reg4_dinov2.lvd142m",
        "eva02-clip-b16": "eva02_base_patch16_clip_224.merged2b (EVA-CLIP)",
    }.items()
}

HUMMINGBIRD_FILE_SETS = (
    "the file_sets/ folder of github.com/vpariza/open-hummingbird-eval, copied to "
    "$DATA_ROOT/file_sets (lists of the training images of each data fraction and seed)"
)

COTRACKER3_CHECKPOINT = (
    "scaled_offline.pth, linked from github.com/facebookresearch/co-tracker (CC-BY-NC)"
)
COTRACKER3_CODE = "github.com/facebookresearch/co-tracker (pip install the clone)"
