"""k-means, PCA, and the overclustering and video clustering protocols on synthetic data whose
features encode the answer."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mosic.stages.evaluation.datasets.base import IGNORE, SegmentationSample, VideoClip
from mosic.stages.evaluation.kmeans import kmeans, pca, standardize
from mosic.stages.evaluation.metrics import matched_miou
from mosic.stages.evaluation.overclustering import evaluate_overclustering
from mosic.stages.evaluation.video_segmentation import evaluate_video

PATCH = 8
SHADE = 40  # image value of label j: j * SHADE


class LabelFeatures:
    """A ``DenseFeatures`` stand-in: each patch's feature is the one-hot of the label painted at
    its centre, plus a little noise; with ``random`` pure noise."""

    patch_size = PATCH
    batch = 4

    def __init__(self, num_labels: int, random: bool = False):
        self.dim = num_labels
        self.random = random
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        b, h, w, _ = images.shape
        noise = 0.05 * torch.randn(b, self.dim, h // PATCH, w // PATCH, generator=self.generator)
        if self.random:
            return noise / 0.05
        centres = images[:, PATCH // 2 :: PATCH, PATCH // 2 :: PATCH, 0]
        labels = (centres.long() + SHADE // 2) // SHADE
        return torch.nn.functional.one_hot(labels, self.dim).permute(0, 3, 1, 2).float() + noise


def block_labels(rng: np.random.Generator, num_labels: int, blocks: int) -> np.ndarray:
    """(blocks * PATCH, blocks * PATCH) labels constant on PATCH x PATCH blocks."""
    grid = rng.integers(0, num_labels, size=(blocks, blocks))
    return np.kron(grid, np.ones((PATCH, PATCH), dtype=np.int64))


def paint(labels: np.ndarray) -> np.ndarray:
    return np.repeat((labels * SHADE).astype(np.uint8)[..., None], 3, axis=-1)


@dataclass
class FakeSegmentation:
    name: str
    num_classes: int
    class_names: tuple[str, ...]
    samples: list[SegmentationSample]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> SegmentationSample:
        return self.samples[i]


def fake_segmentation(num_classes: int = 4, count: int = 6, blocks: int = 8) -> FakeSegmentation:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(count):
        labels = block_labels(rng, num_classes, blocks)
        mask = labels.copy()
        mask[:3] = IGNORE  # an ignored border
        samples.append(SegmentationSample(f"img{i}", paint(labels), mask))
    names = tuple(f"c{j}" for j in range(num_classes))
    return FakeSegmentation("fake", num_classes, names, samples)


@dataclass
class FakeVideos:
    name: str
    clips: list[VideoClip]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> VideoClip:
        return self.clips[i]


def fake_videos(blocks: int = 8, frames: int = 4) -> FakeVideos:
    """Two clips; background 0 and objects 1, 2 of 3 x 3 and 2 x 4 blocks moving one block per
    frame; the last frame of each clip is unannotated."""
    clips = []
    for c in range(2):
        labels = np.zeros((frames, blocks * PATCH, blocks * PATCH), dtype=np.int64)
        for t in range(frames):
            grid = np.zeros((blocks, blocks), dtype=np.int64)
            grid[c : c + 3, t : t + 3] = 1
            grid[blocks - 2 :, t + c : t + c + 4] = 2
            labels[t] = np.kron(grid, np.ones((PATCH, PATCH), dtype=np.int64))
        masks = labels.copy()
        annotated = np.ones(frames, dtype=bool)
        annotated[-1] = False
        masks[-1] = IGNORE
        clips.append(VideoClip(f"clip{c}", paint(labels), masks, annotated))
    return FakeVideos("fake", clips)


def blobs(seed: int) -> tuple[torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(6, 8, generator=generator)
    truth = torch.arange(1200) % 6
    return centres[truth] + torch.randn(1200, 8, generator=generator), truth.numpy()


def test_kmeans_recovers_separated_blobs_deterministically():
    x, truth = blobs(0)
    first = kmeans(x, 6, seed=3, backend="torch")
    assert matched_miou(first.labels.numpy(), truth, 6, 6)[0] == 1.0
    again = kmeans(x, 6, seed=3, backend="torch")
    assert torch.equal(first.labels, again.labels)
    assert torch.equal(first.centroids, again.centroids)
    assert first.centroids.shape == (6, 8)


def test_kmeans_subsamples_training_points_but_labels_all():
    x, truth = blobs(1)
    fit = kmeans(x, 6, max_points_per_centroid=20, backend="torch")  # trains on 120 points
    assert fit.labels.shape == (1200,)
    assert matched_miou(fit.labels.numpy(), truth, 6, 6)[0] == 1.0


def test_standardize_and_pca():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=generator) * torch.tensor([1.0, 2, 3, 4, 5, 0]) + 7
    z = standardize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :5].std(0, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    assert torch.all(z[:, 5] == 0)  # a constant dimension is centred, not scaled
    y = pca(x, 3)
    assert y.shape == (500, 3)
    variance = y.var(0)
    assert torch.all(variance[:-1] >= variance[1:])
    expected = np.linalg.svd(x.double().numpy() - x.double().numpy().mean(0))[1][:3] ** 2 / 499
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-3)


def test_overclustering_scores_class_encoding_features_perfectly():
    dataset = fake_segmentation()
    out = evaluate_overclustering(
        dataset, LabelFeatures(4), ks=(4, 7), seeds=(0, 1), input_size=64, mask_size=64
    )
    assert out["num_images"] == 6
    assert out["k"][4]["miou"] == pytest.approx(1.0)  # Hungarian
    assert out["k"][7]["miou"] == pytest.approx(1.0)  # many-to-one
    assert out["k"][4]["std"] == pytest.approx(0.0)
    assert len(out["k"][7]["per_seed"]) == 2
    assert set(out["timings_s"]) == {"features", "pca", "kmeans", "matching"}


def test_overclustering_resizes_to_the_input_and_mask_sizes():
    # 32 x 32 images of 8-pixel blocks, 64 x 64 at the input (16-pixel blocks, 8-pixel patches),
    # masks at 100 x 100: only rounding at block edges may differ.
    dataset = fake_segmentation(count=3, blocks=4)
    out = evaluate_overclustering(dataset, LabelFeatures(4), ks=(4,), seeds=(0,), input_size=64)
    assert out["k"][4]["miou"] > 0.95


def test_overclustering_of_random_features_scores_low():
    dataset = fake_segmentation()
    out = evaluate_overclustering(
        dataset, LabelFeatures(4, random=True), ks=(4,), seeds=(0,), input_size=64, mask_size=64
    )
    assert out["k"][4]["miou"] < 0.4


@pytest.mark.parametrize("mode", ["frame", "clip", "dataset"])
def test_video_clustering_of_object_encoding_features(mode):
    out = evaluate_video(fake_videos(), LabelFeatures(3), mode=mode, input_size=64)
    assert out["num_clips"] == 2
    assert out["num_frames"] == 6  # the unannotated frames are skipped
    assert out["num_units"] == {"frame": 6, "clip": 2, "dataset": 1}[mode]
    # Only the outer corners of the objects are lost: pixels are assigned from bilinearly
    # upsampled features.
    assert out["miou"] > 0.95


def test_video_clustering_with_more_clusters_than_objects_and_random_features():
    videos = fake_videos()
    fixed = evaluate_video(videos, LabelFeatures(3), mode="clip", input_size=64, num_clusters=5)
    assert fixed["miou"] > 0.95  # the spare clusters are merged into the background
    noise = evaluate_video(videos, LabelFeatures(3, random=True), mode="clip", input_size=64)
    assert noise["miou"] < 0.6
