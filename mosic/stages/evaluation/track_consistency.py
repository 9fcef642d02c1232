"""Feature consistency along tracks: how alike a point's features are across time.

For each clip (frames and ground-truth tracks of points queried at its first frame), frames
are resized to ``input_size`` x ``input_size``, the backbone's patch features are sampled
bilinearly at the tracked points, and the cosine similarity of each point's feature at the
first frame with its own feature at every later frame where it is visible is averaged
(``cosine``). The quantity MoSiC optimises; it is meaningful only beside ``cosine_other``, the
same average over pairs of *different* points (visible at the first frame and at the later
one), which a model that maps everything to one vector also maximises: ``margin`` is the
difference.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.model.sampling import sample_features


def track_consistency(
    features: DenseFeatures,
    clips: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    input_size: int,
) -> dict:
    """Mean cosine similarity along tracks, and between different points.

    clips: (frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) pixels, visible
    (F, N) bool), the tracks starting at frame 0. Returns ``{"cosine", "cosine_other",
    "margin", "pairs", "per_frame": [cosine at frame 1, 2, ...]}`` (per_frame: averaged over
    clips with that many frames).
    """
    same_sum = other_sum = 0.0
    same_count = other_count = 0
    per_frame: dict[int, list[float]] = {}
    for frames, positions, visible in clips:
        _, height, width, _ = frames.shape
        resized = np.stack([cv2.resize(f, (input_size, input_size), interpolation=cv2.INTER_AREA)
                            for f in frames])  # fmt: skip
        scale = np.array([input_size / width, input_size / height], np.float32)
        points = torch.from_numpy((np.nan_to_num(positions) + 0.5) * scale - 0.5)
        maps = features(resized)  # (F, D, h, w)
        sampled = sample_features(maps, points, (input_size, input_size), "bilinear")
        unit = F.normalize(sampled, dim=-1)  # (F, N, D)
        seen = torch.from_numpy(visible)
        for t in range(1, len(frames)):
            both = seen[0] & seen[t]
            if both.sum() < 2:
                continue
            a, b = unit[0, both], unit[t, both]
            cosine = a @ b.t()  # (M, M): the diagonal pairs a point with itself
            m = len(a)
            diagonal = cosine.diagonal()
            same_sum += float(diagonal.sum())
            same_count += m
            other_sum += float(cosine.sum() - diagonal.sum())
            other_count += m * (m - 1)
            per_frame.setdefault(t, []).append(float(diagonal.mean()))
    cosine = same_sum / max(same_count, 1)
    other = other_sum / max(other_count, 1)
    return {
        "cosine": cosine,
        "cosine_other": other,
        "margin": cosine - other,
        "pairs": same_count,
        "per_frame": [float(np.mean(per_frame[t])) for t in sorted(per_frame)],
    }
