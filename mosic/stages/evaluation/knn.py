"""Exact k nearest neighbours by inner product, in bounded memory.

The memory bank itself is the caller's: ``M * D * itemsize`` bytes (10 million patches of
dimension 384 in float16: 7.7 GB; in float32: 15.4 GB), on whatever device it lives. On top of
it, ``knn`` works on one (query chunk, bank chunk) pair at a time and needs about

    query_chunk * bank_chunk * 4              (the float32 score block)
  + bank_chunk * D * 4                        (the bank chunk cast to float32)
  + query_chunk * (D + 4 * k) * 4             (the query chunk and the running top k)

bytes: with the defaults (4096 x 65536, D = 384) about 1.2 GB, whatever the bank size. Scores are
always computed in float32 (exact up to float32 rounding; ties are broken arbitrarily).

With faiss importable and the bank on the CPU, each bank chunk goes through a
``faiss.IndexFlatIP`` instead of a matmul (the same exact search; faiss keeps a float32 copy of
the chunk only, so the bound above holds).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from mosic.stages.evaluation.kmeans import faiss_threads

HAVE_FAISS = importlib.util.find_spec("faiss") is not None


def knn(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    query_chunk: int = 4096,
    bank_chunk: int = 65536,
    use_faiss: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each query with the bank.

    queries: (Q, D), bank: (M, D), any float dtype, on the same device. Returns scores (Q, k)
    float32, descending, and indices (Q, k) int64 into the bank, on the bank's device.
    ``use_faiss``: None picks faiss when it is importable and the bank is on the CPU.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and bank {tuple(bank.shape)}: need (Q, D)"
        )
    if not 0 < k <= len(bank):
        raise ValueError(f"k = {k} with a bank of {len(bank)}")
    if use_faiss is None:
        use_faiss = HAVE_FAISS and bank.device.type == "cpu"
    scores = torch.empty((len(queries), k), dtype=torch.float32, device=bank.device)
    indices = torch.empty((len(queries), k), dtype=torch.int64, device=bank.device)
    for qs in range(0, len(queries), query_chunk):
        q = queries[qs : qs + query_chunk].to(bank.device, torch.float32)
        best_s = torch.full((len(q), 0), -torch.inf, device=bank.device)
        best_i = torch.empty((len(q), 0), dtype=torch.int64, device=bank.device)
        for bs in range(0, len(bank), bank_chunk):
            b = bank[bs : bs + bank_chunk]
            kk = min(k, len(b))
            s, i = _chunk_faiss(q, b, kk) if use_faiss else _chunk_torch(q, b, kk)
            best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + kk), dim=1)
            best_i = torch.cat([best_i, i + bs], 1).gather(1, order)
        scores[qs : qs + len(q)] = best_s
        indices[qs : qs + len(q)] = best_i
    return scores, indices


def _chunk_torch(q: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of q (Q, D) float32 against b (N, D): scores (Q, k), indices (Q, k) into b."""
    return (q @ b.to(torch.float32).T).topk(k, dim=1)


def _chunk_faiss(q: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``_chunk_torch`` through ``faiss.IndexFlatIP`` (CPU tensors)."""
    import faiss

    index = faiss.IndexFlatIP(b.shape[1])
    index.add(np.ascontiguousarray(b.to(torch.float32).numpy()))
    with faiss_threads(torch.get_num_threads()):  # as many as torch: no spinning over each other
        s, i = index.search(np.ascontiguousarray(q.numpy()), k)
    return torch.from_numpy(s), torch.from_numpy(i.astype(np.int64))
