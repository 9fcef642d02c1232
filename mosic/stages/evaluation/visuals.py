"""Prediction pictures of the evaluations (``mosic evaluate --save-visuals N``).

A picture is one row of four panels of the evaluated image's own size (H x W) under a title
strip: the input image, the ground truth, the benchmark's prediction and a cluster map. Labels
are drawn with the Pascal VOC colour map (class / object / cluster id i -> ``palette(n)[i]``, the
colours VOC's and DAVIS's palette PNGs use) and ``IGNORE`` pixels in ``IGNORE_COLOUR``; label
maps of another size are resized to H x W by nearest neighbour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from mosic.stages.evaluation.datasets.base import IGNORE

TITLES = ("image", "ground truth", "prediction", "clusters")
TITLE_HEIGHT = 14  # pixels of the strip above the panels
IGNORE_COLOUR = (100, 100, 100)  # dark grey: not among the VOC colours of ids below 2^15


@dataclass(frozen=True)
class Visual:
    """What one picture shows.

    name: the item (file name part). image: (H, W, 3) uint8. truth: (H, W) int64 label ids or
    ``IGNORE``. prediction: (h, w) int64 label ids or ``IGNORE`` (no class), any size.
    clusters: (h', w') int64 cluster ids, any size.
    """

    name: str
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    clusters: np.ndarray


class VisualSink(Protocol):
    """Where a benchmark hands the pictures of its first ``count`` evaluation images."""

    count: int

    def __call__(self, visual: Visual) -> None: ...


def palette(n: int) -> np.ndarray:
    """The Pascal VOC colour map of ids 0 .. n - 1: (n, 3) uint8, the bits of id i spread over
    the high bits of R, G and B (0 black, 1 (128, 0, 0), 2 (0, 128, 0), ...)."""
    ids = np.arange(n, dtype=np.int64)
    colours = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            colours[:, channel] |= bit << (7 - shift)
    return colours.astype(np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) int ids >= 0 or ``IGNORE`` -> (H, W, 3) uint8: VOC colours, ``IGNORE_COLOUR``
    for ``IGNORE``."""
    labels = np.asarray(labels, dtype=np.int64)
    colours = palette(int(labels.max(initial=0)) + 1)
    out = colours[np.maximum(labels, 0)]
    out[labels == IGNORE] = IGNORE_COLOUR
    return out


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) labels -> (height, width), nearest (torch's ``nearest``: source index
    floor(i * h / height))."""
    rows = np.arange(height) * labels.shape[0] // height
    cols = np.arange(width) * labels.shape[1] // width
    return np.asarray(labels)[rows[:, None], cols[None, :]]


def compose(visual: Visual) -> Image.Image:
    """The picture: (TITLE_HEIGHT + H, 4 W) RGB, panels image | truth | prediction | clusters,
    each under its title (clipped to the panel's width)."""
    height, width = visual.truth.shape
    panels = (
        np.asarray(visual.image, dtype=np.uint8),
        colorize(visual.truth),
        colorize(resize_labels(visual.prediction, height, width)),
        colorize(resize_labels(visual.clusters, height, width)),
    )
    picture = Image.new("RGB", (len(panels) * width, TITLE_HEIGHT + height), "white")
    for i, (title, panel) in enumerate(zip(TITLES, panels, strict=True)):
        strip = Image.new("RGB", (width, TITLE_HEIGHT), "white")
        ImageDraw.Draw(strip).text((2, 1), title, fill="black")
        picture.paste(strip, (i * width, 0))
        picture.paste(Image.fromarray(panel), (i * width, TITLE_HEIGHT))
    return picture


class VisualWriter:
    """A ``VisualSink`` writing each picture as ``<folder>/<index>_<name>.png`` (index from 000,
    in the order received); ``paths`` lists the files written."""

    def __init__(self, folder: str | Path, count: int):
        self.folder = Path(folder)
        self.count = count
        self.paths: list[Path] = []

    def __call__(self, visual: Visual) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", visual.name)
        path = self.folder / f"{len(self.paths):03d}_{safe}.png"
        compose(visual).save(path)
        self.paths.append(path)
