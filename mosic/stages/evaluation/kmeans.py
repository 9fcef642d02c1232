"""Feature standardisation, PCA and k-means for the clustering evaluations.

The references (NeCo / Leopart ``experiments/utils.py``, TimeT ``clustering.py``) use sklearn's
``StandardScaler``, ``faiss.PCAMatrix`` and ``faiss.Kmeans``. Standardisation and PCA run in
torch here; k-means runs on ``faiss.Kmeans`` by default, as in the references, or, when asked
(``backend="torch"``), on mosic's own torch implementation:

- ``standardize``: per-dimension zero mean and unit (population) variance, a constant dimension
  left unscaled, as ``StandardScaler``;
- ``pca``: projection of the centred data on the top eigenvectors of its covariance
  (``torch.linalg.eigh``, deterministic), as ``PCAMatrix`` without whitening;
- ``kmeans``: Lloyd's algorithm from k-means++ seeds, ``restarts`` times, the lowest inertia
  kept. Like faiss it trains on at most ``max_points_per_centroid * k`` points drawn at random
  (faiss's default 256), then assigns every point; unlike faiss it seeds with k-means++ (faiss:
  k random points) and stops early once no assignment changes (the result is the same as
  running on). Its scores differ from faiss's (k-means++ finds other local optima): it is an
  explicit option, never a silent fallback.

Distances are computed ``chunk`` rows at a time, so memory beyond the data stays at
``chunk * k`` floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Backend = Literal["faiss", "torch"]
BACKENDS = ("faiss", "torch")


@dataclass(frozen=True)
class KMeansResult:
    """centroids: (K, D) float32; labels: (N,) int64 cluster of every input point; inertia: the
    summed squared distance of the training points to their centroids."""

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float


def standardize(x: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """(N, D) -> (N, D) float32 with every dimension at zero mean and unit variance (statistics
    accumulated in float64)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].double()
        total += part.sum(0)
        squares += part.square().sum(0)
    mean = total / len(x)
    std = (squares / len(x) - mean.square()).clamp_min(0).sqrt()
    std[std < 1e-12] = 1.0
    return ((x - mean.float()) / std.float()).float()


def pca(x: torch.Tensor, dims: int = 50, chunk: int = 1 << 16) -> torch.Tensor:
    """(N, D) -> (N, min(dims, D)) float32: the centred data on its top principal axes, largest
    variance first (covariance accumulated in float64, ``chunk`` rows at a time)."""
    dims = min(dims, x.shape[1])
    mean = _chunked_mean(x, chunk)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].double() - mean
        cov += part.T @ part
    _, vectors = torch.linalg.eigh(cov / len(x))  # ascending eigenvalues
    axes = vectors[:, -dims:].flip(1).float()
    mean = mean.float()
    return torch.cat([(x[s : s + chunk] - mean) @ axes for s in range(0, len(x), chunk)])


def _chunked_mean(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """(N, D) -> (D,) float64 mean."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        total += x[start : start + chunk].double().sum(0)
    return total / len(x)


def assign(
    x: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 14
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every point: x (N, D), centroids (K, D) -> labels (N,) int64 and
    squared distances (N,) float32."""
    norms = centroids.square().sum(1)
    labels, dists = [], []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        d = part.square().sum(1, keepdim=True) - 2 * part @ centroids.T + norms
        best, idx = d.min(1)
        labels.append(idx)
        dists.append(best.clamp_min(0))
    return torch.cat(labels), torch.cat(dists)


def _kmeanspp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds: (N, D) -> (k, D); each seed drawn with probability proportional to the
    squared distance to the nearest seed so far (uniformly once every point is a seed)."""
    norms = x.square().sum(1)

    def distances(c: torch.Tensor) -> torch.Tensor:
        return (norms - 2 * (x @ c) + c.square().sum()).clamp_min(0).double()

    centroids = [x[int(torch.randint(len(x), (1,), generator=generator))]]
    closest = distances(centroids[0])
    for _ in range(1, k):
        cumulative = torch.cumsum(closest, 0)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if cumulative[-1] > 0:
            pick = int(torch.searchsorted(cumulative, u * cumulative[-1], right=True))
        else:
            pick = int(u * len(x))
        centroids.append(x[min(pick, len(x) - 1)])
        closest = torch.minimum(closest, distances(centroids[-1]))
    return torch.stack(centroids)


def _lloyd(
    x: torch.Tensor, centroids: torch.Tensor, iterations: int, chunk: int
) -> tuple[torch.Tensor, float]:
    """Lloyd iterations from ``centroids`` (K, D); an empty cluster is moved to the point
    farthest from its centroid. Returns the centroids and the final inertia."""
    labels, dists = assign(x, centroids, chunk)
    x64 = x.double()
    for _ in range(iterations):
        sums = torch.zeros_like(centroids, dtype=torch.float64).index_add_(0, labels, x64)
        counts = torch.bincount(labels, minlength=len(centroids))
        centroids = torch.where(
            (counts > 0)[:, None], (sums / counts.clamp_min(1)[:, None]).float(), centroids
        )
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(dists.argmax())
            centroids[empty] = x[far]
            dists[far] = 0
        new_labels, dists = assign(x, centroids, chunk)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, float(dists.double().sum())


def kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int = 100,
    restarts: int = 5,
    seed: int = 0,
    max_points_per_centroid: int | None = 256,
    backend: Backend = "faiss",
    chunk: int = 1 << 14,
) -> KMeansResult:
    """k-means of x (N, D) float32 into ``k`` clusters, on x's device; deterministic for a
    given seed on the CPU (on CUDA, float64 ``index_add_`` sums may differ in the last bits).

    Trains on at most ``max_points_per_centroid * k`` random points (None: all), keeps the
    restart with the lowest training inertia, then labels all N points. ``backend``: ``faiss``
    (``faiss.Kmeans`` with ``niter=iterations``, ``nredo=restarts``, ``seed``, as the
    references call it; x is moved to the CPU) or ``torch``.
    """
    x = x.float().contiguous()
    if k > len(x):
        raise ValueError(f"{k} clusters for {len(x)} points")
    if backend == "faiss":
        fit = _faiss_kmeans(x.cpu(), k, iterations, restarts, seed, max_points_per_centroid)
        return KMeansResult(fit.centroids.to(x.device), fit.labels.to(x.device), fit.inertia)
    if backend != "torch":
        raise ValueError(f"k-means backend {backend!r}: use one of {', '.join(BACKENDS)}")
    generator = torch.Generator().manual_seed(seed)
    train = x
    if max_points_per_centroid is not None and len(x) > max_points_per_centroid * k:
        picked = torch.randperm(len(x), generator=generator)[: max_points_per_centroid * k]
        train = x[picked.to(x.device)]
    best: tuple[torch.Tensor, float] | None = None
    for _ in range(restarts):
        seeds = _kmeanspp(train, k, generator)
        centroids, inertia = _lloyd(train, seeds, iterations, chunk)
        if best is None or inertia < best[1]:
            best = (centroids, inertia)
    assert best is not None
    labels, _ = assign(x, best[0], chunk)
    return KMeansResult(best[0], labels, best[1])


def _faiss_kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int,
    restarts: int,
    seed: int,
    max_points_per_centroid: int | None,
) -> KMeansResult:
    faiss = import_faiss()
    data = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    limit = max_points_per_centroid if max_points_per_centroid is not None else len(data)
    with faiss_threads(1 if min(len(data), limit * k) < SMALL_FIT else torch.get_num_threads()):
        return _faiss_fit(faiss, data, k, iterations, restarts, seed, limit)


# Below this many training points a fit runs on one OpenMP thread: faster (OpenMP threads spin
# against each other on a busy machine, 75x slower measured on 2 loaded cores) and independent
# of the thread count, which can change faiss's float sums in larger fits.
SMALL_FIT = 1 << 16


@contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """faiss's OpenMP thread count set to ``count`` for the block."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, count))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _faiss_fit(faiss, data: np.ndarray, k: int, iterations: int, restarts: int, seed: int,
               limit: int) -> KMeansResult:  # fmt: skip
    model = faiss.Kmeans(
        data.shape[1],
        k,
        niter=iterations,
        nredo=restarts,
        seed=seed,
        max_points_per_centroid=limit,
        min_points_per_centroid=1,  # only mutes faiss's "too few points" warning on stderr
        verbose=False,
        gpu=False,
        spherical=False,
    )
    model.train(data)
    _, labels = model.index.search(data, 1)
    return KMeansResult(
        torch.from_numpy(model.centroids.copy()),
        torch.from_numpy(labels[:, 0].astype(np.int64)),
        float(model.obj[-1]),
    )


def import_faiss():
    """The faiss module, or a one-line ValueError saying how to get it."""
    try:
        import faiss
    except ImportError:
        raise ValueError(
            "k-means backend faiss: faiss is not installed (pip install faiss-cpu, a dependency "
            "of mosic); or choose --kmeans-backend torch"
        ) from None
    return faiss


def kmeans_settings(
    backend: Backend,
    iterations: int,
    restarts: int,
    seeds: list[int],
    max_points_per_centroid: int | None = 256,
) -> dict:
    """What decides a k-means result, as recorded in every result JSON that clusters."""
    settings = {
        "backend": backend,
        "iterations": iterations,
        "restarts": restarts,
        "seeds": list(seeds),
        "max_points_per_centroid": max_points_per_centroid,
    }
    if backend == "faiss":
        settings |= {
            "faiss_version": import_faiss().__version__,
            "init": "k random points",
            "threads": f"1 below {SMALL_FIT} training points, else torch.get_num_threads() "
            f"({torch.get_num_threads()})",
        }
    else:
        settings |= {"init": "k-means++", "early_stop": "no assignment changes"}
    return settings


def cluster_map(feats: torch.Tensor, k: int = 5, seed: int = 0) -> np.ndarray:
    """One image's patch features (D, h, w) -> (h, w) int64 k-means clusters of its
    standardised patches (at most h * w clusters): the cluster map of the prediction pictures."""
    flat = feats.flatten(1).T.float().cpu()  # (h * w, D)
    fit = kmeans(standardize(flat), min(k, len(flat)), iterations=50, restarts=1, seed=seed)
    return fit.labels.view(feats.shape[1:]).numpy()
