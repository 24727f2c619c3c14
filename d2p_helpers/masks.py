"""Mask selection: which weights to prune given a score (higher score = keep)."""
from __future__ import annotations

import torch


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): N zeros in every M consecutive inputs of a row."""
    if pattern in (None, "", "unstructured"):
        return None
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError:
        raise ValueError(f"pattern must look like N:M (e.g. 2:4), got '{pattern}'") from None
    if not 0 < n < m:
        raise ValueError(f"pattern N:M needs 0 < N < M, got {pattern}")
    return n, m


def lowest_per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where pruned: the floor(sparsity * cols) lowest scores of each row (stable ties)."""
    k = int(score.shape[1] * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        idx = torch.sort(score, dim=1, stable=True)[1][:, :k]
        mask.scatter_(1, idx, True)
    return mask


def lowest_overall(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where pruned: the floor(sparsity * numel) lowest scores of the whole matrix."""
    k = int(score.numel() * sparsity)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        mask[torch.sort(score.flatten(), stable=True)[1][:k]] = True
    return mask.view_as(score)


def lowest_n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where pruned: the n lowest scores in every group of m consecutive columns of a row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"N:M pattern with M={m} needs the input width ({cols}) to be a multiple of M")
    groups = score.reshape(rows, cols // m, m)
    idx = torch.sort(groups, dim=2, stable=True)[1][..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return mask.reshape(rows, cols)


def is_valid_n_of_m(weight: torch.Tensor, n: int, m: int) -> bool:
    """Every group of m consecutive inputs of every row has at least n zeros."""
    rows, cols = weight.shape
    zeros = (weight.reshape(rows, cols // m, m) == 0).sum(dim=2)
    return bool((zeros >= n).all())


def sparsity_of(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()
